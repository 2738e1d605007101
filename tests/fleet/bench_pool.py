"""Per-call cost of `InvocationPool.handle` beside `loop.run_in_executor` (the baseline it
replaced), fake runner, same run: `PYTHONPATH=. .venv/bin/python tests/fleet/bench_pool.py`."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from tests.fleet.fakes import FakeRunner, envelope
from worker.executor import InvocationPool
from worker.handler import EnvelopeHandler

CALLS = 3000


async def main() -> None:
    """Print the median microseconds per call of each way, one caller and four at once."""
    handler = EnvelopeHandler(FakeRunner(), job_results="j")
    body = envelope("echo", reply_to_queue="q").encode()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(4) as executor:
        pool = InvocationPool(handler, executor, max_abandoned=4)

        async def baseline() -> None:
            for _ in range(CALLS):
                await loop.run_in_executor(executor, handler.handle, body, 0, None)

        async def pooled() -> None:
            for _ in range(CALLS):
                await pool.handle(body, 0, None)

        ways: dict[str, tuple[Callable[[], Awaitable[None]], int]] = {
            "run_in_executor": (baseline, 1),
            "InvocationPool": (pooled, 1),
            "run_in_executor x4": (baseline, 4),
            "InvocationPool x4": (pooled, 4),
        }
        results: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(5):
            for name, (way, callers) in ways.items():
                began = time.perf_counter()
                await asyncio.gather(*(way() for _ in range(callers)))
                results[name].append((time.perf_counter() - began) / (callers * CALLS) * 1e6)
    for name, runs in results.items():
        print(f"{name:20s} median {statistics.median(runs):6.1f} us/call")


if __name__ == "__main__":
    asyncio.run(main())
