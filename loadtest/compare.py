"""Side-by-side comparisons measured in one run on one machine.

- `compare`: Flotilla (HTTP API and Python client, trivial echo guest) vs Celery (RabbitMQ
  broker, rpc backend, trivial task) vs the bare aio-pika RPC echo, closed loop at each
  concurrency; ratios are against the bare echo of the same concurrency.
- `scale`: the same scenario against 1 then 2 `flotilla worker --processes 1` (for worker
  processes under one supervisor, see `loadtest.procs`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from loadtest import scenarios
from loadtest.bare_echo import BareEchoClient
from loadtest.fleet import ROOT, Fleet, build_guests
from loadtest.runner import Call, RunResult, closed_loop
from loadtest.targets import ClientTarget, HttpTarget

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"


async def _spawn_ready(args: list[str], env: dict[str, str], marker: str,
                       timeout: float = 60) -> subprocess.Popen[bytes]:
    """Start a process and wait until a line containing `marker` appears on its output."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - Popen starts it, never waits
        args, env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    stdout = proc.stdout

    def wait_marker() -> None:
        for line in stdout:
            if marker.encode() in line:
                return
        raise RuntimeError(f"{args[:4]} exited before printing {marker!r}")

    await asyncio.wait_for(asyncio.to_thread(wait_marker), timeout)
    # Keep draining its output so the process never blocks on a full pipe.
    asyncio.get_running_loop().run_in_executor(None, lambda: [None for _ in stdout])
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _measure(name: str, call: Call, concurrency: int, duration_s: float) -> RunResult:
    # Warm up with the run's concurrency; a failing warm-up call shows in the run's errors.
    await asyncio.gather(*(call() for _ in range(max(5, concurrency))), return_exceptions=True)
    return await closed_loop(name, call, concurrency=concurrency, duration_s=duration_s)


async def _delete_queue(name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP)
    async with connection:
        await (await connection.channel()).queue_delete(name)


async def compare(concurrencies: list[int], duration_s: float, *, workers: int = 1,
                  celery_workers: int | None = None,
                  log: Callable[[str], None] = print) -> list[RunResult]:
    """Run every system at every concurrency; the results in order (bare first per level)."""
    tag = uuid.uuid4().hex[:8]
    bare_queue, celery_queue = f"lt-bare-{tag}", f"lt-celery-{tag}"
    env = dict(os.environ, LOADTEST_CELERY_QUEUE=celery_queue, FLOTILLA_AMQP_URL=AMQP)
    nproc = os.cpu_count() or 1
    results: list[RunResult] = []
    async with AsyncExitStack() as stack:
        log("starting bare echo, celery worker and flotilla fleet")
        bare = await _spawn_ready(
            [sys.executable, "-m", "loadtest.bare_echo", "serve", AMQP, bare_queue], env, "ready")
        stack.callback(_stop, bare)
        stack.push_async_callback(_delete_queue, bare_queue)
        from loadtest import celery_echo

        celery = await _spawn_ready(
            celery_echo.worker_argv(celery_queue, celery_workers or nproc),
            {**env, **celery_echo.worker_env(AMQP, celery_queue)}, celery_echo.READY)
        stack.callback(_stop, celery)
        stack.push_async_callback(_delete_queue, celery_queue)
        fleet = Fleet(workers=workers)
        await fleet.start()
        stack.push_async_callback(fleet.stop)
        await fleet.deploy(build_guests(["echo"]))
        echo = scenarios.get("echo")
        bare_client = await stack.enter_async_context(BareEchoClient(AMQP, bare_queue))
        client = ClientTarget(AMQP, REDIS, fleet.prefix)
        await client.start()
        stack.push_async_callback(client.close)
        for c in concurrencies:
            from loadtest.celery_echo import CeleryCaller

            http = HttpTarget(fleet.base_url, connections=c)
            celery_caller = CeleryCaller(c, celery_queue)
            systems: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("bare aio-pika echo", lambda: bare_client.call(b"hello")),
                ("celery (rpc backend)", lambda cc=celery_caller: cc.call("hello")),  # type: ignore[misc]
                ("flotilla python client", client.call(echo)),
                ("flotilla http api", http.call(echo)),
            ]
            try:
                for name, call in systems:
                    log(f"  c={c}: {name}")
                    results.append(await _measure(name, call, c, duration_s))
            finally:
                celery_caller.close()
                await http.close()
    return results


def ratio_rows(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per run with throughput and p50 relative to the bare echo at its concurrency."""
    base = {r.concurrency: r.summary() for r in results if r.name.startswith("bare")}
    rows = []
    for r in results:
        s = r.summary()
        b = base.get(r.concurrency)
        rows.append({
            "system": s["name"], "c": s["concurrency"], "rps": s["rps"], "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"], "errors": sum(s["errors"].values()) or 0,
            "rps_vs_bare": _ratio(s["rps"], b["rps"] if b else None),
            "p50_vs_bare": _ratio(s["p50_ms"], b["p50_ms"] if b else None),
        })
    return rows


def _ratio(value: float | None, base: float | None) -> str | None:
    if not value or not base:
        return None
    return f"{value / base:.2f}x"


async def scale(scenario: scenarios.Scenario, concurrency: int, duration_s: float,
                worker_counts: tuple[int, ...] = (1, 2), *, worker_concurrency: int = 0,
                log: Callable[[str], None] = print) -> list[RunResult]:
    """The scenario over HTTP against fleets of 1, then 2, worker processes."""
    components = build_guests(["echo", "probe"])
    results = []
    for n in worker_counts:
        log(f"  {n} worker process(es): {scenario.name} at c={concurrency}")
        async with Fleet(workers=n, processes=1, concurrency=worker_concurrency) as fleet:
            await fleet.deploy(components)
            http = HttpTarget(fleet.base_url, connections=concurrency)
            try:
                results.append(await _measure(f"{n} worker(s)", http.call(scenario),
                                              concurrency, duration_s))
            finally:
                await http.close()
    return results


def scale_rows(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per fleet size, throughput relative to the first."""
    first = results[0].summary()
    return [
        {"workers": s["name"], "c": s["concurrency"], "rps": s["rps"], "p50_ms": s["p50_ms"],
         "p99_ms": s["p99_ms"], "errors": sum(s["errors"].values()) or 0,
         "rps_vs_1": _ratio(s["rps"], first["rps"])}
        for s in (r.summary() for r in results)
    ]
