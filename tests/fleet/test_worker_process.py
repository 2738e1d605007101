"""Worker processes against a real RabbitMQ: sharing a queue, SIGKILL, SIGTERM drain,
poison messages and the delivery limit, a cut network connection."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest

from flotilla.envelope import Envelope
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from tests.fleet.fakes import envelope
from tests.fleet.proxy import CuttableProxy
from worker.handler import POISON_RUNS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2  # delivery limit of these tests' topology (workers must declare the same)


class WorkerProcess:
    """A `tests.fleet.fake_worker` subprocess whose stdout lines can be awaited."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        amqp_url: str,
        prefix: str,
        started: list[WorkerProcess],
        *,
        concurrency: int = 2,
        delivery_limit: int = LIMIT,
        prefetch: int = 0,
    ) -> WorkerProcess:
        """Start one; it is in `started` (for cleanup) before its readiness is awaited."""
        env = dict(
            os.environ,
            FLOTILLA_AMQP_URL=amqp_url,
            FLOTILLA_QUEUE_PREFIX=prefix,
            FLOTILLA_CONCURRENCY=str(concurrency),
            FLOTILLA_DRAIN_TIMEOUT_S="20",
            FLOTILLA_METRICS_PORT="0",
            FLOTILLA_PREFETCH=str(prefetch),
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fleet.fake_worker", str(delivery_limit),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(proc)
        started.append(worker)
        # Ready, or already gone (a `crash` delivery can beat the "ready" line).
        ready = asyncio.create_task(worker.ready.wait())
        exited = asyncio.create_task(proc.wait())
        done, _ = await asyncio.wait({ready, exited}, timeout=30, return_when="FIRST_COMPLETED")
        ready.cancel()
        exited.cancel()
        assert done, f"worker not ready; printed {list(worker.lines._queue)}"
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            # "ready" may be printed after the first delivery already started.
            line = raw.decode().strip()
            if line == "ready":
                self.ready.set()
            else:
                await self.lines.put(line)
        await self.lines.put("<eof>")

    async def expect(self, prefix: str, timeout: float = 30) -> str:
        """The next stdout line; it must start with `prefix`."""
        line = await asyncio.wait_for(self.lines.get(), timeout)
        assert line.startswith(prefix), f"expected {prefix!r}, worker printed {line!r}"
        return line

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)


@pytest.fixture
async def spawn(amqp_url: str, topology: Topology) -> AsyncIterator[Callable[..., object]]:
    started: list[WorkerProcess] = []

    async def spawn_one(url: str = amqp_url, **kw: int) -> WorkerProcess:
        return await WorkerProcess.start(url, topology.prefix, started, **kw)

    yield spawn_one
    for w in started:
        if w.proc.returncode is None:
            w.proc.kill()
            await w.proc.wait()


@pytest.fixture
async def topology_limited(topology: Topology) -> Topology:
    return Topology(topology.prefix, delivery_limit=LIMIT, max_length=1_000)


@pytest.fixture
async def caller(amqp_url: str, topology_limited: Topology, unique: str) -> AsyncIterator[AmqpTransport]:
    async with AmqpTransport(amqp_url, topology_limited, connection_name=f"caller-{unique}") as t:
        yield t


async def test_two_workers_share_one_queue(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    a, b = await spawn(), await spawn()
    replies = await asyncio.gather(
        *(caller.call(envelope("sleep", b"30"), timeout=30) for _ in range(40))
    )
    assert all(r.outcome == "ok" for r in replies)
    pids = {dict(r.headers)["x-worker"] for r in replies}
    assert pids == {str(a.proc.pid), str(b.proc.pid)}


async def test_sigkill_mid_invocation_redelivers_to_another_worker(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    a = await spawn()
    env = envelope("sleep", b"200")
    call = asyncio.create_task(caller.call(env, timeout=60))
    assert await a.expect("started") == f"started {env.invocation_id}"
    await a.stop(signal.SIGKILL)
    b = await spawn()
    assert await b.expect("started") == f"started {env.invocation_id}"
    reply = await call
    assert (reply.outcome, dict(reply.headers)["x-worker"]) == ("ok", str(b.proc.pid))
    # Exactly one reply: the killed worker never published one.
    assert await b.stop() == 0
    assert caller.stray_replies == 0


async def test_sigterm_drains_in_flight_work(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    w = await spawn()
    env = envelope("sleep", b"1000")
    call = asyncio.create_task(caller.call(env, timeout=30))
    await w.expect("started")
    w.proc.send_signal(signal.SIGTERM)
    await w.expect("stopping")
    reply = await call
    assert (reply.outcome, reply.body) == ("ok", b"1000")
    assert await asyncio.wait_for(w.proc.wait(), 30) == 0


async def test_second_sigterm_exits_at_once_and_work_is_redelivered(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    w = await spawn()
    env = envelope("sleep", b"2000")
    call = asyncio.create_task(caller.call(env, timeout=60))
    await w.expect("started")
    w.proc.send_signal(signal.SIGTERM)
    await w.expect("stopping")  # two signals sent back to back would merge into one
    w.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(w.proc.wait(), 1.5) == 1  # before the 2 s invocation ended
    other = await spawn()
    assert await other.expect("started") == f"started {env.invocation_id}"
    assert (await call).outcome == "ok"


async def test_poison_message_reaches_the_dlq(spawn, caller: AmqpTransport, amqp_url: str, topology: Topology) -> None:  # type: ignore[no-untyped-def]
    env = envelope("crash", job=True)
    await caller.submit(env)
    crashes = 0
    history: list[tuple[str, int | None]] = []  # (what the worker printed, its exit status)
    dead = await _dead_letter_waiter(amqp_url, topology.dead_letters)
    while not dead.done():
        w = await spawn()
        started = asyncio.create_task(w.expect("started"))
        await asyncio.wait({started, dead}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            status = await asyncio.wait_for(w.proc.wait(), 10)
            history.append((str(started.exception() or started.result()), status))
            assert status == 3, f"worker did not crash as told: {history}"
            crashes += 1
        else:
            started.cancel()
            history.append(("dead-lettered", await w.stop()))
        assert crashes <= LIMIT + 1, f"the delivery limit did not dead-letter it: {history}"
    message = await dead
    assert Envelope.decode(message.body).invocation_id == env.invocation_id
    assert crashes == LIMIT + 1, history


async def test_runs_not_deliveries_decide_poison(spawn, amqp_url: str, topology: Topology, unique: str) -> None:  # type: ignore[no-untyped-def]
    # The broker's delivery limit is only a backstop here; workers prefetch deeply. A poison
    # envelope at the head of the queue kills every worker that starts it, while six innocent
    # envelopes sit prefetched (never started) in each of those workers.
    backstop = Topology(topology.prefix, delivery_limit=20, max_length=1_000)
    async with AmqpTransport(amqp_url, backstop, connection_name=f"caller-{unique}") as caller:
        poison = envelope("crash")
        innocents = [envelope("echo", f"innocent {n}".encode()) for n in range(6)]
        calls = [asyncio.create_task(caller.call(e, timeout=120)) for e in (poison, *innocents)]
        await _queued(amqp_url, backstop.invocations, len(calls))
        crashes = 0
        while not calls[0].done():
            w = await spawn(concurrency=1, delivery_limit=20, prefetch=8)
            exited = asyncio.create_task(w.proc.wait())
            await asyncio.wait({exited, calls[0]}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                assert exited.result() == 3, "the worker did not die of the poison"
                crashes += 1
            assert crashes <= POISON_RUNS, "the run count did not stop the poison"
        reply = await calls[0]
        assert reply.outcome == "internal" and "dead-lettered" in reply.error, reply
        # Each innocent was held by POISON_RUNS dying workers (a delivery counted each time,
        # past the old limit of 2) and still ran, once the poison was out of the way.
        replies = await asyncio.gather(*calls[1:])
        assert [(r.outcome, r.body) for r in replies] == [("ok", e.body) for e in innocents]
    assert crashes == POISON_RUNS
    dead = await _dead_letter_waiter(amqp_url, backstop.dead_letters)
    message = await asyncio.wait_for(dead, 10)
    assert Envelope.decode(message.body).invocation_id == poison.invocation_id


async def _queued(amqp_url: str, queue_name: str, count: int) -> None:
    """Wait until `queue_name` holds `count` messages (published and confirmed)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for _ in range(200):
            queue = await channel.declare_queue(queue_name, passive=True)
            if queue.declaration_result.message_count >= count:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{queue_name} never held {count} messages")


async def test_worker_survives_a_cut_connection(spawn, caller: AmqpTransport, amqp_url: str) -> None:  # type: ignore[no-untyped-def]
    url = urlsplit(amqp_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5672)
    await proxy.start()
    try:
        proxied = amqp_url.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
        w = await spawn(proxied)
        assert (await caller.call(envelope("echo", b"before"), timeout=10)).body == b"before"
        # Cut mid-invocation: the delivery is redelivered and answered after the reconnect.
        env = envelope("sleep", b"500")
        call = asyncio.create_task(caller.call(env, timeout=60))
        await w.expect("started")
        proxy.cut()
        reply = await call
        assert reply.outcome == "ok"
        assert proxy.accepted >= 2  # the worker reconnected through the proxy
        assert (await caller.call(envelope("echo", b"after"), timeout=30)).body == b"after"
    finally:
        await proxy.close()


async def _dead_letter_waiter(amqp_url: str, queue_name: str) -> asyncio.Task[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name)
    got: asyncio.Future[aio_pika.abc.AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        if not got.done():
            got.set_result(message)

    await queue.consume(on_message)

    async def wait() -> aio_pika.abc.AbstractIncomingMessage:
        try:
            return await got
        finally:
            await connection.close()

    return asyncio.create_task(wait())
