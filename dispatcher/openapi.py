"""What the OpenAPI document says beyond what FastAPI infers: request bodies read by hand,
problem responses, links between operations, and problem+json media types.

Kept accurate for schema-based fuzzing: every error a route can answer is declared with
its problem type, and the deploy form's config part carries the schema pydantic generates
from `FunctionConfig` (no hand copy to drift from the server's checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from dispatcher.problems import PROBLEM_MEDIA_TYPE, Problem
from flotilla.config import FunctionConfig
from flotilla.errors import TYPE_PREFIX, ApiError, FunctionRateLimited


def config_schema() -> dict[str, Any]:
    """The deploy form's `config` part: `FunctionConfig`'s own JSON schema, with `name`
    optional (the path names the function; a name given in the config must be the same)."""
    schema = FunctionConfig.json_schema()
    required = [f for f in schema.get("required", []) if f != "name"]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


CONFIG_SCHEMA = config_schema()

DEPLOY_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["component"],
                "properties": {
                    # OpenAPI 3.1 spelling of a file part (not format: binary).
                    "component": {"type": "string", "contentMediaType": "application/wasm",
                                  "description": "The component (.wasm)"},
                    "config": CONFIG_SCHEMA,
                },
            },
            "encoding": {"config": {"contentType": "application/json"}},
        }
    },
}

RAW_BODY: dict[str, Any] = {
    "description": "Passed to the function as its request body",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


def problem_responses(*errors: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """`responses` entries for the given problem types (merged per status)."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        entry = out.setdefault(err.status, {"model": Problem, "description": ""})
        sep = "; " if entry["description"] else ""
        entry["description"] += f"{sep}{err.title} (`{TYPE_PREFIX}{err.slug}`)"
        if err.status in (429, 503):
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            }
        if err.status == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
            }
    return out


def function_links() -> dict[str, Any]:
    """Links from a deploy response to the operations on the deployed function."""
    by_name = {"name": "$response.body#/name"}
    return {
        "GetFunction": {"operationId": "get_function", "parameters": by_name},
        "InvokeFunction": {"operationId": "invoke", "parameters": by_name},
        "SubmitJob": {"operationId": "submit_job", "parameters": by_name},
        "DeleteFunction": {"operationId": "delete_function", "parameters": by_name},
    }


JOB_LINKS: dict[str, Any] = {
    "GetJob": {"operationId": "get_job", "parameters": {"job_id": "$response.body#/job_id"}}
}


def problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are served as application/problem+json: say so in the schema."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                # FastAPI files a problem model under the route's response media type
                # (application/json, or e.g. text/event-stream for an event stream).
                if status[:1] in ("4", "5") and content:
                    content.clear()
                    content[PROBLEM_MEDIA_TYPE] = {
                        "schema": {"$ref": "#/components/schemas/Problem"}
                    }
    schemas = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def without_security(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of an app serving without API keys: no security, no 401, and 429 only
    where a function's own rate limit answers it."""
    function_limit = f"{FunctionRateLimited.title} (`{TYPE_PREFIX}{FunctionRateLimited.slug}`)"
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.pop("security", None)
            responses = operation.get("responses", {})
            responses.pop("401", None)
            limited = responses.pop("429", None)
            if limited is not None and function_limit in limited.get("description", ""):
                responses["429"] = {**limited, "description": function_limit}
    schema.get("components", {}).pop("securitySchemes", None)
    return schema


def documented_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The routes as the document shows them: a route serving several operations (the
    invoke routes: one per method, each with its operation id) lists its `documented`
    routes in its place."""
    out: list[BaseRoute] = []
    for route in routes:
        out.extend(getattr(route, "documented", None) or (route,))
    return out


def install(app: FastAPI, *, secured: bool = True) -> None:
    """Make `app` serve the adjusted schema at /openapi.json (built once, on first request).

    `secured`: routes need API keys (else the security requirements are left out).
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = problem_media_types(
                get_openapi(
                    title=app.title, version=app.version, description=app.description,
                    routes=documented_routes(app.routes),
                )
            )
            app.openapi_schema = schema if secured else without_security(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
