"""A function's `rate_limit` on the synchronous path: a fleet-wide token bucket in Redis taken
before publishing; over it, 429 `function-rate-limited` with Retry-After, nothing published.
Jobs are not admitted here (their workers wait for tokens)."""

from __future__ import annotations

import pytest

from flotilla.errors import FunctionRateLimited
from flotilla.invoker import Invoker
from flotilla.jobs import JobStore
from flotilla.registry import Registry
from tests.api.conftest import Api, FakeTransport
from tests.api.test_http_api import assert_problem, deploy

pytestmark = pytest.mark.integration
LIMIT = {"rate_limit": {"per_second": 0.5, "burst": 2}}


async def test_sync_calls_over_the_limit_are_429(api: Api) -> None:
    await deploy(api, "limited", **LIMIT)
    await deploy(api, "free")
    ok = [await api.client.post("/v1/functions/limited/invoke") for _ in range(2)]
    assert [r.status_code for r in ok] == [200, 200]
    over = await api.client.post("/v1/functions/limited/invoke")
    problem = assert_problem(over, 429, "function-rate-limited")
    assert problem["function"] == "limited"
    assert over.headers["Retry-After"] == "2"  # one token per 2 s
    assert len(api.transport.calls) == 2  # the refused call was never published
    # Other functions and jobs of the same function are not held back here.
    assert (await api.client.post("/v1/functions/free/invoke")).status_code == 200
    jobs = [await api.client.post("/v1/functions/limited/jobs") for _ in range(3)]
    assert [r.status_code for r in jobs] == [202, 202, 202]
    metric = api.client._transport.app.state.api.metrics  # type: ignore[attr-defined]
    assert metric.registry.get_sample_value(
        "flotilla_function_rate_limited_total", {"function": "limited"}) == 1


async def test_the_bucket_is_shared_by_every_invoker(api: Api) -> None:
    """Two dispatchers (or a dispatcher and a Python client) draw from one bucket."""
    await deploy(api, "limited", **LIMIT)
    others = [
        Invoker(Registry(api.jobs.redis, prefix=api.bucket), FakeTransport(),
                jobs=JobStore(api.jobs.redis, prefix=api.bucket))
        for _ in range(2)
    ]
    fn = await others[0].resolve("limited")
    await others[0].call(fn, b"")
    await others[1].call(fn, b"")
    with pytest.raises(FunctionRateLimited) as refused:
        await others[0].call(fn, b"")
    assert refused.value.headers["Retry-After"] == "2"
    assert_problem(await api.client.post("/v1/functions/limited/invoke"), 429,
                   "function-rate-limited")
