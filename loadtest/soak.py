"""Soak: mixed traffic against a real fleet (dispatcher + two workers, RabbitMQ, Redis, moto)
for a bounded time, reporting throughput, outcomes by kind and the RSS of every process.

    flotilla bench soak --minutes 10

Traffic is a closed loop of `concurrency` callers; each call picks one kind by weight:
synchronous echo, async job (collected at the end: a job never finished is *lost*), cache
increment, outbound http to a local server, a failing guest (502 expected) and hostile
guests (CPU loop past its timeout: 504; memory bomb past its cap: 502; reading the
worker's environment: must see only its own). An outcome other than the kind's expected
one is an *unexpected error*. RSS is sampled at start, after warm-up and at the end; growth
after warm-up over `max_growth` of a process we started fails the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from flotilla.settings import WorkerSettings
from loadtest.fleet import children_of, registry_names

ROOT = Path(__file__).resolve().parents[1]
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"
PROBE_APP = ROOT / "tests" / "guests" / "python" / "probe" / "app.py"
# The supervisor's line once every worker process consumes (worker/supervisor.py).
WORKER_READY = b"worker processes consuming"
SECRET_ENV = "FLOTILLA_SOAK_SECRET"  # set in the workers' environment; no guest may see it


@dataclass(frozen=True)
class Kind:
    """One kind of call: its weight in the mix and what it sends."""

    name: str
    weight: int


KINDS = (
    Kind("sync", 40),
    Kind("job", 15),
    Kind("cache", 15),
    Kind("http", 10),
    Kind("failing", 8),
    Kind("hostile-env", 6),
    Kind("hostile-loop", 3),
    Kind("hostile-memory", 3),
)


@dataclass
class Plan:
    """How long and how hard to soak."""

    seconds: float
    concurrency: int = 8
    workers: int = 2
    worker_concurrency: int = 2
    warmup_fraction: float = 0.15
    max_growth: float = 0.10
    amqp_url: str = AMQP
    redis_url: str = REDIS
    aws_endpoint_url: str | None = None  # None: start a moto server


@dataclass
class Report:
    """What a soak run saw."""

    seconds: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)  # by kind
    expected: Counter[str] = field(default_factory=Counter)  # kind -> calls as expected
    unexpected: Counter[str] = field(default_factory=Counter)  # "kind: what" -> count
    jobs_accepted: int = 0
    jobs_done: int = 0
    jobs_lost: int = 0
    rss_kib: dict[str, list[int]] = field(default_factory=dict)  # process -> [start, warm, end]
    growth_over: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No unexpected errors, no lost jobs, no RSS growth over the limit."""
        return not self.unexpected and not self.jobs_lost and not self.growth_over

    def format(self) -> str:
        """Human-readable summary."""
        total = sum(self.calls.values())
        lines = [
            f"soak: {self.seconds:.0f} s, {total} calls, {total / max(self.seconds, 1e-9):.1f} calls/s",
            "calls by kind (as expected / total):",
        ]
        for k in KINDS:
            lines.append(f"  {k.name:15} {self.expected[k.name]:7} / {self.calls[k.name]}")
        lines.append(
            f"jobs: accepted {self.jobs_accepted}, completed {self.jobs_done}, "
            f"lost {self.jobs_lost}"
        )
        lines.append("unexpected errors: " + (json.dumps(dict(self.unexpected)) or "{}"))
        lines.append("RSS KiB (start / after warm-up / end, growth after warm-up):")
        for name, (start, warm, end) in self.rss_kib.items():
            growth = (end - warm) / warm * 100 if warm else 0.0
            lines.append(f"  {name:12} {start:8} {warm:8} {end:8}  {growth:+.1f}%")
        if self.growth_over:
            lines.append("RSS growth over the limit: " + ", ".join(self.growth_over))
        lines.append("verdict: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Upstream(BaseHTTPRequestHandler):
    """The local server the `http` calls reach: answers every GET with a small body."""

    def do_GET(self) -> None:
        body = b"upstream ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Fleet:
    """Real processes of a fleet: moto, dispatchers and workers, each logging to a file.

    Used by the soak and by the fault tests (tests/hardening/test_faults.py), which kill,
    restart and reroute single processes by name.
    """

    def __init__(
        self,
        amqp_url: str = AMQP,
        redis_url: str = REDIS,
        *,
        prefix: str | None = None,
        aws_endpoint_url: str | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.redis_url = redis_url
        self.prefix = prefix or f"soak{uuid.uuid4().hex[:8]}"
        self.dir = Path(tempfile.mkdtemp(prefix="flotilla-fleet-"))  # logs
        # Compiled artifacts are cached by content: a second run does not compile again.
        self.cache_dir = WorkerSettings.from_env().cache_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}  # dispatcher name -> base URL
        self.logs: dict[str, Path] = {}  # process name -> log of its latest start
        self.aws_endpoint_url = aws_endpoint_url
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="soak", AWS_SECRET_ACCESS_KEY="soak")

    @property
    def api(self) -> str:
        """Base URL of the first dispatcher."""
        return next(iter(self.urls.values()))

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        # One log per start, so a restarted process is judged by its own lines.
        self.logs[name] = self.dir / f"{name}.{len(list(self.dir.glob(name + '.*')))}.log"
        log = open(self.logs[name], "wb")  # noqa: SIM115 - the child keeps it
        self.procs[name] = subprocess.Popen(
            args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env or self.env
        )
        log.close()

    def _common(self, redis_url: str | None) -> list[str]:
        assert self.aws_endpoint_url is not None, "start_moto() first"
        return [
            "--amqp-url", self.amqp_url, "--redis-url", redis_url or self.redis_url,
            "--aws-endpoint-url", self.aws_endpoint_url,
            "--artifact-bucket", f"{self.prefix}-art", "--artifact-key", "soak-key",
            "--queue-prefix", self.prefix, "--cache-dir", self.cache_dir,
        ]  # fmt: skip

    def start_moto(self) -> None:
        """Start a moto server (S3 for artifacts) unless an endpoint was given."""
        if self.aws_endpoint_url is not None:
            return
        port = free_port()
        self._spawn(
            "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        )
        _wait_port(port, 30)
        self.aws_endpoint_url = f"http://127.0.0.1:{port}"

    def start_dispatcher(
        self, name: str = "dispatcher", *, redis_url: str | None = None, extra: tuple[str, ...] = ()
    ) -> str:
        """Start a dispatcher (auth off: --insecure); its base URL once it listens."""
        port = free_port()
        args = [sys.executable, "-m", "flotilla", "dispatcher", *self._common(redis_url)]
        args += ["--insecure", "--listen", f"127.0.0.1:{port}", *extra]
        self._spawn(name, args)
        self.urls[name] = f"http://127.0.0.1:{port}"
        try:
            _wait_port(port, 60, self.procs[name])
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; {name} printed: {self.log_tail(name)}") from None
        return self.urls[name]

    def start_worker(
        self,
        name: str,
        *,
        concurrency: int = 2,
        processes: int = 0,
        redis_url: str | None = None,
        wait: bool = True,
        extra: tuple[str, ...] = (),
    ) -> None:
        """Start a worker (a supervisor of `processes`, 0: its default); with `wait`, return
        once all its processes consume."""
        args = [sys.executable, "-m", "flotilla", "worker", *self._common(redis_url)]
        args += ["--metrics-port", "0", "--concurrency", str(concurrency), *extra]
        if processes:
            args += ["--processes", str(processes)]
        self._spawn(name, args, dict(self.env, **{SECRET_ENV: "worker-secret"}))
        if wait:
            self._wait_log(name, WORKER_READY, 60)

    def start(self, workers: int = 2, worker_concurrency: int = 2) -> None:
        """moto, one dispatcher and `workers` workers, each ready."""
        self.start_moto()
        self.start_dispatcher()
        for i in range(workers):
            self.start_worker(f"worker-{i}", concurrency=worker_concurrency, wait=False)
        for i in range(workers):
            self._wait_log(f"worker-{i}", WORKER_READY, 60)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to one process and reap it."""
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(30)

    def log_tail(self, name: str, size: int = 2000) -> str:
        """The end of one process's log."""
        return self.logs[name].read_bytes()[-size:].decode(errors="replace")

    def _wait_log(self, name: str, needle: bytes, timeout: float) -> None:
        end = time.monotonic() + timeout
        path = self.logs[name]
        while time.monotonic() < end:
            if needle in path.read_bytes():
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"{name} not ready: {path.read_bytes()[-2000:].decode(errors='replace')}"
        )

    def pids(self) -> dict[str, int]:
        """Process ids of the fleet by name (a worker's processes as `<name>.<i>`), plus this
        process as `soak`."""
        out = {name: p.pid for name, p in self.procs.items() if p.poll() is None}
        for name, pid in list(out.items()):  # a worker's processes run under its supervisor
            for i, child in enumerate(sorted(children_of(pid))):
                out[f"{name}.{i}"] = child
        out["soak"] = os.getpid()
        return out

    def stop(self) -> None:
        """Terminate every process (kill after 10 s) and delete the queues and keys."""
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        asyncio.run(self._clean_up())
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _clean_up(self) -> None:
        """Delete this run's queues and Redis keys (registry, jobs, the probe's cache)."""
        import redis.asyncio as aioredis

        from flotilla import amqp
        from flotilla.topology import Topology

        connection = await amqp.connect_robust(self.amqp_url)  # one URL or a cluster's
        async with connection:
            await Topology(self.prefix).delete(
                await connection.channel(), await registry_names(self.redis_url, self.prefix))
        redis = aioredis.from_url(self.redis_url)
        for pattern in (f"{self.prefix}:*", f"fn:{self.prefix}:*"):
            async for key in redis.scan_iter(match=pattern, count=1000):
                await redis.delete(key)
        await redis.aclose()


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and (proc is None or proc.poll() is None):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


async def deploy(client: httpx.AsyncClient, name: str, wasm: bytes, config: dict[str, Any]) -> None:
    """Deploy one function through the HTTP API."""
    r = await client.put(
        f"/v1/functions/{name}",
        files={"component": ("c.wasm", wasm, "application/wasm")},
        data={"config": json.dumps(config)},
        timeout=300,
    )
    if r.status_code not in (200, 201):
        raise RuntimeError(f"deploy {name}: {r.status_code} {r.text}")


class Traffic:
    """The callers: each call picks a kind and checks its expected outcome."""

    def __init__(self, client: httpx.AsyncClient, upstream: str, report: Report) -> None:
        self.client = client
        self.upstream = upstream
        self.report = report
        self.jobs: list[str] = []
        self._calls: dict[str, Callable[[], Awaitable[str | None]]] = {
            "sync": self._sync,
            "job": self._job,
            "cache": lambda: self._probe("probe", {"op": "cache.increment", "key": "n"}),
            "http": lambda: self._probe(
                "probe", {"op": "http.invoke", "url": f"{self.upstream}/x"}, "upstream ok"
            ),
            "failing": lambda: self._status("probe", {"op": "err"}, 502),
            "hostile-env": self._env,
            "hostile-loop": lambda: self._status("hostile", {"op": "loop"}, 504),
            "hostile-memory": lambda: self._status("greedy", {"op": "memory_bomb"}, 502),
        }
        self._names = [k.name for k in KINDS]
        self._weights = [k.weight for k in KINDS]

    async def one(self) -> None:
        """One call of a random kind, recorded in the report."""
        kind = random.choices(self._names, self._weights)[0]
        self.report.calls[kind] += 1
        try:
            problem = await self._calls[kind]()
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if problem is None:
            self.report.expected[kind] += 1
        else:
            self.report.unexpected[f"{kind}: {problem}"] += 1

    async def _sync(self) -> str | None:
        body = os.urandom(32).hex().encode()
        r = await self.client.post("/v1/functions/echo/invoke", content=body)
        if r.status_code != 200 or r.content != body:
            return f"status {r.status_code}"
        return None

    async def _job(self) -> str | None:
        r = await self.client.post("/v1/functions/echo/jobs", content=b"job")
        if r.status_code != 202:
            return f"status {r.status_code}"
        self.jobs.append(r.json()["job_id"])
        self.report.jobs_accepted += 1
        return None

    async def _post(self, fn: str, op: dict[str, Any]) -> httpx.Response:
        return await self.client.post(f"/v1/functions/{fn}/invoke", content=json.dumps(op))

    async def _probe(self, fn: str, op: dict[str, Any], contains: str = "") -> str | None:
        r = await self._post(fn, op)
        if r.status_code != 200:
            return f"status {r.status_code}"
        doc = r.json()
        if not doc.get("ok") or contains not in json.dumps(doc):
            return f"guest said {str(doc)[:80]}"
        return None

    async def _status(self, fn: str, op: dict[str, Any], status: int) -> str | None:
        r = await self._post(fn, op)
        return None if r.status_code == status else f"status {r.status_code}"

    async def _env(self) -> str | None:
        r = await self._post("probe", {"op": "env"})
        if r.status_code != 200:
            return f"status {r.status_code}"
        if SECRET_ENV in r.text or "AWS_SECRET_ACCESS_KEY" in r.text:
            return "worker environment leaked to the guest"
        return None

    async def collect_jobs(self, timeout: float) -> tuple[int, int]:
        """Wait for every accepted job to succeed: (completed, lost)."""
        end = time.monotonic() + timeout
        done = 0
        for job in self.jobs:
            while time.monotonic() < end:
                r = await self.client.get(f"/v1/jobs/{job}", params={"wait": 5}, timeout=30)
                status = r.json().get("status") if r.status_code == 200 else None
                if status not in ("queued", "running"):
                    done += status == "succeeded"
                    break
        return done, len(self.jobs) - done


async def _drive(plan: Plan, fleet: Fleet, upstream: str, report: Report) -> None:
    from flotilla.build import build_guest
    from flotilla.sandbox.guests import packaged

    limits = httpx.Limits(max_connections=plan.concurrency + 4)
    async with httpx.AsyncClient(base_url=fleet.api, timeout=60, limits=limits) as client:
        echo = packaged("echo", fleet.cache_dir)
        await deploy(client, "echo", echo, {"timeout_ms": 10_000})
        probe = build_guest(PROBE_APP).read_bytes()
        host = upstream.removeprefix("http://")
        await deploy(
            client,
            "probe",
            probe,
            {
                "timeout_ms": 10_000,
                "allowed_hosts": [host],
                "cache_namespace": fleet.prefix,
            },
        )
        await deploy(client, "hostile", probe, {"timeout_ms": 300})
        await deploy(client, "greedy", probe, {"timeout_ms": 10_000, "memory_limit_mb": 64})
        traffic = Traffic(client, upstream, report)
        pids = fleet.pids()
        samples: dict[str, list[int]] = {n: [rss_kib(p)] for n, p in pids.items()}
        began = time.monotonic()
        stop_at = began + plan.seconds
        warm_at = began + plan.seconds * plan.warmup_fraction

        async def caller() -> None:
            while time.monotonic() < stop_at:
                await traffic.one()

        async def sample_after_warmup() -> None:
            await asyncio.sleep(max(0.0, warm_at - time.monotonic()))
            for n, p in pids.items():
                samples[n].append(rss_kib(p))

        await asyncio.gather(sample_after_warmup(), *(caller() for _ in range(plan.concurrency)))
        report.seconds = time.monotonic() - began
        report.jobs_done, report.jobs_lost = await traffic.collect_jobs(120)
        for n, p in pids.items():
            samples[n].append(rss_kib(p))
        report.rss_kib = {n: s for n, s in samples.items() if len(s) == 3}
        for n, (_, warm, end) in report.rss_kib.items():
            if n != "moto" and warm and (end - warm) / warm > plan.max_growth:
                report.growth_over.append(n)  # moto's in-memory S3 is not ours to judge


def run_soak(plan: Plan) -> Report:
    """Start the fleet, drive the traffic, stop everything; the report says what happened."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    fleet = Fleet(plan.amqp_url, plan.redis_url, aws_endpoint_url=plan.aws_endpoint_url)
    report = Report()
    try:
        fleet.start(plan.workers, plan.worker_concurrency)
        asyncio.run(_drive(plan, fleet, f"http://127.0.0.1:{upstream.server_address[1]}", report))
    finally:
        fleet.stop()
        upstream.shutdown()
    return report
