"""`flotilla bench e2e`: the whole path against RabbitMQ + Redis on this machine, beside a bare
aio-pika RPC echo and a Celery task measured in the same run.

It starts what it needs (a moto server for the artifact bucket, one `flotilla worker` with
its default settings, one `flotilla dispatcher`, the bare echo server, a Celery worker), all
under a unique queue prefix, deploys the chosen echo guest through the HTTP API (`wat`: the
trivial flotilla/sandbox/wat/echo.wat; `python`: examples/echo/app.py built with
componentize-py, cached by content), then drives, at concurrency 1 and 64 (closed loop):

- `bare`: `loadtest.bare_echo` (publish with reply_to + correlation id, a consumer replies);
- `http`: POST /v1/functions/echo/invoke over keep-alive HTTP/1.1 connections (a minimal
  client, so the figures measure the dispatcher rather than the load generator's HTTP stack);
- `client`: `flotilla.client.Client.invoke` (AMQP straight to the workers);
- `celery`: `loadtest.celery_echo`, a trivial task on the same RabbitMQ with the `rpc://`
  result backend and Celery's default worker (prefork, one process per CPU), the baseline of
  `python -m loadtest compare` too. Celery comes with the `loadtest` extra; without it (or
  with `Plan.celery` off) the celery figures are None and `celery_skipped` says why.

Afterwards it stops the processes and deletes its queues and Redis keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest.fleet import build_guests, children_of, registry_names
from loadtest.runner import closed_loop

ROOT = Path(__file__).resolve().parents[1]
FUNCTION = "echo"
BODY = b"ping"
GUESTS = ("wat", "python")
SYSTEMS = ("bare", "http", "client", "celery")


@dataclass(frozen=True)
class Plan:
    """How many calls each run makes (after `warmup` calls), and the worker's concurrency."""

    c1_requests: int = 1_000
    c64_requests: int = 6_000
    warmup: int = 50
    worker_concurrency: int = 0  # 0: the worker's default (2 per process, one process per CPU)
    worker_prefetch: int = 0  # 0: the worker's default (2 x concurrency)
    concurrency: int = 64
    rounds: int = 3  # interleaved c64 rounds per system
    guest: str = "wat"  # one of GUESTS
    celery: bool = True  # measure the Celery baseline (when Celery is installed)

    def __post_init__(self) -> None:
        if self.guest not in GUESTS:
            raise ValueError(f"guest must be one of {', '.join(GUESTS)}, got {self.guest!r}")


QUICK = Plan(c1_requests=20, c64_requests=200, warmup=5, rounds=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_line(stream: asyncio.StreamReader | None, needle: bytes, timeout: float) -> None:
    assert stream is not None

    async def read() -> None:
        async for line in stream:
            if needle in line:
                return
        raise RuntimeError(f"process exited before printing {needle!r}")

    await asyncio.wait_for(read(), timeout)


async def _drain(stream: asyncio.StreamReader | None, tail: list[bytes] | None = None) -> None:
    # Keep reading a child's pipe so it never blocks on a full one (keeping the last lines).
    if stream is not None:
        async for line in stream:
            if tail is not None:
                tail.append(line)
                del tail[:-30]


@asynccontextmanager
async def _process(
    argv: list[str], ready: bytes | int, env: dict[str, str], timeout: float = 60
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run `argv` until the block exits; ready once its output shows `ready` (bytes) or it
    listens on port `ready` (int)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    drainer: asyncio.Task[None] | None = None
    try:
        if isinstance(ready, bytes):
            await _wait_line(proc.stdout, ready, timeout)
            drainer = asyncio.create_task(_drain(proc.stdout))
        else:
            tail: list[bytes] = []
            drainer = asyncio.create_task(_drain(proc.stdout, tail))
            listening = asyncio.ensure_future(_wait_port(ready, timeout))
            exited = asyncio.ensure_future(proc.wait())
            await asyncio.wait({listening, exited}, return_when=asyncio.FIRST_COMPLETED)
            exited.cancel()
            if not listening.done():
                listening.cancel()
                await drainer
                output = b"".join(tail[-30:]).decode(errors="replace")
                raise RuntimeError(f"{argv[2:4]} exited with {proc.returncode}:\n{output}")
            listening.result()
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drainer is not None:
            drainer.cancel()


class HttpStatusError(RuntimeError):
    """A non-200 answer; the load runner counts it by status and problem type."""

    def __init__(self, status: int, body: bytes) -> None:
        try:
            kind = str(json.loads(body).get("type", "")).rsplit(":", 1)[-1]
        except (ValueError, AttributeError):
            kind = ""
        self.problem_type = f"http_{status}" + (f"_{kind}" if kind else "")
        super().__init__(self.problem_type)


class HttpClient:
    """Minimal keep-alive HTTP/1.1 POST client: one connection per lane, reused."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port = host, port
        self.request = (
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/octet-stream\r\ncontent-length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def call(self) -> bytes:
        """One POST; raises on a non-200 status."""
        if self._idle:
            reader, writer = self._idle.pop()
            writer.write(self.request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed the idle connection (keep-alive timeout between rounds).
                writer.close()
                reader, writer = await self._connect()
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
        else:
            reader, writer = await self._connect()
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await reader.readexactly(length) if length else b""
        self._idle.append((reader, writer))
        if status != 200:
            raise HttpStatusError(status, body)
        return body

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._all.append(writer)
        return reader, writer

    async def close(self) -> None:
        """Close every connection."""
        for writer in self._all:
            writer.close()


async def _http_json(
    host: str, port: int, method: str, path: str, body: bytes, content_type: str
) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            (
                f"{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n"
                f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        data = await reader.read()
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head[9:12]), rest


async def _deploy(host: str, port: int, wasm: bytes) -> None:
    boundary = uuid.uuid4().hex
    parts = (
        f"--{boundary}\r\ncontent-disposition: form-data; name=\"component\"; "
        "filename=\"echo.wasm\"\r\ncontent-type: application/wasm\r\n\r\n"
    ).encode() + wasm + (
        f"\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"config\"\r\n\r\n"
        "{}\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    status, body = await _http_json(
        host, port, "PUT", f"/v1/functions/{FUNCTION}", parts,
        f"multipart/form-data; boundary={boundary}",
    )
    if status not in (200, 201):
        raise RuntimeError(f"deploy failed with {status}: {body[:500]!r}")


def _moto(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            await asyncio.sleep(0.05)  # polling a port: the child offers no event to await


def guest_component(guest: str, cache_dir: str) -> bytes:
    """The echo component of `guest`: the packaged WAT echo, or the Python echo example built
    with componentize-py (cached by content, so only the first run pays the ~13 s build)."""
    if guest == "python":
        return build_guests(["echo"])["echo"]
    from flotilla.sandbox.guests import packaged

    return packaged(FUNCTION, cache_dir)


def celery_missing() -> str | None:
    """Why the Celery baseline cannot run here, or None when it can."""
    try:
        import celery  # noqa: F401 - the loadtest extra; imported here to find out
    except ImportError as exc:
        return f"celery cannot be imported ({exc}); pip install 'flotilla[loadtest]'"
    return None


async def _delete_celery_queue(amqp_url: str, queue: str) -> None:
    # The task queue and the direct exchange of the same name that Celery declared for it.
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(queue)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 when unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` of this machine, from /proc (None when unknown).

    Other RabbitMQ nodes may run beside the machine's own (cluster tests), so the broker is
    found by the port it serves rather than by its name."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    # A worker is a supervisor and its worker processes: its CPU is theirs together.
    return {name: cpu_seconds(pid) + sum(cpu_seconds(c) for c in children_of(pid))
            for name, pid in pids.items()}


# Where a synchronous call's time goes, from the processes' own Prometheus histograms
# (means over a run: `_sum` and `_count` deltas): stage -> (process, metric, label filter).
STAGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "dispatcher_request": (
        "dispatcher", "flotilla_http_request_duration_seconds",
        {"route": "/v1/functions/{name}/invoke"},
    ),
    "publish_to_reply": ("dispatcher", "flotilla_reply_latency_seconds", {}),
    "publish_to_worker_start": ("worker", "flotilla_queue_wait_seconds", {}),
    "worker_delivery_to_reply": ("worker", "flotilla_invocation_duration_seconds", {}),
}
Snapshot = dict[str, tuple[float, float]]  # stage -> (sum of seconds, count)


async def _scrape(urls: dict[str, str]) -> Snapshot:
    """Every stage's histogram sum and count, read from each process's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    texts: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=5) as http:
        for process, url in urls.items():
            texts[process] = (await http.get(url)).text
    out: Snapshot = {}
    for stage, (process, metric, labels) in STAGES.items():
        total = count = 0.0
        for family in text_string_to_metric_families(texts.get(process, "")):
            for sample in family.samples:
                if not all(sample.labels.get(k) == v for k, v in labels.items()):
                    continue
                if sample.name == f"{metric}_sum":
                    total += sample.value
                elif sample.name == f"{metric}_count":
                    count += sample.value
        out[stage] = (total, count)
    return out


def stage_means(before: Snapshot, after: Snapshot) -> dict[str, float | None]:
    """Mean milliseconds per observation of each stage between two snapshots (None: none)."""
    means: dict[str, float | None] = {}
    for stage, (total, count) in after.items():
        prior_total, prior_count = before.get(stage, (0.0, 0.0))
        n = count - prior_count
        means[stage] = round((total - prior_total) / n * 1000, 3) if n > 0 else None
    return means


async def _measure(
    calls: dict[str, Callable[[], Awaitable[Any]]],
    plan: Plan,
    results: dict[str, Any],
    pids: dict[str, int] | None = None,
    metrics: dict[str, str] | None = None,
) -> None:
    """c1 of each system, then `plan.rounds` interleaved c64 rounds of each (a neighbour's
    load then hits every system alike); the c64 figure is the round with the median rps.
    With `metrics` (process -> /metrics URL), each Flotilla c1 run also gets the mean time of
    each of its STAGES."""
    for name, call in calls.items():
        for _ in range(plan.warmup):
            await call()
        staged = metrics is not None and name in ("http", "client")
        snapshot = await _scrape(metrics) if metrics and staged else {}
        run = await closed_loop(f"{name}_c1", call, concurrency=1, requests=plan.c1_requests)
        results[f"{name}_c1"] = run.summary()
        if metrics and staged:
            stages = stage_means(snapshot, await _scrape(metrics))
            stages["call"] = results[f"{name}_c1"]["mean_ms"]  # as the caller saw it
            results[f"{name}_c1"]["stages_ms"] = stages
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in calls}
    cpu: dict[str, dict[str, float]] = {name: {} for name in calls}
    pids = pids or {}
    per_round = max(1, plan.c64_requests // plan.rounds)
    for _ in range(plan.rounds):
        for name, call in calls.items():
            before = _cpu(pids)
            run = await closed_loop(
                f"{name}_c64", call, concurrency=plan.concurrency, requests=per_round
            )
            after = _cpu(pids)
            for proc in pids:
                cpu[name][proc] = cpu[name].get(proc, 0.0) + after[proc] - before[proc]
            rounds[name].append(run.summary())
    for name, summaries in rounds.items():
        ordered = sorted(summaries, key=lambda s: s["rps"])
        median = dict(ordered[(len(ordered) - 1) // 2])
        median["rounds_rps"] = [s["rps"] for s in summaries]
        median["requests"] = sum(s["requests"] for s in summaries)
        median["ok"] = sum(s["ok"] for s in summaries)
        median["errors"] = {k: v for s in summaries for k, v in s["errors"].items()}
        # CPU per call of each process: robust to a busy machine, unlike throughput.
        median["cpu_us_per_call"] = {
            proc: round(seconds / median["requests"] * 1e6) for proc, seconds in cpu[name].items()
        }
        results[f"{name}_c64"] = median


async def run_e2e(
    plan: Plan = Plan(),
    *,
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/",
    redis_url: str = "redis://127.0.0.1:6379/0",
) -> dict[str, Any]:
    """Start everything, measure bare/http/client at concurrency 1 and 64, clean up."""
    import aio_pika
    import redis.asyncio as aioredis

    from flotilla.client import Client
    from flotilla.topology import Topology
    from loadtest.bare_echo import BareEchoClient

    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    tmp = tempfile.mkdtemp(prefix="flotilla-e2e-")
    moto_port, http_port = _free_port(), _free_port()
    aws = f"http://127.0.0.1:{moto_port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
        "FLOTILLA_AMQP_URL": amqp_url,
        "FLOTILLA_REDIS_URL": redis_url,
        "FLOTILLA_AWS_ENDPOINT_URL": aws,
        "FLOTILLA_ARTIFACT_BUCKET": f"{prefix}-artifacts",
        "FLOTILLA_ARTIFACT_KEY": f"{prefix}-key",
        "FLOTILLA_QUEUE_PREFIX": prefix,
        "FLOTILLA_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    flotilla = [sys.executable, "-m", "flotilla"]
    bare_queue, celery_queue = f"{prefix}.bare", f"{prefix}.celery"
    results: dict[str, Any] = {
        "prefix": prefix,
        "guest": plan.guest,
        "load_average": list(os.getloadavg()),
        "celery_skipped": None if plan.celery else "not requested",
    }
    if plan.celery and (missing := celery_missing()) is not None:
        results["celery_skipped"] = missing
    moto = _moto(moto_port)
    try:
        async with AsyncExitStack() as stack:
            await _wait_port(moto_port, 30)
            wasm = guest_component(plan.guest, tmp)
            dispatcher = await stack.enter_async_context(
                _process(
                    [*flotilla, "dispatcher", "--listen", f"127.0.0.1:{http_port}",
                     "--cache-dir", f"{tmp}/d", "--insecure"],
                    http_port, env,  # log level WARNING: no access log line per request
                )
            )
            await _deploy("127.0.0.1", http_port, wasm)
            metrics_port = _free_port()
            worker_args = ["--cache-dir", f"{tmp}/w", "--metrics-port", str(metrics_port),
                           "--log-level", "INFO"]
            if plan.worker_concurrency:
                worker_args += ["--concurrency", str(plan.worker_concurrency)]
            if plan.worker_prefetch:
                worker_args += ["--prefetch", str(plan.worker_prefetch)]
            worker = await stack.enter_async_context(
                _process([*flotilla, "worker", *worker_args], b"worker processes consuming",
                         env)
            )
            bare_server = await stack.enter_async_context(
                _process(
                    [sys.executable, "-m", "loadtest.bare_echo", "serve", amqp_url, bare_queue],
                    b"ready", env,
                )
            )
            bare = await stack.enter_async_context(BareEchoClient(amqp_url, bare_queue))
            http = HttpClient("127.0.0.1", http_port, f"/v1/functions/{FUNCTION}/invoke")
            stack.push_async_callback(http.close)
            client = await stack.enter_async_context(
                Client(amqp_url, queue_prefix=prefix, redis_url=redis_url)
            )
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "bare": lambda: bare.call(BODY),
                "http": http.call,
                "client": lambda: client.invoke(FUNCTION, BODY),
            }
            pids = {
                "bench": os.getpid(),
                "dispatcher": dispatcher.pid,
                "worker": worker.pid,
                "bare_server": bare_server.pid,
            }
            if results["celery_skipped"] is None:
                from loadtest import celery_echo

                stack.push_async_callback(_delete_celery_queue, amqp_url, celery_queue)
                celery_worker = await stack.enter_async_context(
                    _process(
                        celery_echo.worker_argv(celery_queue, os.cpu_count() or 1),
                        celery_echo.READY.encode(),
                        {**env, **celery_echo.worker_env(amqp_url, celery_queue)},
                    )
                )
                celery = celery_echo.CeleryCaller(plan.concurrency, celery_queue, amqp_url)
                stack.callback(celery.close)
                celery_body = BODY.decode()
                calls["celery"] = lambda: celery.call(celery_body)
                pids["celery_worker"] = celery_worker.pid
            if (broker := _listening_pid(urlsplit(amqp_url).port or 5672)) is not None:
                pids["broker"] = broker
            metrics = {
                "dispatcher": f"http://127.0.0.1:{http_port}/metrics",
                "worker": f"http://127.0.0.1:{metrics_port}/metrics",
            }
            await _measure(calls, plan, results, pids, metrics)
    finally:
        moto.terminate()
        moto.wait(10)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await Topology(prefix).delete(channel, await registry_names(redis_url, prefix))
            await channel.queue_delete(bare_queue)
        redis = aioredis.from_url(redis_url)
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
    results["load_average_after"] = list(os.getloadavg())
    return results


# Issue 10 §4's targets per guest: (figure, "<=" or ">=", bound). A figure is a headline key.
TARGETS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "wat": (
        ("http_vs_bare_c1_p50", "<=", 1.5),
        ("client_vs_bare_c1_p50", "<=", 1.3),
        ("http_vs_bare_c64", ">=", 0.7),
        ("client_vs_bare_c64", ">=", 1.0),
    ),
    "python": (
        ("http_vs_celery_c64", ">=", 1.2),
        ("http_vs_bare_c64", ">=", 0.4),
        ("http_c1_p50_ms", "<=", 3.0),
    ),
}


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value and base else None


def _figure(results: dict[str, Any], run: str, field: str) -> float | None:
    summary = results.get(run)
    return summary[field] if summary is not None else None


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures `--json` prints: c1 p50 and c64 throughput of every system (None for a
    system that did not run), their ratios to the bare echo and to Celery, the targets."""
    out: dict[str, Any] = {"guest": results.get("guest", "wat")}
    for system in SYSTEMS:
        out[f"{system}_c1_p50_ms"] = _figure(results, f"{system}_c1", "p50_ms")
        out[f"{system}_c64_rps"] = _figure(results, f"{system}_c64", "rps")
    # Throughput ratios above 1 and latency ratios below 1 favour Flotilla.
    for system in ("http", "client"):
        for base in ("bare", "celery"):
            out[f"{system}_vs_{base}_c64"] = _ratio(
                out[f"{system}_c64_rps"], out[f"{base}_c64_rps"])
            out[f"{system}_vs_{base}_c1_p50"] = _ratio(
                out[f"{system}_c1_p50_ms"], out[f"{base}_c1_p50_ms"])
    out["targets"] = {
        key: {"value": out[key], "target": f"{op} {bound}",
              "met": None if out[key] is None
              else out[key] <= bound if op == "<=" else out[key] >= bound}
        for key, op, bound in TARGETS[out["guest"]]
    }
    out["c1_stages_ms"] = {
        system: results[f"{system}_c1"].get("stages_ms")
        for system in ("http", "client") if f"{system}_c1" in results
    }
    out["celery_skipped"] = results.get("celery_skipped")
    out["load_average"] = results["load_average"]
    out["load_average_after"] = results.get("load_average_after")
    out["prefix"] = results["prefix"]
    c64 = {k: v for k, v in results.items() if k.endswith("_c64")}
    out["rounds_rps"] = {k: v.get("rounds_rps") for k, v in c64.items()}
    out["cpu_us_per_call"] = {k: v.get("cpu_us_per_call") for k, v in c64.items()}
    out["errors"] = {
        k: v["errors"] for k, v in results.items() if isinstance(v, dict) and v.get("errors")
    }
    runs = {k: v for k, v in results.items() if isinstance(v, dict) and "requests" in v}
    out["requests"] = {k: v["requests"] for k, v in runs.items()}
    out["ok"] = {k: v["ok"] for k, v in runs.items()}
    return out


def format_table(results: dict[str, Any]) -> str:
    """A human-readable table of every run, the ratios and the targets."""
    h = headline(results)
    lines = [
        (f"guest: {h['guest']}; load average before {h['load_average']}, "
         f"after {h['load_average_after']}"),
        f"{'run':12} {'requests':>8} {'ok':>6} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8}  rounds rps",
    ]
    for name in [f"{s}_c{c}" for c in (1, 64) for s in SYSTEMS]:
        r = results.get(name)
        if r is None:
            continue
        lines.append(
            f"{name:12} {r['requests']:>8} {r['ok']:>6} {r['rps']:>8} "
            f"{r['p50_ms']!s:>8} {r['p99_ms']!s:>8}  {r.get('rounds_rps', '')}"
        )
    if h["celery_skipped"]:
        lines.append(f"celery: skipped ({h['celery_skipped']})")
    for system in ("http", "client"):
        lines.append(
            f"{system}: c64 rps {h[f'{system}_vs_bare_c64']}x bare, "
            f"{h[f'{system}_vs_celery_c64']}x celery; c1 p50 {h[f'{system}_vs_bare_c1_p50']}x "
            f"bare, {h[f'{system}_vs_celery_c1_p50']}x celery"
        )
    for system, stages in h["c1_stages_ms"].items():
        if stages:
            lines.append(f"{system} c1, mean ms per stage: {json.dumps(stages)}")
    for key, target in h["targets"].items():
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        lines.append(f"target {key} {target['target']}: {target['value']} ({met})")
    for name in [f"{s}_c64" for s in SYSTEMS]:
        if name in results:
            lines.append(f"cpu us/call {name}: {results[name].get('cpu_us_per_call')}")
    if h["errors"]:
        lines.append(f"errors: {json.dumps(h['errors'])}")
    return "\n".join(lines)
