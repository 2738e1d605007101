"""WorkerService in-process: readiness and metrics endpoints, stop without signals."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flotilla.settings import WorkerSettings
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from tests.fleet.fakes import FakeRunner, envelope
from worker.service import Runtime, WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_probes_and_metrics_follow_the_lifecycle(amqp_url: str, topology: Topology) -> None:
    settings = WorkerSettings(
        amqp_url=amqp_url, queue_prefix=topology.prefix, concurrency=2, metrics_port=0
    )
    closed: list[bool] = []
    runtime = Runtime(FakeRunner(), closers=[lambda: closed.append(True)])
    service = WorkerService(
        settings, runtime_factory=lambda s, loop, m: runtime, topology=topology
    )
    run = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), 20)
    assert service.probes is not None
    base = f"http://127.0.0.1:{service.probes.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        async with AmqpTransport(amqp_url, topology) as t:
            assert (await t.call(envelope("echo"), timeout=10)).ok
            assert (await t.call(envelope("fail"), timeout=10)).outcome == "function_error"
        metrics = (await http.get("/metrics")).text
        assert 'flotilla_invocations_total{function="echo",outcome="ok"} 1.0' in metrics
        assert 'function="fail",outcome="function_error"} 1.0' in metrics
        assert 'flotilla_queue_wait_seconds_count{function="echo"} 1.0' in metrics
        assert (await http.get("/nope")).status_code == 404
        service.stop()
        assert await asyncio.wait_for(run, 20) == 0
    assert closed == [True]  # the runtime (host clients, sandbox) was closed after the drain


async def test_stop_before_any_work_exits_cleanly(amqp_url: str, topology: Topology) -> None:
    settings = WorkerSettings(amqp_url=amqp_url, queue_prefix=topology.prefix, metrics_port=0)
    service = WorkerService(
        settings, runtime_factory=lambda s, loop, m: Runtime(FakeRunner()), topology=topology
    )
    run = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), 20)
    assert service.is_ready()
    service.stop()
    assert not service.is_ready()
    assert await asyncio.wait_for(run, 20) == 0
