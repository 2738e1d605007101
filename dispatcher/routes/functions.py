"""Functions: `PUT /v1/functions/{name}` (deploy), `GET /v1/functions`,
`GET /v1/functions/{name}` and `DELETE /v1/functions/{name}` (deploy scope)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, NAME_PARAM, Api, ApiDep, require
from dispatcher.auth import DEPLOY
from flotilla.config import FunctionConfig
from flotilla.errors import (
    BodyTooLarge,
    ComponentError,
    FunctionNotFound,
    InvalidComponent,
    InvalidConfig,
    InvalidRequest,
    Unavailable,
)

MAX_COMPONENT_BYTES = 64 * 1024 * 1024
MAX_UPLOAD_BYTES = MAX_COMPONENT_BYTES + 1024 * 1024  # the component plus its config

router = APIRouter()


@router.put(
    "/v1/functions/{name}",
    status_code=201,
    operation_id="deploy",
    summary="Deploy a function (a new immutable version)",
    description=(
        "Multipart form: `component` is the .wasm file, `config` an optional JSON object of "
        "function config fields (the name comes from the path). Identical bytes and "
        "config return the existing version with 200."
    ),
    responses={
        201: {"description": "A new version", "links": openapi.function_links()},
        200: {"description": "Identical bytes and config: the existing version",
              "content": {"application/json": {"schema": {"type": "object"}}},
              "links": openapi.function_links()},
        **openapi.problem_responses(
            BodyTooLarge, InvalidConfig, InvalidComponent, InvalidRequest, Unavailable,
            *AUTH_PROBLEMS,
        ),
    },
    openapi_extra={"requestBody": openapi.DEPLOY_BODY},
    dependencies=[require(DEPLOY)],
)
async def deploy(request: Request, name: str = NAME_PARAM, api: Api = ApiDep) -> JSONResponse:
    """Validate, precompile and record a new version (or find the identical one)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise BodyTooLarge(f"deploy uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    config, wasm = await _read_deploy_form(request, name)
    try:
        version, created = await api.deployer.deploy(config, wasm)
    except ComponentError as exc:
        raise InvalidComponent(str(exc)) from None
    api.forget(name)
    body = {**version.to_dict(), "created": created}
    return JSONResponse(body, status_code=201 if created else 200)


@router.get(
    "/v1/functions",
    summary="List deployed functions",
    operation_id="list_functions",
    responses=openapi.problem_responses(*AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def list_functions(api: Api = ApiDep) -> dict[str, Any]:
    """Every function with its latest version."""
    return {
        "functions": [
            {
                "name": s.name,
                "latest": s.latest.digest,
                "version_count": s.version_count,
                "config": s.latest.config.to_dict(),
                "updated_at": s.latest.created_at,
            }
            for s in await api.registry.list_functions()
        ]
    }


@router.get(
    "/v1/functions/{name}",
    summary="A function's config and versions",
    operation_id="get_function",
    responses=openapi.problem_responses(InvalidRequest, FunctionNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def get_function(name: str = NAME_PARAM, api: Api = ApiDep) -> dict[str, Any]:
    """The latest config and every version of a function."""
    latest = await api.invoker.resolve(name)
    versions = await api.registry.list_versions(name)
    return {
        "name": name,
        "latest": latest.digest,
        "config": latest.config.to_dict(),
        "versions": [v.to_dict() for v in versions],
    }


@router.delete(
    "/v1/functions/{name}",
    status_code=204,
    summary="Delete a function and its version history",
    operation_id="delete_function",
    responses=openapi.problem_responses(InvalidRequest, FunctionNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def delete_function(name: str = NAME_PARAM, api: Api = ApiDep) -> Response:
    """Forget a function (its code stays in the content-addressed store)."""
    api.forget(name)
    if not await api.registry.delete(name):
        raise FunctionNotFound(f"function {name!r} is not deployed", function=name)
    return Response(status_code=204)


async def _read_deploy_form(request: Request, name: str) -> tuple[FunctionConfig, bytes]:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        # Starlette would parse anything else as an empty form: say what is wrong instead.
        raise InvalidRequest(
            f"expected a multipart/form-data body (parts `component`, `config`), got "
            f"{content_type[:100] or 'no content type'!r}"
        )
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception as exc:  # noqa: BLE001 - malformed multipart bodies raise several types
        raise InvalidRequest(f"expected a multipart/form-data body: {exc}") from None
    try:
        component = form.get("component")
        config_text = form.get("config") or "{}"
        if component is None:
            raise InvalidRequest("the form field `component` (the .wasm file) is missing")
        if not isinstance(config_text, str):
            config_text = (await config_text.read()).decode("utf-8", "replace")
        config = _parse_config(config_text, name)
        if isinstance(component, str):  # a part sent without a filename
            wasm = component.encode("utf-8", "surrogateescape")
        else:
            wasm = await component.read(MAX_COMPONENT_BYTES + 1)
    finally:
        await form.close()
    if len(wasm) > MAX_COMPONENT_BYTES:
        raise BodyTooLarge(f"components are limited to {MAX_COMPONENT_BYTES} bytes")
    return config, wasm


def _parse_config(text: str, name: str) -> FunctionConfig:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidConfig(f"config is not valid JSON: {exc}", field="config") from None
    except RecursionError:  # a config is flat; thousands of nested brackets are an attack
        raise InvalidConfig("config JSON is nested too deeply", field="config") from None
    if isinstance(data, dict) and data.get("name") == name:
        data = {k: v for k, v in data.items() if k != "name"}
    try:
        return FunctionConfig.from_dict(data, name=name)
    except ValueError as exc:
        raise InvalidConfig(str(exc), field=getattr(exc, "field", "config")) from None
    except TypeError as exc:  # a wrongly typed value deep inside the config
        raise InvalidConfig(str(exc), field="config") from None
