"""Function secrets over HTTP (deploy scope); a value goes in and never comes back out.

- `PUT /v1/functions/{name}/secrets/{secret}`: the raw body is the value (UTF-8 text, 1 byte
  to 64 KiB, any content type); `201` when created, `200` when replaced, either way with the
  secret's name and update time only;
- `GET /v1/functions/{name}/secrets`: the function's secrets' names and update times;
- `DELETE /v1/functions/{name}/secrets/{secret}`: `204`; `404 secret-not-found` when absent.

The function need not be deployed: secrets set before the first deploy are there for its first
invocation, and deleting a function leaves its secrets (they are the operator's, not the
version's). A dispatcher without FLOTILLA_SECRETS_KEY answers every route with `501
secrets-not-configured`. The store is `request.app.state.secrets` (`flotilla.secrets`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, NAME_PARAM, require
from dispatcher.auth import DEPLOY
from flotilla.errors import (
    BodyTooLarge,
    InvalidRequest,
    SecretNotFound,
    SecretsNotConfigured,
    TooManySecrets,
    Unavailable,
)
from flotilla.secrets import MAX_VALUE_BYTES, SECRET_NAME_PATTERN, SecretStore, decode_value

router = APIRouter()
SECRET_PARAM = Path(description="Secret name", pattern=SECRET_NAME_PATTERN)
VALUE_BODY: dict[str, Any] = {
    "required": True,
    "description": f"The value: UTF-8 text, 1 to {MAX_VALUE_BYTES} bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
COMMON_PROBLEMS = (InvalidRequest, SecretsNotConfigured, Unavailable, *AUTH_PROBLEMS)


class SecretEntry(BaseModel):
    """A secret as the API shows it: never its value."""

    name: str = Field(description="The secret's name")
    updated_at: float = Field(description="When it was last set (Unix seconds)")


class SecretSet(SecretEntry):
    """The answer to a PUT."""

    function: str = Field(description="The function the secret belongs to")
    created: bool = Field(description="True when the secret did not exist before")


class SecretList(BaseModel):
    """A function's secrets, sorted by name."""

    function: str
    secrets: list[SecretEntry]


def _store(request: Request) -> SecretStore:
    store: SecretStore | None = getattr(request.app.state, "secrets", None)
    if store is None:
        raise SecretsNotConfigured(
            "this dispatcher has no FLOTILLA_SECRETS_KEY, so it cannot store secrets: set it "
            "on every dispatcher and worker (see docs/security.md)"
        )
    return store


async def _read_value(request: Request) -> str:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_VALUE_BYTES:
        raise BodyTooLarge(f"secret values are limited to {MAX_VALUE_BYTES} bytes of UTF-8")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_VALUE_BYTES:
            raise BodyTooLarge(f"secret values are limited to {MAX_VALUE_BYTES} bytes of UTF-8")
        chunks.append(chunk)
    return decode_value(b"".join(chunks))


@router.put(
    "/v1/functions/{name}/secrets/{secret}",
    status_code=201,
    summary="Set a secret of a function (the value is never shown again)",
    operation_id="set_secret",
    description=(
        "The raw body is the value (UTF-8, any content type). Answers with the secret's name "
        "and update time, never its value. The function need not be deployed yet."
    ),
    responses={
        201: {"model": SecretSet, "description": "Created"},
        200: {"model": SecretSet, "description": "Replaced"},
        **openapi.problem_responses(BodyTooLarge, TooManySecrets, *COMMON_PROBLEMS),
    },
    openapi_extra={"requestBody": VALUE_BODY},
    dependencies=[require(DEPLOY)],
)
async def set_secret(
    request: Request, name: str = NAME_PARAM, secret: str = SECRET_PARAM
) -> JSONResponse:
    """Seal the body under the current key and store it as the function's secret."""
    store = _store(request)
    value = await _read_value(request)
    info, created = await store.put(name, secret, value)
    body = SecretSet(function=name, created=created, **info.to_dict())
    return JSONResponse(body.model_dump(), status_code=201 if created else 200)


@router.get(
    "/v1/functions/{name}/secrets",
    summary="A function's secrets: names and update times, never values",
    operation_id="list_secrets",
    responses=openapi.problem_responses(*COMMON_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def list_secrets(request: Request, name: str = NAME_PARAM) -> SecretList:
    """Every secret of the function (an empty list when it has none)."""
    infos = await _store(request).list(name)
    return SecretList(function=name, secrets=[SecretEntry(**i.to_dict()) for i in infos])


@router.delete(
    "/v1/functions/{name}/secrets/{secret}",
    status_code=204,
    summary="Delete a secret of a function",
    operation_id="delete_secret",
    responses=openapi.problem_responses(SecretNotFound, *COMMON_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def delete_secret(
    request: Request, name: str = NAME_PARAM, secret: str = SECRET_PARAM
) -> Response:
    """Forget the secret: the function's next `secrets.get` of it answers none."""
    if not await _store(request).delete(name, secret):
        raise SecretNotFound(f"function {name!r} has no secret {secret!r}")
    return Response(status_code=204)
