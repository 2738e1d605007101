"""A real Flotilla on this machine for load runs: a dispatcher process and N worker processes.

Each fleet gets its own queue prefix and artifact bucket (so runs never meet other users of
the shared RabbitMQ and Redis), starts a moto server for S3 unless given an endpoint, and
deletes its queues when it stops. `DevFleet` is the same surface over `flotilla dev`'s
in-process stack (MemoryTransport), reached through ASGI.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

ROOT = Path(__file__).resolve().parents[1]
GUESTS = {
    "echo": ROOT / "examples" / "echo" / "app.py",
    "probe": ROOT / "tests" / "guests" / "python" / "probe" / "app.py",
}
# Every guest is deployed under its own name with room for the 1 MiB payload scenario.
FUNCTION_CONFIG: dict[str, Any] = {"max_body_bytes": 2 * 1024 * 1024, "timeout_ms": 30_000}


class FleetError(RuntimeError):
    """A fleet process did not start or a deploy failed."""


def children_of(pid: int) -> set[int]:
    """The live child processes of `pid` (from /proc; empty where it is gone)."""
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll `url` until it answers 200 (polling: the process gives no other readiness signal)."""
    end = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < end:
            if proc is not None and proc.poll() is not None:
                raise FleetError(f"process for {url} exited with status {proc.returncode}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise FleetError(f"{url} not ready after {timeout:.0f} s")


async def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll until 127.0.0.1:`port` accepts connections."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise FleetError(f"process for port {port} exited with status {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise FleetError(f"nothing listens on port {port} after {timeout:.0f} s")


def build_guests(names: Iterable[str]) -> dict[str, bytes]:
    """Component bytes of the named guests (built once per content, cached)."""
    from flotilla.build import build_guest

    return {name: build_guest(GUESTS[name]).read_bytes() for name in names}


@dataclass
class Fleet:
    """A dispatcher and `workers` workers (each a supervisor of `processes` worker processes)
    on the real RabbitMQ and Redis."""

    workers: int = 1
    concurrency: int = 0
    processes: int = 0  # worker processes per `flotilla worker` (0: its default)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    aws_endpoint_url: str | None = None
    log_dir: Path | None = None
    log_level: str = "WARNING"
    prefix: str = field(default_factory=lambda: f"lt{uuid.uuid4().hex[:10]}")
    base_url: str = ""
    worker_ports: list[int] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _moto: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        env.update({
            "FLOTILLA_AMQP_URL": self.amqp_url,
            "FLOTILLA_REDIS_URL": self.redis_url,
            "FLOTILLA_AWS_ENDPOINT_URL": self.aws_endpoint_url or "",
            "FLOTILLA_ARTIFACT_BUCKET": self.prefix,
            "FLOTILLA_ARTIFACT_KEY": f"loadtest-{self.prefix}",
            "FLOTILLA_QUEUE_PREFIX": self.prefix,
            "FLOTILLA_LOG_LEVEL": self.log_level,
            "FLOTILLA_LOG_FORMAT": "json",
        })
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "flotilla", *args], env=self._env(), stdout=out,
            stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self._procs.append(proc)
        return proc

    async def start(self) -> None:
        """Start moto (if needed), the dispatcher and the workers; wait until all are ready."""
        if self.aws_endpoint_url is None:
            port = free_port()
            self._moto = subprocess.Popen(  # noqa: ASYNC220 - Popen starts it, never waits
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            self.aws_endpoint_url = f"http://127.0.0.1:{port}"
            await wait_port(port, self._moto, 30)
        import boto3

        boto3.client("s3", endpoint_url=self.aws_endpoint_url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=self.prefix)
        api_port = free_port()
        self.base_url = f"http://127.0.0.1:{api_port}"
        dispatcher = self._spawn(
            "dispatcher", ["dispatcher", "--listen", f"127.0.0.1:{api_port}", "--insecure"]
        )
        ready = [wait_ready(f"{self.base_url}/readyz", dispatcher, 60)]
        for i in range(self.workers):
            port = free_port()
            self.worker_ports.append(port)
            args = ["worker", "--metrics-port", str(port), "--drain-timeout-s", "5"]
            if self.concurrency:
                args += ["--concurrency", str(self.concurrency)]
            if self.processes:
                args += ["--processes", str(self.processes)]
            proc = self._spawn(f"worker{i}", args)
            self._workers.append(proc)
            ready.append(wait_ready(f"http://127.0.0.1:{port}/readyz", proc, 60))
        try:
            await asyncio.gather(*ready)
        except FleetError as exc:
            await self.stop()
            raise FleetError(f"{exc}\n{self.log_tail()}") from None
        except BaseException:
            await self.stop()
            raise

    def worker_pids(self) -> list[int]:
        """Process ids of the `flotilla worker` supervisors, in start order."""
        return [proc.pid for proc in self._workers]

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of each process's log (for errors), when logging to files."""
        if self.log_dir is None:
            return "(run with log_dir to keep the processes' output)"
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(line[:500] for line in tail))
        return "\n".join(out)

    async def deploy(self, components: dict[str, bytes]) -> None:
        """Deploy each component under its name (idempotent)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=120) as client:
            await deploy_all(client, components)

    async def stop(self) -> None:
        """SIGTERM every process (workers drain), then delete this fleet's queues."""
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()
        self._workers.clear()
        if self._moto is not None:
            self._moto.terminate()
            await asyncio.to_thread(self._moto.wait, 10)
            self._moto = None
        await delete_queues(self.amqp_url, self.prefix, self.redis_url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def deploy_all(client: httpx.AsyncClient, components: dict[str, bytes]) -> None:
    """PUT each component to /v1/functions/{name}."""
    for name, wasm in components.items():
        resp = await client.put(
            f"/v1/functions/{name}", files={"component": ("f.wasm", wasm)},
            data={"config": json.dumps(FUNCTION_CONFIG)},
        )
        if resp.status_code not in (200, 201):
            raise FleetError(f"deploy of {name} failed: {resp.status_code} {resp.text}")


async def delete_queues(amqp_url: str, prefix: str, redis_url: str | None = None) -> None:
    """Delete the queues and exchange of `prefix`, with the job lane of every function its
    registry (at `redis_url`) names: read before the prefix's Redis keys go."""
    import aio_pika

    from flotilla.topology import Topology

    functions = await registry_names(redis_url, prefix) if redis_url else []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await Topology(prefix).delete(await connection.channel(), functions)


async def registry_names(redis_url: str, prefix: str) -> list[str]:
    """The functions deployed under `prefix` (each has a job lane: flotilla/topology.py)."""
    import redis.asyncio as aioredis

    from flotilla.registry import Registry

    client = aioredis.from_url(redis_url)
    try:
        return await Registry(client, prefix=prefix).names()
    finally:
        await client.aclose()


@dataclass
class DevFleet:
    """`flotilla dev`'s stack in this process (MemoryTransport, fakeredis), called over ASGI."""

    cache_dir: str | None = None
    concurrency: int = 4
    base_url: str = "http://dev"
    _stack: Any = None

    async def start(self) -> None:
        """Build and start the dev stack."""
        from flotilla.dev.stack import build_dev
        from flotilla.settings import DispatcherSettings

        overrides: dict[str, Any] = {"cache_dir": self.cache_dir} if self.cache_dir else {}
        settings = DispatcherSettings.from_env(insecure=True, **overrides)
        self._stack = build_dev(
            settings, loop=asyncio.get_running_loop(), concurrency=self.concurrency
        )
        await self._stack.start()

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into the dev app."""
        return httpx.ASGITransport(app=self._stack.app)

    async def deploy(self, components: dict[str, bytes]) -> None:
        """Deploy each component under its name."""
        async with httpx.AsyncClient(transport=self.transport(), base_url=self.base_url,
                                     timeout=120) as client:
            await deploy_all(client, components)

    async def stop(self) -> None:
        """Close the stack."""
        if self._stack is not None:
            await self._stack.close()
            self._stack = None
