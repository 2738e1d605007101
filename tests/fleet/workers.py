"""Supervised fake workers (`tests.fleet.fake_worker`) as subprocesses whose stdout lines,
children and metrics a test can await and read."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtest.fleet import children_of

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2  # delivery limit of these tests' topology (workers must declare the same)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def started(line: str) -> tuple[str, int]:
    """(invocation id, pid) of a `started <id> <pid>` line."""
    word, invocation_id, pid = line.split()
    assert word == "started", line
    return invocation_id, int(pid)


async def probe(port: int, path: str) -> httpx.Response:
    """GET `path` from a supervisor's probe port."""
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


class WorkerProcess:
    """A fake_worker supervisor subprocess whose stdout lines can be awaited."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.port = 0  # of the supervisor's /metrics, /healthz, /readyz
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        amqp_url: str,
        prefix: str,
        started: list[WorkerProcess],
        *,
        processes: int = 2,
        concurrency: int = 2,
        delivery_limit: int = LIMIT,
        prefetch: int = 0,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> WorkerProcess:
        """Start one; it is in `started` (for cleanup) before its readiness is awaited."""
        environ = dict(
            os.environ,
            FLOTILLA_AMQP_URL=amqp_url,
            FLOTILLA_QUEUE_PREFIX=prefix,
            FLOTILLA_WORKER_PROCESSES=str(processes),
            FLOTILLA_CONCURRENCY=str(concurrency),
            FLOTILLA_DRAIN_TIMEOUT_S="20",
            FLOTILLA_METRICS_PORT="0",
            FLOTILLA_PREFETCH=str(prefetch),
            **(env or {}),
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fleet.fake_worker", str(delivery_limit),
            cwd=ROOT, env=environ, stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(proc)
        started.append(worker)
        if wait:
            # Ready, or already gone (a `crash` delivery can beat the "ready" line).
            ready = asyncio.create_task(worker.ready.wait())
            exited = asyncio.create_task(proc.wait())
            done, _ = await asyncio.wait({ready, exited}, timeout=60,
                                         return_when="FIRST_COMPLETED")
            ready.cancel()
            exited.cancel()
            assert done, f"worker not ready; printed {list(worker.lines._queue)}"
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            # "ready" may be printed after the first delivery already started.
            line = raw.decode().strip()
            if line.startswith("ready "):
                self.port = int(line.split()[1])
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
        """Send `sig` (unless it exited) and return the exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def close(self) -> None:
        """Stop it if it runs: SIGTERM (so it removes its metrics directory), SIGKILL when it
        has not drained in 30 s (its processes then see their link close and exit)."""
        if self.proc.returncode is not None:
            return
        try:
            await self.stop(signal.SIGTERM, timeout=30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def children(self) -> set[int]:
        """The supervisor's worker processes now."""
        return children_of(self.proc.pid)

    async def get(self, path: str) -> httpx.Response:
        """GET `path` from the supervisor's probe port."""
        return await probe(self.port, path)

    async def until_ready(self, timeout: float = 30) -> None:
        """Poll /readyz until 200 (every process consumes again)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (await self.get("/readyz")).status_code != 200:
            assert loop.time() < end, "the worker did not become ready again"
            await asyncio.sleep(0.1)

    async def metrics(self) -> Samples:
        """One scrape of /metrics, every sample by (name, labels)."""
        resp = await self.get("/metrics")
        assert resp.status_code == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text)
            for s in family.samples
        }
