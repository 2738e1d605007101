"""Benchmark: two worker trees A/B (e.g. before and after a change) beside the bare aio-pika
echo, in the same run, interleaved rounds, with the CPU per call of each worker and of the
broker, and each worker's main-thread/other-thread CPU split at the end.

    ATREE=/tmp/before BTREE=. AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
        flock /tmp/bench.lock .venv/bin/python -m tests.fleet.bench_worker_ab

ATREE/BTREE: source trees to run `python -m flotilla worker` from (PYTHONPATH=tree; make
one with `git worktree add` or by copying the tree and checking out the old files).
Environment as `tests.fleet.bench_client`: CONC (64), N (calls per round, 3000), ROUNDS (3),
WCONC (worker concurrency, 2), PREFETCH (0 = the default). The per-round lines and the
medians go to stdout. Not a test: pytest does not collect it.
"""
from __future__ import annotations

import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aio_pika
import redis.asyncio as aioredis

from flotilla.artifacts import ArtifactStore, S3Backend
from flotilla.client import Client
from flotilla.config import FunctionConfig
from flotilla.hosts.clients import HostClients
from flotilla.registry import Deployer, Registry
from flotilla.sandbox import Sandbox
from flotilla.settings import WorkerSettings
from flotilla.topology import Topology
from loadtest.bare_echo import BareEchoClient
from loadtest.runner import closed_loop
from tests.fleet.bench_client import broker_pid, cpu_seconds, wait_line
from tests.guests.wat import build_wat
from tests.services import TEST_FUNCTIONS, moto_server

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
TREES = {
    "A": str(Path(os.environ.get("ATREE", ROOT)).resolve()),
    "B": str(Path(os.environ.get("BTREE", ROOT)).resolve()),
}

def thread_cpu(pid: int) -> dict[str, float]:
    """User and system CPU seconds of a process's main thread and of its other threads."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        who = "main" if task.name == str(pid) else "other"
        out[f"{who}-usr"] = out.get(f"{who}-usr", 0.0) + int(fields[11]) / tick
        out[f"{who}-sys"] = out.get(f"{who}-sys", 0.0) + int(fields[12]) / tick
    return {k: round(v, 2) for k, v in out.items()}


async def start_worker(
    name: str, tree: str, aws: str, redis: aioredis.Redis, sandbox: Sandbox, tmp: str
) -> tuple[str, asyncio.subprocess.Process, asyncio.Task[None]]:
    """Deploy the WAT echo under a fresh prefix and start a worker from `tree` for it."""
    prefix = f"ab{name}{uuid.uuid4().hex[:6]}"
    bucket, key = f"{prefix.lower()}-art", "bench-key"
    store = ArtifactStore(
        S3Backend.from_settings(bucket=bucket, endpoint_url=aws, region="us-east-1"), key
    )
    deployer = Deployer(
        Registry(redis, prefix=prefix), store,
        compile=sandbox.compile, engine_fingerprint=sandbox.engine_fingerprint,
    )
    await deployer.deploy(FunctionConfig("echo"), build_wat("echo"))
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flotilla", "worker", "--amqp-url", AMQP, "--redis-url", REDIS,
        "--aws-endpoint-url", aws, "--artifact-bucket", bucket, "--artifact-key", key,
        "--queue-prefix", prefix, "--cache-dir", f"{tmp}/{name}",
        "--concurrency", os.environ.get("WCONC", "2"),
        "--prefetch", os.environ.get("PREFETCH", "0"), "--metrics-port", "0",
        cwd=tree, env=dict(os.environ, PYTHONPATH=tree), stderr=asyncio.subprocess.PIPE,
    )
    await wait_line(worker.stderr, b"worker processes consuming")

    async def drain(stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for _ in stream:
            pass

    return prefix, worker, asyncio.create_task(drain(worker.stderr))


async def main(aws: str) -> None:
    conc = int(os.environ.get("CONC", "64"))
    calls = int(os.environ.get("N", "3000"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    redis = aioredis.from_url(REDIS)
    tmp = tempfile.mkdtemp()
    sandbox = Sandbox(HostClients.for_dev(WorkerSettings(cache_dir=tmp)), cache_dir=tmp)
    started = {name: await start_worker(name, tree, aws, redis, sandbox, tmp)
               for name, tree in TREES.items()}
    queue = f"bare-{uuid.uuid4().hex[:8]}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.bare_echo", "serve", AMQP, queue,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    await wait_line(server.stdout, b"ready")
    beam = broker_pid()
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    async with AsyncExitStack() as stack:
        bare = await stack.enter_async_context(BareEchoClient(AMQP, queue))
        systems: list[tuple[str, Callable[[], Awaitable[object]], int]] = [
            ("bare", lambda: bare.call(b"ping"), server.pid or 0)
        ]
        for name, (prefix, worker, _) in started.items():
            client = await stack.enter_async_context(
                Client(AMQP, queue_prefix=prefix, redis_url=REDIS)
            )
            systems.append((name, functools.partial(client.invoke, "echo", b"ping"), worker.pid or 0))
        for name, call, _ in systems:  # warm up
            await closed_loop(name, call, concurrency=conc, requests=300, warmup=20)
        for r in range(rounds):
            # bare, A, B then bare, B, A: neither worker always runs right after the bare one.
            order = systems if r % 2 == 0 else [systems[0], *systems[1:][::-1]]
            for name, call, pid in order:
                c0, s0, b0 = time.process_time(), cpu_seconds(pid), cpu_seconds(beam)
                result = await closed_loop(name, call, concurrency=conc, requests=calls, warmup=20)
                c1, s1, b1 = time.process_time(), cpu_seconds(pid), cpu_seconds(beam)
                s = result.summary()
                row = (
                    float(s["rps"]), (c1 - c0) / calls * 1e6,
                    (s1 - s0) / calls * 1e6, (b1 - b0) / calls * 1e6,
                )
                rows.setdefault(name, []).append(row)
                print(
                    f"{name:5} rps={s['rps']:7} p50={s['p50_ms']}ms errors={s['errors']} "
                    f"cpu us/call: client={row[1]:.0f} server={row[2]:.0f} broker={row[3]:.0f}",
                    flush=True,
                )
    for name, (_, worker, _) in started.items():
        print(name, "thread cpu s:", thread_cpu(worker.pid))
    print("medians: rps / client / server / broker (cpu us per call)")
    for name, values in rows.items():
        med = [statistics.median(column) for column in zip(*values)]
        print(f"{name:5} {med[0]:7.0f} {med[1]:5.0f} {med[2]:5.0f} {med[3]:5.0f}")
    server.terminate()
    await server.wait()
    for _, worker, drainer in started.values():
        worker.terminate()
        await worker.wait()
        drainer.cancel()
    connection = await aio_pika.connect(AMQP)
    async with connection:
        for prefix, _, _ in started.values():
            await Topology(prefix).delete(await connection.channel(), TEST_FUNCTIONS)
    await redis.aclose()
    sandbox.close()


if __name__ == "__main__":
    with moto_server() as endpoint:
        asyncio.run(main(endpoint))
