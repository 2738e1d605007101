"""CPU, page faults and parallel throughput of a Sandbox invocation loop (`flotilla bench sandbox`).

`counters()` reads the calling thread's rusage: every invocation runs on the thread that calls
`Sandbox.invoke` (wasm, host calls and the store teardown alike), so the deltas over a loop
are that loop's minor page faults and CPU time. `loop_rates()` runs the same loop in two
threads of one process and in two processes, measured back to back in the same run, beside
one thread alone.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.config import MAX_MAX_BODY_BYTES, FunctionConfig
from flotilla.sandbox.engine import EngineSettings
from flotilla.sandbox.sandbox import LoadedFunction, Sandbox, new_request

# RUSAGE_THREAD is Linux-only; elsewhere the process counters stand in (the bench loops run
# one invocation at a time, so only the epoch ticker adds to them).
_WHO = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
WARMUP = 30


@dataclass(frozen=True)
class Counters:
    """Minor faults and CPU seconds of the calling thread at one instant."""

    minflt: int
    user_s: float
    sys_s: float

    def per_call(self, later: Counters, calls: int) -> dict[str, float]:
        """Faults and CPU µs per call between this reading and `later`."""
        n = max(1, calls)
        return {
            "minflt_per_inv": (later.minflt - self.minflt) / n,
            "user_us_per_inv": (later.user_s - self.user_s) * 1e6 / n,
            "sys_us_per_inv": (later.sys_s - self.sys_s) * 1e6 / n,
        }


def counters() -> Counters:
    """The calling thread's minor page faults and user/system CPU time so far."""
    usage = resource.getrusage(_WHO)
    return Counters(usage.ru_minflt, usage.ru_utime, usage.ru_stime)


def _invoke_loop(sandbox: Sandbox, fn: LoadedFunction, n: int) -> tuple[float, float]:
    """Run `n` echo invocations; (start, end) on the system-wide monotonic clock."""
    config = FunctionConfig(name="bench", max_body_bytes=MAX_MAX_BODY_BYTES)
    request = new_request("bench", b"x")
    start = time.monotonic()
    for _ in range(n):
        result = sandbox.invoke(fn, config, request)
        if not result.ok:
            raise RuntimeError(f"bench invocation failed: {result.outcome}: {result.error}")
    return start, time.monotonic()


def _rate(spans: list[tuple[float, float]], per_span: int) -> float:
    """Invocations per second over the union of the spans."""
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return per_span * len(spans) / max(last - first, 1e-9)


def thread_rate(sandbox: Sandbox, fn: LoadedFunction, n: int, threads: int) -> float:
    """Invocations/s of `threads` threads sharing `sandbox`, `n` invocations each."""
    return thread_figures(sandbox, fn, n, threads)[0]


def thread_figures(
    sandbox: Sandbox, fn: LoadedFunction, n: int, threads: int
) -> tuple[float, float]:
    """(invocations/s, CPU µs per invocation) of `threads` threads sharing `sandbox`.

    The CPU per invocation is what contention shows in even when other processes share the
    machine: threads that fight over the address space burn more of it per invocation.
    """
    _invoke_loop(sandbox, fn, WARMUP)
    barrier = threading.Barrier(threads)
    spans: list[tuple[float, float]] = []
    cpu: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            before = counters()
            spans.append(_invoke_loop(sandbox, fn, n))
            after = counters()
            cpu.append(after.user_s + after.sys_s - before.user_s - before.sys_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
            errors.append(exc)
            barrier.abort()

    pool = [threading.Thread(target=worker, name=f"bench-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return _rate(spans, n), sum(cpu) * 1e6 / (n * threads)


def _process_main(
    cache_dir: str, wasm: bytes, settings: dict[str, Any], n: int, barrier: Any, out: Any
) -> None:
    """One child of `process_rate`: its own Sandbox, then the loop once every child is ready."""
    sandbox = Sandbox(None, cache_dir=cache_dir, engine_settings=EngineSettings(**settings))
    try:
        fn = sandbox.load(wasm)
        _invoke_loop(sandbox, fn, WARMUP)
        barrier.wait(timeout=120)
        out.put(_invoke_loop(sandbox, fn, n))
    except BaseException as exc:
        out.put(repr(exc))
        raise
    finally:
        sandbox.close()


def process_rate(
    cache_dir: str | Path, wasm: bytes, settings: EngineSettings, n: int, processes: int
) -> float:
    """Invocations/s of `processes` processes, one Sandbox and one thread each."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process running wasmtime threads
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    args = (str(cache_dir), wasm, dataclasses.asdict(settings), n, barrier, out)
    children = [ctx.Process(target=_process_main, args=args) for _ in range(processes)]
    for child in children:
        child.start()
    try:
        replies = [out.get(timeout=600) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
                child.join()
    failed = [r for r in replies if isinstance(r, str)]
    if failed:
        raise RuntimeError(f"bench child failed: {failed[0]}")
    return _rate(replies, n)


def loop_rates(
    cache_dir: str | Path, wasm: bytes, settings: EngineSettings | None, n: int
) -> dict[str, float]:
    """1 thread, 2 threads of one process, 2 processes: invocations/s of the same loop."""
    settings = settings or EngineSettings()
    sandbox = Sandbox(None, cache_dir=cache_dir, engine_settings=settings)
    try:
        fn = sandbox.load(wasm)
        one = thread_rate(sandbox, fn, n, 1)
        two = thread_rate(sandbox, fn, n, 2)
    finally:
        sandbox.close()
    return {
        "1thread_inv_per_s": one,
        "2thread_inv_per_s": two,
        "2proc_inv_per_s": process_rate(cache_dir, wasm, settings, n, 2),
    }
