"""/metrics, /healthz and /readyz of a real worker process and a real dispatcher process,
scraped after real invocations: the counters and histograms moved, with the right labels."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.envelope import REPLY_JOB, Envelope, now_ms
from flotilla.topology import Topology
from loadtest.fleet import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

INVOKE_ROUTE = "/v1/functions/{name}/invoke"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    """One sample's value (0 when absent: a counter that never moved has no child)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(url)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(resp.text)


async def test_probes_answer_on_both_processes(fleet: Fleet) -> None:
    worker = f"http://127.0.0.1:{fleet.worker_ports[0]}"
    async with httpx.AsyncClient(timeout=10) as client:
        for base in (worker, fleet.base_url):
            assert (await client.get(f"{base}/healthz")).status_code == 200
            assert (await client.get(f"{base}/readyz")).status_code == 200


async def test_invocations_move_worker_and_dispatcher_metrics(fleet: Fleet) -> None:
    worker_url = f"http://127.0.0.1:{fleet.worker_ports[0]}/metrics"
    before_w = await scrape(worker_url)
    before_d = await scrape(f"{fleet.base_url}/metrics")
    cache_call = json.dumps({"op": "cache.get", "key": f"ops-{uuid.uuid4().hex}"})
    async with httpx.AsyncClient(base_url=fleet.base_url, timeout=30) as client:
        for _ in range(3):
            resp = await client.post("/v1/functions/probe/invoke", content=cache_call)
            assert resp.status_code == 200, resp.text
        failed = await client.post("/v1/functions/probe/invoke",
                                   content=json.dumps({"op": "err", "message": "no"}))
        assert failed.status_code == 502
        missing = await client.post("/v1/functions/nope/invoke", content=b"x")
        assert missing.status_code == 404
    w = await scrape(worker_url)
    d = await scrape(f"{fleet.base_url}/metrics")

    def moved(after: dict, before: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
        return value(after, name, **labels) - value(before, name, **labels)

    # Worker: invocations by function and outcome, phase histograms, host calls.
    assert moved(w, before_w, "flotilla_invocations_total", function="probe", outcome="ok") == 3
    assert moved(w, before_w, "flotilla_invocations_total", function="probe",
                 outcome="function_error") == 1
    for histogram in ("flotilla_queue_wait_seconds", "flotilla_instantiate_seconds",
                      "flotilla_execution_seconds"):
        assert moved(w, before_w, f"{histogram}_count", function="probe") == 4, histogram
    assert moved(w, before_w, "flotilla_invocation_duration_seconds_count", function="probe") == 4
    assert moved(w, before_w, "flotilla_host_calls_total", interface="cache", operation="get",
                 outcome="ok") == 3
    assert moved(w, before_w, "flotilla_host_call_duration_seconds_count", interface="cache",
                 operation="get") == 3
    assert value(w, "flotilla_invocations_in_flight") == 0
    # The worker fetched (and compiled or verified) the probe's artifact at least once.
    assert sum(v for (name, _), v in w.items() if name == "flotilla_artifact_cache_total") >= 1
    # No invocation id ever becomes a label.
    assert all("invocation_id" not in dict(labels) for _, labels in w)

    # Dispatcher: requests by route template and status, reply latency, publishes.
    assert moved(d, before_d, "flotilla_http_requests_total", route=INVOKE_ROUTE,
                 status="200") == 3
    assert moved(d, before_d, "flotilla_http_requests_total", route=INVOKE_ROUTE,
                 status="502") == 1
    assert moved(d, before_d, "flotilla_http_requests_total", route=INVOKE_ROUTE,
                 status="404") == 1
    assert moved(d, before_d, "flotilla_reply_latency_seconds_count") == 4
    assert moved(d, before_d, "flotilla_publishes_total", result="confirmed") == 4
    assert value(d, "flotilla_callers_in_flight") == 0
    assert value(d, "flotilla_stray_replies_total") == 0
    assert not any(route.startswith("/v1/functions/nope") for (_, labels) in d
                   for key, route in labels if key == "route")


async def test_malformed_and_expired_deliveries_are_counted(fleet: Fleet) -> None:
    worker_url = f"http://127.0.0.1:{fleet.worker_ports[0]}/metrics"
    before = await scrape(worker_url)
    topology = Topology(fleet.prefix)
    job_id = uuid.uuid4().hex
    expired = Envelope(
        invocation_id=job_id, correlation_id=job_id, function="probe", digest="sha256:0",
        headers=(), body=b"", deadline_ms=now_ms() - 1_000, reply_mode=REPLY_JOB,
    )
    connection = await aio_pika.connect(fleet.amqp_url)
    async with connection:
        channel = await connection.channel()
        for body in (b"not an envelope", expired.encode()):
            await channel.default_exchange.publish(aio_pika.Message(body),
                                                   routing_key=topology.sync)
    # Poll the worker's own counters: they are the event (each scrape is one GET).
    malformed = ("flotilla_dead_lettered_total", frozenset({("reason", "malformed")}))
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        after = await scrape(worker_url)
        if (after.get(malformed, 0) > before.get(malformed, 0)
                and value(after, "flotilla_expired_total") > value(before, "flotilla_expired_total")):
            break
        assert asyncio.get_running_loop().time() < deadline, "worker never counted both"
        await asyncio.sleep(0.1)
    assert after.get(malformed, 0) - before.get(malformed, 0) == 1
    assert value(after, "flotilla_expired_total") - value(before, "flotilla_expired_total") == 1
    assert value(after, "flotilla_invocations_total", function="probe", outcome="expired") - value(
        before, "flotilla_invocations_total", function="probe", outcome="expired") == 1
