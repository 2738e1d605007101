"""Benchmark: the Python client through a `flotilla worker` (WAT echo, real sandbox) against
the bare aio-pika RPC echo baseline, in the same run, with the CPU per call of each process.

    AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x .venv/bin/python -m tests.fleet.bench_client

Environment: CONC (calls in flight, 64), N (calls per round, 3000), ROUNDS (2), WCONC (worker
concurrency, 2), PREFETCH (worker prefetch, 0 = its default). Needs RabbitMQ and Redis on
localhost; starts its own moto server. Not a test: pytest does not collect it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
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
from loadtest.fleet import children_of
from loadtest.runner import closed_loop
from tests.guests.wat import build_wat
from tests.services import TEST_FUNCTIONS, moto_server

ROOT = Path(__file__).resolve().parents[2]
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (a worker's processes run
    under its supervisor), from /proc."""
    total = 0.0
    for one in (pid, *children_of(pid)):
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def broker_pid() -> int:
    """The RabbitMQ (beam.smp) process id."""
    out = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


async def wait_line(stream: asyncio.StreamReader | None, needle: bytes) -> None:
    """Read `stream` until a line contains `needle`."""
    assert stream is not None
    async for line in stream:
        if needle in line:
            return
    raise RuntimeError(f"stream ended before {needle!r}")


async def main(aws: str) -> None:
    conc = int(os.environ.get("CONC", "64"))
    calls = int(os.environ.get("N", "3000"))
    rounds = int(os.environ.get("ROUNDS", "2"))
    prefix = f"b{uuid.uuid4().hex[:8]}"
    bucket, key, tmp = f"{prefix}-art", "bench-key", tempfile.mkdtemp()
    redis = aioredis.from_url(REDIS)
    registry = Registry(redis, prefix=prefix)
    backend = S3Backend.from_settings(bucket=bucket, endpoint_url=aws, region="us-east-1")
    store = ArtifactStore(backend, key)
    sandbox = Sandbox(HostClients.for_dev(WorkerSettings(cache_dir=tmp)), cache_dir=tmp)
    deployer = Deployer(
        registry, store, compile=sandbox.compile, engine_fingerprint=sandbox.engine_fingerprint
    )
    await deployer.deploy(FunctionConfig("echo"), build_wat("echo"))
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flotilla", "worker", "--amqp-url", AMQP, "--redis-url", REDIS,
        "--aws-endpoint-url", aws, "--artifact-bucket", bucket, "--artifact-key", key,
        "--queue-prefix", prefix, "--cache-dir", f"{tmp}/w",
        "--concurrency", os.environ.get("WCONC", "2"),
        "--prefetch", os.environ.get("PREFETCH", "0"), "--metrics-port", "0",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )
    await wait_line(worker.stderr, b"worker processes consuming")
    queue = f"bare-{uuid.uuid4().hex[:8]}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.bare_echo", "serve", AMQP, queue,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    await wait_line(server.stdout, b"ready")
    beam = broker_pid()
    async with BareEchoClient(AMQP, queue) as bare, Client(
        AMQP, queue_prefix=prefix, redis_url=REDIS
    ) as client:
        systems = (
            ("bare-aio-pika-echo", lambda: bare.call(b"ping"), server.pid),
            ("flotilla-client", lambda: client.invoke("echo", b"ping"), worker.pid),
        )
        for _ in range(rounds):
            for name, call, pid in systems:
                c0, s0, b0 = time.process_time(), cpu_seconds(pid), cpu_seconds(beam)
                result = await closed_loop(name, call, concurrency=conc, requests=calls, warmup=20)
                c1, s1, b1 = time.process_time(), cpu_seconds(pid), cpu_seconds(beam)
                s = result.summary()
                print(
                    f"{name:20} rps={s['rps']:7} p50={s['p50_ms']}ms p99={s['p99_ms']}ms "
                    f"errors={s['errors']} cpu us/call: client={(c1 - c0) / calls * 1e6:.0f} "
                    f"server={(s1 - s0) / calls * 1e6:.0f} broker={(b1 - b0) / calls * 1e6:.0f}",
                    flush=True,
                )
    server.terminate()
    worker.terminate()
    await server.wait()
    await worker.wait()
    connection = await aio_pika.connect(AMQP)
    async with connection:
        await Topology(prefix).delete(await connection.channel(), TEST_FUNCTIONS)
    await redis.aclose()
    sandbox.close()


if __name__ == "__main__":
    with moto_server() as endpoint:
        asyncio.run(main(endpoint))
