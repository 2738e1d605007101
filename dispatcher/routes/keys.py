"""API keys: `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}` (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, Api, ApiDep, require
from dispatcher.auth import ADMIN, Authenticator
from dispatcher.problems import Problem
from flotilla.config import NAME_PATTERN
from flotilla.errors import Forbidden, InvalidRequest, KeyNotFound
from flotilla.ratelimit import Limit

router = APIRouter()


class KeyRequest(BaseModel):
    """The body of POST /v1/keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="What the key is for")
    scopes: list[Literal["deploy", "invoke", "admin", "subscribe", "dead-letters"]] = Field(
        min_length=1, max_length=4
    )
    functions: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=1000,
        description="Functions the invoke scope covers (empty: all)",
    )
    rate: float = Field(100.0, ge=0, le=1_000_000,
                        description="Requests per second on average (0: unlimited)")
    burst: int = Field(200, ge=1, le=1_000_000, description="Requests allowed at once")


def _authenticator(api: Api) -> Authenticator:
    if api.auth is None:
        raise Forbidden("API keys are switched off on this dispatcher (dev or insecure mode)")
    return api.auth


@router.post(
    "/v1/keys",
    status_code=201,
    summary="Create an API key (shown once, in this response)",
    operation_id="create_key",
    responses={
        400: {"model": Problem, "description": "The body is not JSON (`about:blank`)"},
        **openapi.problem_responses(InvalidRequest, *AUTH_PROBLEMS),
    },
    dependencies=[require(ADMIN)],
)
async def create_key(body: KeyRequest, api: Api = ApiDep) -> JSONResponse:
    """A new key; only its SHA-256 is stored, so `key` cannot be shown again."""
    auth = _authenticator(api)
    limit = Limit(body.rate, body.burst) if body.rate > 0 else None
    record, key = await auth.keys.create(
        body.name, body.scopes, functions=body.functions, limit=limit
    )
    return JSONResponse({"key": key, **record.to_dict()}, status_code=201)


@router.get(
    "/v1/keys",
    summary="List API keys (never the keys themselves)",
    operation_id="list_keys",
    responses=openapi.problem_responses(*AUTH_PROBLEMS),
    dependencies=[require(ADMIN)],
)
async def list_keys(api: Api = ApiDep) -> dict[str, Any]:
    """Every key's id, name, scopes, functions and limit."""
    return {"keys": [k.to_dict() for k in await _authenticator(api).keys.list()]}


@router.delete(
    "/v1/keys/{key_id}",
    status_code=204,
    summary="Revoke an API key (at once, on every replica)",
    operation_id="revoke_key",
    responses=openapi.problem_responses(KeyNotFound, *AUTH_PROBLEMS),
    dependencies=[require(ADMIN)],
)
async def revoke_key(
    key_id: str = Path(pattern=r"^[0-9a-f]{12}$"), api: Api = ApiDep
) -> Response:
    """Forget the key: requests with it get 401 from now on."""
    if not await _authenticator(api).keys.revoke(key_id):
        raise KeyNotFound(f"no API key {key_id!r}")
    return Response(status_code=204)
