"""Faults with nothing lost (issue 4, section 4): real dispatcher and worker processes
(loadtest.soak.Fleet) against the real RabbitMQ and Redis, while a test kills, restarts or
cuts one of them.

- full queue / slow consumer: test_full_queue_answers_503_and_memory_stays_bounded
- Redis unavailable: test_redis_outage_keeps_invocations_and_refuses_untrackable_jobs
- workers SIGKILLed in a loop: test_workers_killed_in_a_loop_lose_nothing
- a dispatcher replica killed: test_killed_dispatcher_replica_does_not_hurt_the_others
- RabbitMQ restarted: test_rabbitmq_restart_loses_no_accepted_job (on an extra node of its
  own, loadtest.cluster: the machine's broker is shared by everyone's tests and never stopped)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest

from flotilla.topology import Topology
from loadtest.cluster import Cluster
from loadtest.soak import Fleet, rss_kib
from tests.cluster.nodes import extra_nodes
from tests.fleet.proxy import CuttableProxy
from tests.guests.build import probe_wasm  # noqa: F401 - fixture
from tests.guests.wat import build_wat

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


class OutageProxy(CuttableProxy):
    """A CuttableProxy that can also be down: new connections are refused while it is."""

    down = False

    def fail(self) -> None:
        """From now on, refuse new connections and drop open ones (the service is gone)."""
        self.down = True
        self.cut()

    def recover(self) -> None:
        """Forward again."""
        self.down = False

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        await super()._on_client(reader, writer)


@pytest.fixture
async def fault_fleet(amqp_url: str, redis_url: str, aws_endpoint_url: str) -> AsyncIterator[Fleet]:
    """A Fleet (no process started yet) under a unique prefix, stopped after the test."""
    fleet = Fleet(amqp_url, redis_url, aws_endpoint_url=aws_endpoint_url)
    try:
        yield fleet
    finally:
        await asyncio.to_thread(fleet.stop)


async def deploy(url: str, name: str, wasm: bytes, config: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        r = await client.put(
            f"/v1/functions/{name}",
            files={"component": ("f.wasm", wasm, "application/wasm")},
            data={"config": json.dumps(config)},
        )
    assert r.status_code in (200, 201), r.text


async def wait_jobs(
    client: httpx.AsyncClient, jobs: dict[str, bytes], timeout: float
) -> dict[str, Any]:
    """Each job's last document (status and response), waiting up to `timeout` in all."""
    end = time.monotonic() + timeout
    out: dict[str, Any] = {}
    for job_id in jobs:
        while True:
            wait = max(0.0, min(5.0, end - time.monotonic()))
            r = await client.get(f"/v1/jobs/{job_id}", params={"wait": wait}, timeout=30)
            doc = r.json() if r.status_code == 200 else {"status": f"http {r.status_code}"}
            if doc.get("status") not in ("queued", "running") or time.monotonic() >= end:
                break
        out[job_id] = doc
    return out


def job_body(doc: dict[str, Any]) -> bytes | None:
    """The response body of a finished job document (None when it did not succeed)."""
    if doc.get("status") != "succeeded":
        return None
    return base64.b64decode(doc["response"]["body"])


def assert_all_succeeded(jobs: dict[str, bytes], docs: dict[str, Any], more: str = "") -> None:
    failed = {j: d for j, d in docs.items() if d.get("status") != "succeeded"}
    assert not failed, (
        f"{len(failed)} of {len(jobs)} jobs did not succeed: "
        f"{[(d.get('status'), d.get('error')) for d in list(failed.values())[:3]]} {more}"
    )


async def dead_letters(url: str, at_least: int = 0, timeout: float = 30) -> list[bytes]:
    """The bytes of every dead letter the dispatchers took off the dead-letter queue (they
    consume it and keep each one: GET /v1/dead-letters), waiting for `at_least` of them."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while True:
            page = (await client.get("/v1/dead-letters", params={"limit": 500})).json()
            ids = [d["id"] for d in page["dead_letters"]]
            if len(ids) >= at_least or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # stored by another process: nothing here to await
        bodies = []
        for letter_id in ids:
            shown = (await client.get(f"/v1/dead-letters/{letter_id}")).json()
            raw = shown.get("raw_base64")
            bodies.append(base64.b64decode(raw) if raw else repr(shown).encode())
        return bodies


async def _until_holding(amqp_url: str, queue_name: str, count: int, timeout: float = 10
                         ) -> None:
    """Return once `queue_name` holds `count` messages or more."""
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        while True:
            queue = await channel.declare_queue(queue_name, passive=True)
            held = queue.declaration_result.message_count or 0
            if held >= count:
                return
            assert time.monotonic() < deadline, f"{queue_name} holds {held} of {count}"
            await asyncio.sleep(0.02)  # the broker's counter: nothing to await


async def test_full_queue_answers_503_and_memory_stays_bounded(fault_fleet: Fleet) -> None:
    # Given a dispatcher whose lanes hold 20 envelopes each and no worker consuming,
    limit = 20
    max_length = ("--queue-max-length", str(limit))  # a queue argument: all must agree
    url = await asyncio.to_thread(fault_fleet.start_dispatcher, extra=max_length)
    await deploy(url, "echo", build_wat("echo"), {"timeout_ms": 2_000})
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        # when callers keep submitting, the first `limit` jobs are accepted, then 503,
        accepted: dict[str, bytes] = {}
        statuses: list[int] = []
        for i in range(limit + 10):
            r = await client.post("/v1/functions/echo/jobs", content=f"job {i}".encode())
            statuses.append(r.status_code)
            if r.status_code == 202:
                accepted[r.json()["job_id"]] = f"job {i}".encode()
        # (a quorum queue checks its length before appending: one publish may overshoot)
        assert statuses[:limit] == [202] * limit and statuses[-9:] == [503] * 9, statuses
        assert statuses.count(202) <= limit + 1, statuses
        # Sync calls travel in a lane of their own: the full job lane refuses none of them;
        # nobody consuming, they wait and time out (504) until the sync lane is full (503).
        # A quorum queue (RabbitMQ 3.10) accepts the publish that takes it past its limit and
        # only then tells the publishing channel to refuse more, so publishes already on
        # their way are accepted too (checked: 6 pipelined into a lane of 3, all acked). The
        # last 4 are sent once the lane holds `limit + 1`.
        def call() -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(client.post("/v1/functions/echo/invoke", content=b"sync"))

        first = [call() for _ in range(limit + 1)]
        await _until_holding(fault_fleet.amqp_url, Topology(fault_fleet.prefix).sync, limit + 1)
        sync = await asyncio.gather(*first, *(call() for _ in range(4)))
        codes = [r.status_code for r in sync]
        assert set(codes) == {503, 504} and codes.count(504) >= limit, codes
        refused = next(r for r in sync if r.status_code == 503)
        assert refused.headers["content-type"].startswith("application/problem")
        # and a flood of refused requests does not grow the dispatcher (nothing is buffered),
        pid = fault_fleet.procs["dispatcher"].pid
        body = b"x" * 32_768
        for _ in range(2):  # one round to warm up allocators, one measured
            before = rss_kib(pid)
            results = await asyncio.gather(
                *(client.post("/v1/functions/echo/jobs", content=body) for _ in range(300))
            )
            assert {r.status_code for r in results} == {503}
        after = rss_kib(pid)
        print(f"dispatcher RSS KiB before/after 300 refused 32 KiB jobs: {before} / {after}")
        assert after < before * 1.10, (before, after)  # 300 buffered bodies would be ~10 MB
        # then once a (slow) worker starts, every accepted job completes and new ones are taken.
        await asyncio.to_thread(
            fault_fleet.start_worker, "worker", concurrency=1, extra=max_length
        )  # fmt: skip
        docs = await wait_jobs(client, accepted, 60)
        assert_all_succeeded(accepted, docs)
        r = await client.post("/v1/functions/echo/jobs", content=b"again")
        assert r.status_code == 202


async def test_redis_outage_keeps_invocations_and_refuses_untrackable_jobs(
    fault_fleet: Fleet,
    redis_url: str,
    probe_wasm: Path,  # noqa: F811 - fixture
) -> None:
    target = urlsplit(redis_url)
    worker_redis = OutageProxy(target.hostname or "127.0.0.1", target.port or 6379)
    dispatcher_redis = OutageProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await worker_redis.start()
    await dispatcher_redis.start()
    try:
        url = await asyncio.to_thread(
            fault_fleet.start_dispatcher,
            redis_url=f"redis://127.0.0.1:{dispatcher_redis.port}/0",
        )
        await asyncio.to_thread(
            fault_fleet.start_worker, "worker",
            redis_url=f"redis://127.0.0.1:{worker_redis.port}/0",
        )  # fmt: skip
        await deploy(url, "echo", build_wat("echo"), {"timeout_ms": 5_000})
        await deploy(url, "probe", probe_wasm.read_bytes(), {
            "timeout_ms": 5_000, "cache_namespace": fault_fleet.prefix,
        })  # fmt: skip
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def probe(op: dict[str, Any]) -> Any:
                r = await client.post("/v1/functions/probe/invoke", content=json.dumps(op))
                assert r.status_code == 200, r.text
                return r.json()

            assert (await probe({"op": "cache.set", "key": "k", "value": "v"}))["ok"]
            # (a worker reads a function's config from the registry, in Redis, the first time
            # it runs it: the functions are loaded before the outage)
            assert (await client.post("/v1/functions/echo/invoke")).status_code == 200
            # Given the workers' Redis is gone,
            worker_redis.fail()
            # invocations that do not use the cache succeed, cache calls say `unavailable`.
            for _ in range(3):
                r = await client.post("/v1/functions/echo/invoke", content=b"still here")
                assert (r.status_code, r.content) == (200, b"still here"), r.text
                assert (await probe({"op": "clocks"}))["ok"]
                doc = await probe({"op": "cache.get", "key": "k"})
                assert doc["ok"] is False and doc["error"]["case"] == "unavailable", doc
            # Given the dispatcher's Redis is gone too, job submission is refused (it could
            # not be tracked), not accepted.
            dispatcher_redis.fail()
            for _ in range(3):
                r = await client.post("/v1/functions/echo/jobs", content=b"untrackable")
                assert r.status_code == 503, (r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem")
            # Once Redis is back, everything works again without a restart.
            worker_redis.recover()
            dispatcher_redis.recover()
            job = None
            for _ in range(50):
                r = await client.post("/v1/functions/echo/jobs", content=b"tracked")
                if r.status_code == 202:
                    job = r.json()["job_id"]
                    break
                await asyncio.sleep(0.2)  # the client pools reconnect on their next use
            assert job is not None, r.text
            docs = await wait_jobs(client, {job: b"tracked"}, 30)
            assert_all_succeeded({job: b"tracked"}, docs)
            for _ in range(50):
                doc = await probe({"op": "cache.get", "key": "k"})
                if doc["ok"]:
                    break
                await asyncio.sleep(0.2)
            assert doc["ok"] and doc["result"]["text"] == "v", doc
    finally:
        await worker_redis.close()
        await dispatcher_redis.close()


async def test_workers_killed_in_a_loop_lose_nothing(
    fault_fleet: Fleet,
    amqp_url: str,
    probe_wasm: Path,  # noqa: F811 - fixture
) -> None:
    url = await asyncio.to_thread(fault_fleet.start_dispatcher)
    # The default, deep prefetch (16 x concurrency): each SIGKILL returns every unacked
    # delivery with one more delivery counted by RabbitMQ, but poison is caught by counting
    # runs (worker.handler.RunLedger), so the envelopes a killed worker only held are safe.
    shallow: tuple[str, ...] = ()
    await asyncio.to_thread(fault_fleet.start_worker, "steady", concurrency=2, extra=shallow)
    await asyncio.to_thread(fault_fleet.start_worker, "victim", concurrency=2, extra=shallow)
    await deploy(url, "probe", probe_wasm.read_bytes(), {"timeout_ms": 5_000})
    topology = Topology(fault_fleet.prefix)
    # Poison put in the queue on purpose: the only thing the dead-letter queue may hold.
    poison = [b"\x00not an envelope", b"\xc1\xc1\xc1", os.urandom(64)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for body in poison:
            await channel.default_exchange.publish(
                aio_pika.Message(body), routing_key=topology.sync
            )
    jobs: dict[str, bytes] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        stop = asyncio.Event()

        async def submit() -> None:
            i = 0
            while not stop.is_set():
                op = {"op": "sleep", "ms": 40, "n": i}
                r = await client.post("/v1/functions/probe/jobs", content=json.dumps(op))
                assert r.status_code == 202, r.text
                jobs[r.json()["job_id"]] = json.dumps(op).encode()
                i += 1
                await asyncio.sleep(0.02)

        async def chaos() -> int:
            kills = 0
            end = time.monotonic() + 8
            while time.monotonic() < end:
                await asyncio.sleep(1.0)
                await asyncio.to_thread(fault_fleet.kill, "victim", signal.SIGKILL)
                kills += 1
                await asyncio.to_thread(
                    fault_fleet.start_worker, "victim", concurrency=2, extra=shallow
                )  # fmt: skip
            stop.set()
            return kills

        kills, _ = await asyncio.gather(chaos(), submit())
        docs = await wait_jobs(client, jobs, 90)
    assert kills >= 2 and len(jobs) > 30, (kills, len(jobs))
    dead = await dead_letters(url, len(poison))
    assert_all_succeeded(jobs, docs, f"dead letters: {[d[:80] for d in dead]}")
    assert fault_fleet.procs["steady"].poll() is None
    assert sorted(dead) == sorted(poison)


async def test_killed_dispatcher_replica_does_not_hurt_the_others(
    fault_fleet: Fleet,
    probe_wasm: Path,  # noqa: F811 - fixture
) -> None:
    doomed = await asyncio.to_thread(fault_fleet.start_dispatcher, "doomed")
    survivor = await asyncio.to_thread(fault_fleet.start_dispatcher, "survivor")
    await asyncio.to_thread(fault_fleet.start_worker, "worker", concurrency=4)
    await deploy(survivor, "probe", probe_wasm.read_bytes(), {"timeout_ms": 5_000})
    op = json.dumps({"op": "sleep", "ms": 150}).encode()
    async with (
        httpx.AsyncClient(base_url=doomed, timeout=30) as on_doomed,
        httpx.AsyncClient(base_url=survivor, timeout=30) as on_survivor,
    ):
        # Jobs accepted by the replica that is about to die.
        jobs: dict[str, bytes] = {}
        for _ in range(20):
            r = await on_doomed.post("/v1/functions/probe/jobs", content=op)
            assert r.status_code == 202
            jobs[r.json()["job_id"]] = op
        stop = asyncio.Event()

        async def caller(client: httpx.AsyncClient) -> list[str]:
            outcomes = []
            while not stop.is_set():
                try:
                    r = await client.post("/v1/functions/probe/invoke", content=op)
                    outcomes.append(str(r.status_code))
                except httpx.HTTPError as exc:
                    outcomes.append(type(exc).__name__)
            return outcomes

        async def kill_soon() -> None:
            await asyncio.sleep(1.5)  # callers on both replicas are waiting by now
            await asyncio.to_thread(fault_fleet.kill, "doomed", signal.SIGKILL)
            await asyncio.sleep(2.0)
            stop.set()

        results = await asyncio.gather(
            kill_soon(),
            *(caller(on_survivor) for _ in range(3)),
            *(caller(on_doomed) for _ in range(2)),
        )
        on_survivor_outcomes = [o for r in results[1:4] for o in r]  # type: ignore[union-attr]
        on_doomed_outcomes = [o for r in results[4:] for o in r]  # type: ignore[union-attr]
        assert set(on_survivor_outcomes) == {"200"}, on_survivor_outcomes
        assert any(o != "200" for o in on_doomed_outcomes)  # they did see their replica die
        docs = await wait_jobs(on_survivor, jobs, 60)
    assert_all_succeeded(jobs, docs)


@pytest.fixture
def extra_node() -> Iterator[Cluster]:
    """One extra RabbitMQ node of our own: the machine's broker is shared, never restarted."""
    with extra_nodes(1) as cluster:
        yield cluster


async def test_rabbitmq_restart_loses_no_accepted_job(
    extra_node: Cluster, amqp_url: str, redis_url: str, aws_endpoint_url: str
) -> None:
    # A connection to the machine's own broker, open all along: it must outlive the test.
    machine = await aio_pika.connect(amqp_url)
    fleet = Fleet(extra_node.urls[0], redis_url, aws_endpoint_url=aws_endpoint_url)
    try:
        await restart_under_load(fleet, extra_node)
        assert not machine.is_closed, "the machine's own broker went away during the test"
    finally:
        await machine.close()
        await asyncio.to_thread(fleet.stop)


async def restart_under_load(fleet: Fleet, broker: Cluster) -> None:
    """Jobs stream in while the broker node shuts down and boots again (from its disk)."""
    url = await asyncio.to_thread(fleet.start_dispatcher)
    await asyncio.to_thread(fleet.start_worker, "worker", concurrency=2)
    await deploy(url, "echo", build_wat("echo"), {"timeout_ms": 5_000})
    accepted: dict[str, bytes] = {}
    refused: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        stop = asyncio.Event()

        async def stream() -> None:
            i = 0
            while not stop.is_set():
                body = f"job {i}".encode()
                try:
                    r = await client.post("/v1/functions/echo/jobs", content=body)
                    if r.status_code == 202:
                        accepted[r.json()["job_id"]] = body
                    else:
                        refused.append(r.status_code)
                except httpx.HTTPError:
                    refused.append(0)
                i += 1
                await asyncio.sleep(0.03)

        async def restart() -> None:
            await asyncio.sleep(2)  # jobs flow before the outage
            try:
                await asyncio.to_thread(broker.stop, 1)
            finally:
                await asyncio.to_thread(broker.start, 1)  # waits until the node runs
            await asyncio.sleep(3)  # clients reconnect; the stream goes on meanwhile
            stop.set()

        await asyncio.gather(restart(), stream())
        docs = await wait_jobs(client, accepted, 90)
    assert len(accepted) > 30
    assert_all_succeeded(accepted, docs)
    # Exactly once from the caller's view: one result per job, and it is that job's own.
    bodies = {job_id: job_body(doc) for job_id, doc in docs.items()}
    mismatched = {j: b for j, b in bodies.items() if b is not None and b != accepted[j]}
    assert not mismatched, list(mismatched.items())[:3]
    assert set(refused) <= {503, 0}, refused
