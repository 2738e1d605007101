"""A short schema-based fuzz run of the API (in memory: fakeredis, local artifacts, fake worker).

It guards the OpenAPI document's accuracy: every response must match what is documented
(status codes, problem+json media type, schemas, Allow headers). Invocations and jobs target a
deployed function so they reach the transport. Deploys of random bytes (and schedules of
random cron text, jobs to run more than 7 days ahead) are rightly refused with 422, so the
"schema-valid request rejected" check is left out for them.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import fakeredis
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from dispatcher.app import ApiOptions, create_app
from flotilla.artifacts import ArtifactStore, LocalBackend
from flotilla.config import NAME_PATTERN
from flotilla.jobs import JobStore
from flotilla.registry import Deployer, Registry
from flotilla.secrets import Keyring, SecretStore, new_key
from flotilla.topics import MemoryTopics, Subscription
from tests.api.conftest import WASM, FakeTransport, fake_compile


class EndingTopics(MemoryTopics):
    """Subscriptions that end at once, so an event stream is a finite response here."""

    async def subscribe(self, topic: str, **limits: int) -> Subscription:
        """A subscription already lost."""
        sub = await super().subscribe(topic, **limits)
        sub.lose("the fuzz run ends every stream at once")
        return sub

def targeted(operation_id: str) -> bool:
    """Operations whose valid function names are swapped for the deployed `echo`: every
    invoke operation (each method, with and without a sub-path) and submitting a job."""
    return operation_id == "submit_job" or operation_id.startswith("invoke")


def build_app(root: str) -> Any:
    """The API on in-memory collaborators (nothing connects at import)."""
    redis = fakeredis.FakeAsyncRedis()
    registry = Registry(redis, prefix="fuzz")
    return create_app(
        registry=registry,
        deployer=Deployer(registry, ArtifactStore(LocalBackend(root), "k"),
                          compile=fake_compile, engine_fingerprint="eng"),
        jobs=JobStore(redis, prefix="fuzz", ttl_s=60),
        transport=FakeTransport(),
        options=ApiOptions(callback_hosts=("hooks.example.com",)),
        secrets=SecretStore(redis, Keyring.parse(new_key()), prefix="fuzz"),
        topics=EndingTopics(),
    )


STORE = tempfile.TemporaryDirectory(prefix="flotilla-fuzz-")
APP = build_app(STORE.name)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def deployed_echo() -> Iterator[None]:
    """Deploy `echo` once, so invocations and jobs get past the registry."""

    async def deploy() -> int:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            resp = await client.put("/v1/functions/echo", files={"component": ("f.wasm", WASM)})
            return resp.status_code

    assert asyncio.run(deploy()) == 201
    yield
    STORE.cleanup()


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(case: schemathesis.Case) -> None:
    name = (case.path_parameters or {}).get("name")
    swap = targeted(case.operation.definition.raw.get("operationId", ""))
    if swap and isinstance(name, str) and re.match(NAME_PATTERN, name):
        # Only valid names are swapped: a negative case must stay invalid.
        case.path_parameters = {**(case.path_parameters or {}), "name": "echo"}
    excluded = [positive_data_acceptance] if case.operation.method.upper() == "PUT" else []
    if (case.query or {}).get("run_at"):
        # A run_at beyond 7 days, or beside delay_ms, is schema-valid and rightly refused.
        excluded = [positive_data_acceptance]
    case.call_and_validate(excluded_checks=excluded)
