"""The worker supervisor (worker/supervisor.py) against a real RabbitMQ: a killed process is
started again and counted, SIGTERM drains every process and loses nothing, processes that
die at start make it exit non-zero, and /metrics answers once for all processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import pytest

from flotilla.cli import build_parser
from flotilla.commands.worker import given_flags
from flotilla.settings import WorkerSettings, from_args
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from loadtest.fleet import free_port
from tests.fleet.fakes import envelope
from tests.fleet.workers import ROOT, Samples, WorkerProcess, alive, probe, started
from worker.supervisor import (
    METRICS_DIR_PREFIX,
    RESTART_MAX_S,
    START_FAILURES,
    remove_stale_metrics_dirs,
    restart_delay,
)

pytestmark = [pytest.mark.timeout(120)]


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize(
    ("deaths", "delay"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, RESTART_MAX_S), (50, RESTART_MAX_S)],
)
def test_restart_delay_doubles_up_to_a_cap(deaths: int, delay: float) -> None:
    assert restart_delay(deaths) == delay


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--processes", "3", "--concurrency", "1", "--drain-timeout-s", "2.5"],
        ["--worker-processes", "2", "--queue-prefix", "blue", "--log-format", "text",
         "--aws-endpoint-url", "http://s3.local:5000", "--metrics-port", "0"],
    ],
)
def test_children_get_the_supervisors_settings(argv: list[str]) -> None:
    parser = build_parser()
    parent = from_args(WorkerSettings, parser.parse_args(["worker", *argv]))
    flags = given_flags(parser.parse_args(["worker", *argv]))
    child = from_args(WorkerSettings, parser.parse_args(["worker", *flags, "--child-link", "3"]))
    assert child == parent


def test_metrics_dirs_of_dead_supervisors_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{METRICS_DIR_PREFIX}{2**22 + 1}-abc"  # above pid_max: never alive
    ours = tmp_path / f"{METRICS_DIR_PREFIX}{os.getpid()}-def"
    other = tmp_path / "flotilla-other"
    for d in (dead, ours, other):
        d.mkdir()
        (d / "counter_1.db").write_bytes(b"")
    remove_stale_metrics_dirs(str(tmp_path))
    assert (dead.exists(), ours.exists(), other.exists()) == (False, True, True)


@pytest.fixture
async def spawn(amqp_url: str, topology: Topology) -> AsyncIterator[Callable[..., object]]:
    workers: list[WorkerProcess] = []

    async def spawn_one(**kw: object) -> WorkerProcess:
        return await WorkerProcess.start(amqp_url, topology.prefix, workers, **kw)  # type: ignore[arg-type]

    yield spawn_one
    for w in workers:
        await w.close()


@pytest.fixture
async def caller(amqp_url: str, topology: Topology, unique: str) -> AsyncIterator[AmqpTransport]:
    async with AmqpTransport(amqp_url, topology, connection_name=f"caller-{unique}") as t:
        yield t


async def until(w: WorkerProcess, check: Callable[[Samples], bool], timeout: float = 30) -> Samples:
    """Scrape until `check` holds (each scrape is one GET of the supervisor's counters)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check(samples := await w.metrics()):
        assert loop.time() < end, f"metrics never matched: {samples}"
        await asyncio.sleep(0.1)
    return samples


@pytest.mark.integration
async def test_a_killed_process_is_started_again_and_counted(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    w = await spawn(concurrency=1, prefetch=1)
    children = w.children()
    assert len(children) == 2
    # Each process is alone in its process group: a terminal's Ctrl-C reaches the supervisor.
    assert all(os.getpgid(pid) == pid for pid in children)
    replies = await asyncio.gather(*(caller.call(envelope("sleep", b"20"), timeout=30)
                                     for _ in range(8)))
    answered = {int(dict(r.headers)["x-worker"]) for r in replies}
    assert answered == children
    victim = min(children)
    os.kill(victim, signal.SIGKILL)
    after = await until(w, lambda s: value(s, "flotilla_worker_restarts_total") == 1
                        and value(s, "flotilla_worker_processes") == 2)
    # The victim's counts stay in the sum: a restart never sends a counter backwards.
    assert value(after, "flotilla_invocations_total", function="sleep", outcome="ok") == 8
    await w.until_ready()
    now = w.children()
    assert len(now) == 2 and victim not in now and len(now & children) == 1
    reply = await caller.call(envelope("echo", b"again"), timeout=30)
    assert reply.outcome == "ok"
    assert await w.stop() == 0


@pytest.mark.integration
async def test_sigterm_drains_every_process_and_loses_nothing(spawn, caller: AmqpTransport, amqp_url: str, topology: Topology) -> None:  # type: ignore[no-untyped-def]
    w = await spawn(concurrency=1, prefetch=1)  # each process holds only what it runs
    envs = [envelope("sleep", b"700") for _ in range(6)]
    calls = [asyncio.create_task(caller.call(env, timeout=60)) for env in envs]
    running = [started(await w.expect("started")) for _ in range(2)]
    assert {pid for _, pid in running} == w.children()
    w.proc.send_signal(signal.SIGTERM)
    await w.expect("stopping")
    assert await asyncio.wait_for(w.proc.wait(), 30) == 0
    # The two in flight finished and answered; the four waiting went back to the queue.
    first = {inv for inv, _ in running}
    done = [c for c, e in zip(calls, envs, strict=True) if e.invocation_id in first]
    assert [(r.outcome, r.body) for r in await asyncio.gather(*done)] == [("ok", b"700")] * 2
    assert await _ready_messages(amqp_url, topology.sync) == 4
    # A new worker runs those four; nothing ran twice.
    other = await spawn(concurrency=1, prefetch=1)
    replies = await asyncio.gather(*calls)
    assert all(r.outcome == "ok" for r in replies)
    later = [started(await other.expect("started"))[0] for _ in range(4)]
    assert sorted(first.union(later)) == sorted(e.invocation_id for e in envs)
    assert caller.stray_replies == 0


@pytest.mark.integration
async def test_processes_dying_at_start_make_it_exit_non_zero(unique: str) -> None:
    # The real `flotilla worker`, whose processes cannot reach their broker.
    port = free_port()
    env = dict(os.environ, FLOTILLA_ARTIFACT_KEY="k", FLOTILLA_QUEUE_PREFIX=unique,
               FLOTILLA_LOG_FORMAT="text")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flotilla", "worker", "--processes", "2",
        "--amqp-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "--metrics-port", str(port), cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        async for raw in proc.stderr:
            lines.append(raw.decode().rstrip())
            if "worker process 0 started" in lines[-1]:
                break
        assert (await probe(port, "/readyz")).status_code == 503
        assert (await probe(port, "/healthz")).status_code == 200
        output = (await asyncio.wait_for(proc.stderr.read(), 100)).decode()
        assert await asyncio.wait_for(proc.wait(), 10) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    giving_up = [line for line in output.splitlines() if "giving up" in line]
    assert giving_up, output[-3000:]
    assert f"died before consuming {START_FAILURES} times in a row (last: exit status 1)" \
        in giving_up[0]
    # The slot that gave up was started again after each earlier failure, each one said.
    slot = giving_up[0].split("worker process ", 1)[1].split()[0]
    retries = [line for line in output.splitlines()
               if f"worker process {slot} (pid" in line and "failed to start" in line]
    assert len(retries) == START_FAILURES - 1, retries
    assert all("(exit status 1)" in line for line in retries)


@pytest.mark.integration
async def test_metrics_are_served_once_for_all_processes(spawn, caller: AmqpTransport) -> None:  # type: ignore[no-untyped-def]
    w = await spawn(concurrency=1, prefetch=1)
    children = w.children()
    # One invocation in each process at once: the in-flight gauge is their sum.
    calls = [asyncio.create_task(caller.call(envelope("sleep", b"1500"), timeout=30))
             for _ in range(2)]
    assert {started(await w.expect("started"))[1] for _ in calls} == children
    during = await w.metrics()
    assert value(during, "flotilla_invocations_in_flight") == 2
    await asyncio.gather(*calls)
    replies = await asyncio.gather(*(caller.call(envelope("echo", b"x"), timeout=30)
                                     for _ in range(20)))
    assert {int(dict(r.headers)["x-worker"]) for r in replies} == children
    after = await w.metrics()
    assert value(after, "flotilla_invocations_total", function="echo", outcome="ok") == 20
    assert value(after, "flotilla_invocations_total", function="sleep", outcome="ok") == 2
    assert value(after, "flotilla_invocation_duration_seconds_count", function="echo") == 20
    assert value(after, "flotilla_invocations_in_flight") == 0
    assert value(after, "flotilla_worker_processes") == 2
    assert value(after, "flotilla_worker_restarts_total") == 0
    # Summed, not one series per process: no sample carries a pid.
    assert not [key for key in after if "pid" in dict(key[1])]
    names = [name for name, _ in after]
    assert names.count("flotilla_invocations_in_flight") == 1
    assert await w.stop() == 0
    assert not any(alive(pid) for pid in children)


async def _ready_messages(amqp_url: str, queue_name: str) -> int:
    """Messages ready in `queue_name`."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count)
