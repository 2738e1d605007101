"""Closed-loop (fixed concurrency) and open-loop (fixed arrival rate) load runners.

A runner drives an async `call()` and records each call's latency and error type; it knows
nothing about what is being called, so HTTP, the Python client and the bare baselines are
measured the same way.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Call = Callable[[], Awaitable[Any]]


@dataclass
class Sample:
    """One finished call: when it started (seconds since the run began), latency, error."""

    start: float
    latency: float
    error: str | None = None


@dataclass
class RunResult:
    """All samples of one run plus its wall time."""

    name: str
    mode: str
    concurrency: int
    wall_s: float
    samples: list[Sample] = field(default_factory=list)

    def latencies(self) -> list[float]:
        """Latencies of successful calls, in seconds."""
        return [s.latency for s in self.samples if s.error is None]

    def errors(self) -> dict[str, int]:
        """Error counts by type."""
        return dict(Counter(s.error for s in self.samples if s.error is not None))

    def summary(self) -> dict[str, Any]:
        """Throughput and latency percentiles as a JSON-able dict (ms, requests/s)."""
        lat = sorted(self.latencies())
        ok = len(lat)
        return {
            "name": self.name,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "ok": ok,
            "errors": self.errors(),
            "wall_s": round(self.wall_s, 3),
            "rps": round(ok / self.wall_s, 1) if self.wall_s > 0 else 0.0,
            "p50_ms": round(percentile(lat, 50) * 1000, 3) if lat else None,
            "p90_ms": round(percentile(lat, 90) * 1000, 3) if lat else None,
            "p99_ms": round(percentile(lat, 99) * 1000, 3) if lat else None,
            "mean_ms": round(statistics.fmean(lat) * 1000, 3) if lat else None,
        }

    def timeline(self, bucket_s: float = 1.0) -> list[dict[str, Any]]:
        """Per-bucket throughput, p50/p99 and errors over the run (for charts)."""
        buckets: dict[int, list[Sample]] = {}
        for s in self.samples:
            buckets.setdefault(int((s.start + s.latency) // bucket_s), []).append(s)
        out = []
        for idx in sorted(buckets):
            group = buckets[idx]
            lat = sorted(x.latency for x in group if x.error is None)
            out.append(
                {
                    "t": idx * bucket_s,
                    "rps": len(lat) / bucket_s,
                    "p50_ms": percentile(lat, 50) * 1000 if lat else None,
                    "p99_ms": percentile(lat, 99) * 1000 if lat else None,
                    "errors": sum(1 for x in group if x.error is not None),
                }
            )
        return out


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def _error_name(exc: BaseException) -> str:
    return getattr(exc, "problem_type", None) or type(exc).__name__


async def closed_loop(
    name: str, call: Call, *, concurrency: int, duration_s: float | None = None,
    requests: int | None = None, warmup: int = 0,
) -> RunResult:
    """Keep `concurrency` calls in flight until `duration_s` passes or `requests` finish."""
    if duration_s is None and requests is None:
        raise ValueError("give duration_s or requests")
    for _ in range(warmup):
        await call()
    result = RunResult(name, "closed", concurrency, 0.0)
    begin = time.perf_counter()
    stop_at = begin + duration_s if duration_s is not None else float("inf")
    remaining = [requests if requests is not None else -1]

    async def one_lane() -> None:
        while time.perf_counter() < stop_at:
            if remaining[0] == 0:
                return
            remaining[0] -= 1
            t0 = time.perf_counter()
            error = None
            try:
                await call()
            except Exception as exc:  # noqa: BLE001 - a failed call is a data point, not a crash
                error = _error_name(exc)
            result.samples.append(Sample(t0 - begin, time.perf_counter() - t0, error))

    await asyncio.gather(*(one_lane() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - begin
    return result


async def open_loop(
    name: str, call: Call, *, rate: float, duration_s: float, max_in_flight: int = 10_000
) -> RunResult:
    """Start calls at a fixed `rate` per second for `duration_s`, whatever the latency."""
    result = RunResult(name, "open", max_in_flight, 0.0)
    begin = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()

    async def one(t0: float) -> None:
        error = None
        try:
            await call()
        except Exception as exc:  # noqa: BLE001 - a failed call is a data point
            error = _error_name(exc)
        result.samples.append(Sample(t0 - begin, time.perf_counter() - t0, error))

    n = 0
    while True:
        due = begin + n / rate
        if due - begin >= duration_s:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the arrival schedule, not waiting for an event
        if len(tasks) >= max_in_flight:
            result.samples.append(Sample(due - begin, 0.0, "client_overloaded"))
        else:
            task = asyncio.create_task(one(time.perf_counter()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)
    result.wall_s = time.perf_counter() - begin
    return result
