"""The OpenAPI document covers the job-control routes and their problem types (the error
classes feed it), and an app without API keys keeps the function rate limit's 429."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api

pytestmark = pytest.mark.integration

DOCUMENTED = [
    ("/v1/functions/{name}/jobs", "post", "409", "idempotency-conflict"),
    ("/v1/functions/{name}/jobs", "post", "422", "invalid-request"),
    ("/v1/functions/{name}/invoke", "post", "429", "function-rate-limited"),
    ("/v1/jobs/{job_id}", "delete", "409", "job-not-cancellable"),
    ("/v1/jobs/{job_id}", "delete", "404", "job-not-found"),
    ("/v1/dead-letters", "get", "403", "forbidden"),
    ("/v1/dead-letters/{letter_id}", "get", "404", "dead-letter-not-found"),
    ("/v1/dead-letters/{letter_id}/replay", "post", "409", "dead-letter-not-replayable"),
    ("/v1/dead-letters/{letter_id}/replay", "post", "503", "unavailable"),
    ("/v1/dead-letters/{letter_id}", "delete", "404", "dead-letter-not-found"),
    ("/v1/schedules/{name}", "put", "422", "invalid-schedule"),
    ("/v1/schedules/{name}", "put", "404", "function-not-found"),
    ("/v1/schedules/{name}", "get", "404", "schedule-not-found"),
    ("/v1/schedules/{name}", "delete", "404", "schedule-not-found"),
    ("/v1/schedules", "get", "401", "unauthorized"),
]


def secured_schema() -> dict[str, Any]:
    """The OpenAPI document of an app with API keys on (nothing connects to build it)."""
    import fakeredis

    from tests.api.conftest import FakeTransport
    from tests.hardening.conftest import auth_app

    app, _ = auth_app(fakeredis.FakeAsyncRedis(), None, "doc", FakeTransport())
    schema: dict[str, Any] = app.openapi()
    return schema


SECURED = secured_schema()


@pytest.mark.parametrize("path, method, status, slug", DOCUMENTED)
def test_secured_schema_documents(path: str, method: str, status: str, slug: str) -> None:
    responses = SECURED["paths"][path][method]["responses"]
    assert f"urn:flotilla:problem:{slug}" in responses[status]["description"]


async def test_insecure_schema_keeps_only_the_function_rate_limit(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    invoke = schema["paths"]["/v1/functions/{name}/invoke"]["post"]["responses"]
    assert invoke["429"]["description"] == (
        "Function rate limit reached (`urn:flotilla:problem:function-rate-limited`)")
    assert "429" not in schema["paths"]["/v1/jobs/{job_id}"]["delete"]["responses"]
    assert "401" not in invoke
    submit = schema["paths"]["/v1/functions/{name}/jobs"]["post"]
    assert {p["name"] for p in submit["parameters"]} >= {"delay_ms", "run_at", "idempotency-key"}
