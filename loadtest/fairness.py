"""`python -m loadtest fairness`: does one function's backlog delay another function's work?

On a real fleet (a dispatcher, one `flotilla worker` of `processes` x `concurrency`, the
probe guest deployed as two functions, `backlog` and `other`), in one run:

1. idle: `calls` synchronous HTTP calls of `other`, one at a time: its p50 with nothing
   else running (the baseline);
2. `backlog` jobs of function `backlog`, each busy for `job_ms` in the guest (the probe's
   `sleep` op), submitted through the Python client as fast as the broker confirms them;
3. right after the last one: a job of `other` (the probe's `clocks` op: the guest reads the
   wall clock when it starts, so its start delay is measured from inside the guest), then
   the same `calls` synchronous calls of `other` while the backlog runs;
4. once those calls and that job finished: how many of the backlog's jobs are still
   queued in its job lane (read from the broker) and how many finished;
5. two functions deployed while the fleet runs: the first sync call of one (`fresh_call_ms`:
   what a function's first use costs a worker, its artifact loaded) and the first job of the
   other (`fresh_job_start_ms`: that plus the time a worker takes to consume a new
   function's job lane, worker/lanes.py).

Printed as JSON: `other_p50_idle_ms`, `other_p50_backlog_ms`, their `ratio` (issue 12 asks
at most 3), `other_job_start_ms` (at most 2,000), `backlog_queued_after` (most of the
backlog still queued: the order, not a timing, is what tests/lanes/test_fairness.py
asserts), `fresh_call_ms`, `fresh_job_start_ms`, and the machine's load.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from loadtest.fleet import Fleet

BACKLOG = "backlog"
OTHER = "other"
FRESH = "fresh"
FRESH_CALL = "fresh-call"


@dataclass(frozen=True)
class FairnessPlan:
    """What one fairness run does (module docstring)."""

    backlog: int = 2_000
    job_ms: int = 20
    calls: int = 50
    submit_concurrency: int = 64


@dataclass(frozen=True)
class FairnessResult:
    """The figures of one run (module docstring); times in milliseconds."""

    backlog: int
    job_ms: int
    calls: int
    other_p50_idle_ms: float
    other_p50_backlog_ms: float
    ratio: float
    other_job_start_ms: float
    backlog_queued_before: int  # ready in the backlog's lane right after its last submit
    backlog_queued_after: int  # ... once `other`'s calls and job finished
    backlog_finished_after: int  # backlog jobs finished by then (the guest's count)
    fresh_call_ms: float
    fresh_job_start_ms: float
    submit_s: float  # how long submitting the backlog took

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures."""
        return asdict(self)


async def queued(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue` (not those delivered and unacked), from the broker."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


async def _call_latencies(http: httpx.AsyncClient, n: int) -> list[float]:
    """`n` synchronous calls of OTHER, one at a time: each one's latency (ms)."""
    out = []
    for i in range(n):
        started = time.perf_counter()
        resp = await http.post(f"/v1/functions/{OTHER}/invoke", content=f"ping {i}".encode())
        out.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"call of {OTHER} failed: {resp.status_code} {resp.text[:200]}")
    return out


async def _job_start_ms(http: httpx.AsyncClient, function: str) -> float:
    """Submit a `clocks` job of `function`; ms from just before the submit to the moment the
    guest read the wall clock (the same machine's clock)."""
    submitted = time.time()
    resp = await http.post(f"/v1/functions/{function}/jobs", json={"op": "clocks"})
    if resp.status_code != 202:
        raise RuntimeError(f"job of {function} refused: {resp.status_code} {resp.text[:200]}")
    job_id = resp.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = (await http.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
        if doc["status"] == "succeeded":
            import base64

            result = json.loads(base64.b64decode(doc["response"]["body"]))
            return (float(result["result"]["time"]) - submitted) * 1000
        if doc["status"] not in ("queued", "running", "scheduled", "retrying"):
            raise RuntimeError(f"job of {function} ended {doc['status']}: {doc}")
    raise RuntimeError(f"job of {function} did not finish within 60 s")


async def _submit_backlog(fleet: Fleet, plan: FairnessPlan) -> float:
    """Submit the backlog's jobs through the Python client; seconds it took."""
    from flotilla.client import Client

    body = json.dumps({"op": "sleep", "ms": plan.job_ms}).encode()
    started = time.perf_counter()
    async with Client(fleet.amqp_url, queue_prefix=fleet.prefix,
                      redis_url=fleet.redis_url) as client:
        pending = plan.backlog
        while pending:
            batch = min(pending, plan.submit_concurrency)
            await asyncio.gather(*(client.submit(BACKLOG, body) for _ in range(batch)))
            pending -= batch
    return time.perf_counter() - started


async def _finished_jobs(fleet: Fleet, function: str) -> int:
    """Jobs of `function` the workers finished, from their metrics (all processes summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    async with httpx.AsyncClient(timeout=10) as client:
        for port in fleet.worker_ports:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == "flotilla_invocations_total" and s.labels.get(
                            "function") == function:
                        total += s.value
    return int(total)


async def measure(fleet: Fleet, probe: bytes, plan: FairnessPlan) -> FairnessResult:
    """One fairness run on a started `fleet` (the probe guest's bytes deployed by it)."""
    from flotilla.topology import Topology

    await fleet.deploy({BACKLOG: probe, OTHER: probe})
    lane = Topology(fleet.prefix).job_queue(BACKLOG)
    async with httpx.AsyncClient(base_url=fleet.base_url, timeout=60) as http:
        # Warm both functions' artifacts in every worker process.
        await _call_latencies(http, 10)
        for _ in range(4):
            resp = await http.post(f"/v1/functions/{BACKLOG}/invoke", content=b"warm")
            assert resp.status_code == 200, resp.text
        idle = await _call_latencies(http, plan.calls)
        finished_before = await _finished_jobs(fleet, BACKLOG)
        submit_s = await _submit_backlog(fleet, plan)
        queued_before = await queued(fleet.amqp_url, lane)
        job = asyncio.create_task(_job_start_ms(http, OTHER))
        busy = await _call_latencies(http, plan.calls)
        job_ms = await job
        queued_after = await queued(fleet.amqp_url, lane)
        finished_after = await _finished_jobs(fleet, BACKLOG) - finished_before
        await fleet.deploy({FRESH_CALL: probe, FRESH: probe})
        started = time.perf_counter()
        resp = await http.post(f"/v1/functions/{FRESH_CALL}/invoke", content=b"first")
        fresh_call_ms = (time.perf_counter() - started) * 1000
        assert resp.status_code == 200, resp.text
        fresh_ms = await _job_start_ms(http, FRESH)
    p50_idle, p50_busy = statistics.median(idle), statistics.median(busy)
    return FairnessResult(
        backlog=plan.backlog, job_ms=plan.job_ms, calls=plan.calls,
        other_p50_idle_ms=round(p50_idle, 2), other_p50_backlog_ms=round(p50_busy, 2),
        ratio=round(p50_busy / p50_idle, 2), other_job_start_ms=round(job_ms, 1),
        backlog_queued_before=queued_before, backlog_queued_after=queued_after,
        backlog_finished_after=finished_after, fresh_call_ms=round(fresh_call_ms, 1),
        fresh_job_start_ms=round(fresh_ms, 1),
        submit_s=round(submit_s, 2),
    )


async def run(plan: FairnessPlan, *, processes: int = 2, concurrency: int = 2,
              amqp_url: str | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """Start a fleet, measure, stop it; the JSON document (figures and machine)."""
    from flotilla.build import build_guest
    from loadtest import report
    from loadtest.fleet import GUESTS

    probe = build_guest(GUESTS["probe"]).read_bytes()
    kwargs: dict[str, Any] = {}
    if amqp_url:
        kwargs["amqp_url"] = amqp_url
    if redis_url:
        kwargs["redis_url"] = redis_url
    load_before = report.machine()["loadavg"]
    async with Fleet(workers=1, processes=processes, concurrency=concurrency, **kwargs) as fleet:
        result = await measure(fleet, probe, plan)
    return {
        **result.to_dict(),
        "worker": f"{processes} processes x {concurrency}",
        "loadavg_before": load_before,
        "machine": report.machine(),
    }
