"""Workers against a real RabbitMQ, each a supervisor of two worker processes (the default
shape of `flotilla worker`): sharing a queue, SIGKILL of a process mid-invocation, SIGTERM
drain, poison messages and the delivery limit, a cut network connection."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
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
from tests.fleet.workers import LIMIT, WorkerProcess, alive, started
from tests.services import register_names
from worker.handler import POISON_RUNS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
async def spawn(amqp_url: str, topology: Topology) -> AsyncIterator[Callable[..., object]]:
    workers: list[WorkerProcess] = []

    async def spawn_one(url: str = amqp_url, **kw: object) -> WorkerProcess:
        return await WorkerProcess.start(url, topology.prefix, workers, **kw)  # type: ignore[arg-type]

    yield spawn_one
    for w in workers:
        await w.close()


@pytest.fixture
async def topology_limited(topology: Topology) -> Topology:
    return Topology(topology.prefix, delivery_limit=LIMIT, max_length=1_000)


@pytest.fixture
async def caller(amqp_url: str, topology_limited: Topology, unique: str) -> AsyncIterator[AmqpTransport]:
    async with AmqpTransport(amqp_url, topology_limited, connection_name=f"caller-{unique}") as t:
        yield t


async def test_two_workers_share_one_queue(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    # Shallow prefetch, so the broker spreads the calls over every consumer.
    a, b = await spawn(prefetch=2), await spawn(prefetch=2)
    replies = await asyncio.gather(
        *(caller.call(envelope("sleep", b"30"), timeout=30) for _ in range(40))
    )
    assert all(r.outcome == "ok" for r in replies)
    pids = {int(dict(r.headers)["x-worker"]) for r in replies}
    assert len(a.children()) == len(b.children()) == 2
    assert pids == a.children() | b.children()  # all four processes of both workers ran some


async def test_sigkill_of_a_process_mid_invocation_redelivers_to_another(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    w = await spawn()
    env = envelope("sleep", b"300")
    call = asyncio.create_task(caller.call(env, timeout=60))
    invocation, victim = started(await w.expect("started"))
    assert invocation == env.invocation_id
    os.kill(victim, signal.SIGKILL)
    # The other process (or the victim's replacement) runs it again and answers.
    again, pid = started(await w.expect("started"))
    assert (again, pid != victim) == (env.invocation_id, True)
    reply = await call
    assert (reply.outcome, dict(reply.headers)["x-worker"]) == ("ok", str(pid))
    # Exactly one reply: the killed process never published one.
    assert await w.stop() == 0
    assert caller.stray_replies == 0


async def test_sigkill_of_the_supervisor_mid_invocation_lets_its_processes_drain(spawn, caller: AmqpTransport, amqp_url: str, topology_limited: Topology) -> None:  # type: ignore[no-untyped-def]
    w = await spawn()
    children = w.children()
    metrics_dir = _environ(min(children))["PROMETHEUS_MULTIPROC_DIR"]
    env = envelope("sleep", b"1000")
    call = asyncio.create_task(caller.call(env, timeout=30))
    _, pid = started(await w.expect("started"))
    await w.stop(signal.SIGKILL)
    # Their link to the supervisor closed: the processes stop consuming, finish the
    # invocation in flight and exit; none is left consuming as an orphan.
    reply = await call
    assert (reply.outcome, dict(reply.headers)["x-worker"]) == ("ok", str(pid))
    for child in children:
        await _gone(child)
    assert await _consumers(amqp_url, topology_limited.sync) == 0
    shutil.rmtree(metrics_dir)  # a SIGKILLed supervisor cannot remove it itself


def _environ(pid: int) -> dict[str, str]:
    """The environment of process `pid`."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def test_sigterm_drains_every_process(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    w = await spawn(concurrency=1, prefetch=1)  # one envelope in each process
    envs = [envelope("sleep", b"1000") for _ in range(2)]
    calls = [asyncio.create_task(caller.call(env, timeout=30)) for env in envs]
    runs = [started(await w.expect("started")) for _ in envs]
    assert {pid for _, pid in runs} == w.children()
    w.proc.send_signal(signal.SIGTERM)
    await w.expect("stopping")
    replies = await asyncio.gather(*calls)
    assert [(r.outcome, r.body) for r in replies] == [("ok", b"1000")] * 2
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
    assert started(await other.expect("started"))[0] == env.invocation_id
    assert (await call).outcome == "ok"


async def test_poison_message_reaches_the_dlq(spawn, caller: AmqpTransport, amqp_url: str, redis_url: str, topology: Topology) -> None:  # type: ignore[no-untyped-def]
    env = envelope("crash", job=True)
    await register_names(redis_url, topology.prefix, "crash")  # its job lane is consumed
    await caller.submit(env)
    dead = await _dead_letter_waiter(amqp_url, topology.dead_letters)
    # Each run kills the process running it; the supervisor starts another each time.
    w = await spawn(wait=False)
    runs = await _runs_until(w, dead, env.invocation_id, LIMIT + 1)
    message = await dead
    assert Envelope.decode(message.body).invocation_id == env.invocation_id
    assert runs == LIMIT + 1
    assert w.proc.returncode is None  # the supervisor outlived every crash


async def test_runs_not_deliveries_decide_poison(spawn, amqp_url: str, topology: Topology, unique: str) -> None:  # type: ignore[no-untyped-def]
    # The broker's delivery limit is only a backstop here; workers prefetch deeply. A poison
    # envelope at the head of the queue kills every process that starts it, while six
    # innocent envelopes sit prefetched (never started) in the processes it kills.
    backstop = Topology(topology.prefix, delivery_limit=20, max_length=1_000)
    async with AmqpTransport(amqp_url, backstop, connection_name=f"caller-{unique}") as caller:
        poison = envelope("crash")
        innocents = [envelope("echo", f"innocent {n}".encode()) for n in range(6)]
        calls = [asyncio.create_task(caller.call(e, timeout=120)) for e in (poison, *innocents)]
        await _queued(amqp_url, backstop.sync, len(calls))
        w = await spawn(concurrency=1, delivery_limit=20, prefetch=8, wait=False)
        runs = await _runs_until(w, calls[0], poison.invocation_id, POISON_RUNS)
        reply = await calls[0]
        assert reply.outcome == "internal" and "dead-lettered" in reply.error, reply
        # Innocents held by dying processes (a delivery counted each time, past the old
        # limit of 2) still ran, once the poison was out of the way.
        replies = await asyncio.gather(*calls[1:])
        assert [(r.outcome, r.body) for r in replies] == [("ok", e.body) for e in innocents]
    assert runs == POISON_RUNS
    dead = await _dead_letter_waiter(amqp_url, backstop.dead_letters)
    message = await asyncio.wait_for(dead, 10)
    assert Envelope.decode(message.body).invocation_id == poison.invocation_id


async def _runs_until(w: WorkerProcess, done: asyncio.Future[object], invocation_id: str,
                      most: int) -> int:
    """Count the starts of `invocation_id` (each one kills its process) until `done`."""
    runs = 0
    while not done.done():
        line = asyncio.create_task(w.expect("started", timeout=60))
        await asyncio.wait({line, done}, return_when=asyncio.FIRST_COMPLETED)
        if not line.done():
            line.cancel()
            break
        if started(line.result())[0] == invocation_id:
            runs += 1
        assert runs <= most, "neither the delivery limit nor the run count stopped the poison"
    return runs


async def _gone(pid: int, timeout: float = 30) -> None:
    """Wait until process `pid` has exited (it is not our child: poll /proc)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while alive(pid):
        assert loop.time() < end, f"process {pid} still running"
        await asyncio.sleep(0.05)


async def _consumers(amqp_url: str, queue_name: str) -> int:
    """How many consumers `queue_name` has."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.consumer_count)


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
        connected = proxy.accepted  # one connection per process
        # Cut mid-invocation: the delivery is redelivered and answered after the reconnect.
        env = envelope("sleep", b"500")
        call = asyncio.create_task(caller.call(env, timeout=60))
        await w.expect("started")
        proxy.cut()
        reply = await call
        assert reply.outcome == "ok"
        await w.until_ready()
        assert connected == 2
        assert proxy.accepted >= connected + 2  # both processes reconnected through it
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
