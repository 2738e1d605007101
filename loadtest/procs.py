"""`python -m loadtest procs`: worker shapes (processes x threads) compared end to end, same run.

    python -m loadtest procs                       # 1x2 vs 2x1 with the Python echo
    python -m loadtest procs --shapes 2x1 2x2 2x3 --scenario blocked

One fleet per shape (`loadtest.fleet.Fleet`: moto, a dispatcher, one `flotilla worker
--processes P --concurrency T`) is started at once, all idle but the one measured. Rounds
then take turns, each shape driven over HTTP for `round_s` at concurrency `c` (closed loop)
and then at concurrency 1, in a rotating order so that a neighbour's load on this shared
machine hits every shape alike; the reported figure of a shape is its median round, and
`round_ratio` the median over rounds of its throughput over the first shape's in the same
round (a drift of the machine's load between rounds cancels out). After
the rounds, each worker's memory is read from /proc/<pid>/smaps_rollup: RSS counts pages
shared with other processes in full, PSS divides them among the sharers (the compiled
component is mapped from the same cache file by every process: docs/performance.md).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import scenarios
from loadtest.fleet import Fleet, build_guests, children_of
from loadtest.runner import closed_loop
from loadtest.targets import HttpTarget

# A guest blocked 10 ms in a host call's wait (a WASI poll, as a slow S3 or HTTP call would
# hold its thread), costing almost no CPU: what extra threads per process are for.
BLOCKED = scenarios.Scenario("blocked", "probe", b'{"op": "wall_sleep", "ms": 10}',
                             "guest blocked 10 ms in a host wait (a slow host call)")


@dataclass(frozen=True)
class Shape:
    """Worker processes x invocation threads per process."""

    processes: int
    threads: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        """"2x1" as Shape(2, 1)."""
        processes, _, threads = text.partition("x")
        return cls(int(processes), int(threads))

    def __str__(self) -> str:
        return f"{self.processes}x{self.threads}"


@dataclass
class ShapeResult:
    """Every round of one shape, plus its worker's memory and CPU per call."""

    shape: Shape
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)  # at concurrency c
    c1_p50_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_us_per_call: float = 0.0
    memory_kib: dict[str, dict[str, int]] = field(default_factory=dict)

    def row(self, base: ShapeResult) -> dict[str, Any]:
        """The medians, and throughput relative to `base`."""
        rps, base_rps = statistics.median(self.rps), statistics.median(base.rps)
        children = [m for name, m in self.memory_kib.items() if name != "supervisor"]
        # Each round's ratio to the first shape's same round, then their median: a drift of
        # the machine's load between rounds cancels out.
        ratios = [r / b for r, b in zip(self.rps, base.rps, strict=True) if b]
        return {
            "shape": str(self.shape), "rps": round(rps, 1),
            "rps_vs_first": f"{rps / base_rps:.2f}x" if base_rps else None,
            "round_ratio": f"{statistics.median(ratios):.2f}x" if ratios else None,
            "p50_ms": round(statistics.median(self.p50_ms), 2),
            "c1_p50_ms": round(statistics.median(self.c1_p50_ms), 2),
            "worker_cpu_us_per_call": round(self.cpu_us_per_call),
            "rss_mib_each": round(statistics.fmean(m["rss"] for m in children) / 1024, 1),
            "pss_mib_total": round(sum(m["pss"] for m in self.memory_kib.values()) / 1024, 1),
            "errors": self.errors,
            "rounds_rps": [round(r) for r in self.rps],
        }


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss and their parts of a process in KiB (/proc/<pid>/smaps_rollup)."""
    keys = {"Rss": "rss", "Pss": "pss", "Shared_Clean": "shared_clean",
            "Private_Clean": "private_clean", "Private_Dirty": "private_dirty",
            "Pss_File": "pss_file", "Pss_Anon": "pss_anon"}
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in keys:
            out[keys[name]] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pids(fleet: Fleet) -> list[int]:
    """The fleet's supervisor and its worker processes."""
    supervisor = fleet.worker_pids()[0]
    return [supervisor, *sorted(children_of(supervisor))]


async def run(shapes: list[Shape], scenario: scenarios.Scenario, *, concurrency: int = 64,
              rounds: int = 5, round_s: float = 4.0, c1_s: float = 2.0,
              log: Any = print) -> list[ShapeResult]:
    """Start a fleet per shape, take turns for `rounds`, read memory; results in shape order."""
    components = build_guests(["echo", "probe"])
    results = [ShapeResult(shape) for shape in shapes]
    async with AsyncExitStack() as stack:
        fleets = []
        for shape in shapes:
            log(f"starting a fleet of shape {shape}")
            logs = Path(tempfile.mkdtemp(prefix=f"flotilla-procs-{shape}-"))
            fleet = Fleet(processes=shape.processes, concurrency=shape.threads, log_dir=logs)
            await fleet.start()
            stack.push_async_callback(fleet.stop)
            await fleet.deploy(components)
            fleets.append(fleet)
        targets = []
        for fleet in fleets:
            target = HttpTarget(fleet.base_url, connections=concurrency)
            stack.push_async_callback(target.close)
            call = target.call(scenario)
            # Warm every process: each loads the compiled component on its first call.
            await closed_loop("warm-up", call, concurrency=concurrency,
                              requests=4 * concurrency)
            targets.append(call)
        calls = {str(r.shape): 0 for r in results}
        cpu = {str(r.shape): 0.0 for r in results}
        for n in range(rounds):
            log(f"round {n + 1}/{rounds}, load average {os.getloadavg()[0]:.1f}")
            order = list(range(len(shapes)))
            order = order[n % len(order):] + order[:n % len(order)]
            for i in order:
                result, fleet, call = results[i], fleets[i], targets[i]
                pids = worker_pids(fleet)
                before = sum(cpu_seconds(p) for p in pids)
                run_c = await closed_loop(str(result.shape), call, concurrency=concurrency,
                                          duration_s=round_s)
                cpu[str(result.shape)] += sum(cpu_seconds(p) for p in pids) - before
                calls[str(result.shape)] += len(run_c.samples)
                run_1 = await closed_loop(str(result.shape), call, concurrency=1,
                                          duration_s=c1_s)
                summary, summary_1 = run_c.summary(), run_1.summary()
                result.rps.append(summary["rps"])
                result.p50_ms.append(summary["p50_ms"] or 0.0)
                result.c1_p50_ms.append(summary_1["p50_ms"] or 0.0)
                result.errors += len(run_c.samples) - summary["ok"]
                result.errors += len(run_1.samples) - summary_1["ok"]
        for result, fleet in zip(results, fleets, strict=True):
            name = str(result.shape)
            result.cpu_us_per_call = cpu[name] / max(1, calls[name]) * 1e6
            supervisor, *children = worker_pids(fleet)
            result.memory_kib["supervisor"] = smaps_rollup(supervisor)
            for i, pid in enumerate(children):
                result.memory_kib[f"process {i}"] = smaps_rollup(pid)
    return results


def rows(results: list[ShapeResult]) -> list[dict[str, Any]]:
    """One row per shape."""
    return [r.row(results[0]) for r in results]
