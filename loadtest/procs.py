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

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

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
    cpu_us: list[float] = field(default_factory=list)  # the worker's CPU per invocation
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


async def memory(shapes: list[Shape], scenario: scenarios.Scenario, *, calls: int = 400,
                 log: Any = print) -> list[ShapeResult]:
    """Each shape alone, with a cache directory of its own (so no other process maps its
    compiled components): `calls` calls at concurrency 8, then every process's memory."""
    components = build_guests(["echo", "probe"])
    results = []
    for shape in shapes:
        log(f"shape {shape} alone")
        result = ShapeResult(shape)
        with tempfile.TemporaryDirectory(prefix="flotilla-procs-cache-") as cache:
            previous = os.environ.get("FLOTILLA_CACHE_DIR")
            os.environ["FLOTILLA_CACHE_DIR"] = cache  # the fleet's processes inherit it
            try:
                async with Fleet(processes=shape.processes, concurrency=shape.threads) as fleet:
                    await fleet.deploy(components)
                    target = HttpTarget(fleet.base_url, connections=8)
                    try:
                        run_c = await closed_loop(str(shape), target.call(scenario),
                                                  concurrency=8, requests=calls)
                    finally:
                        await target.close()
                    result.errors = len(run_c.samples) - run_c.summary()["ok"]
                    supervisor, *children = worker_pids(fleet)
                    result.memory_kib["supervisor"] = smaps_rollup(supervisor)
                    for i, pid in enumerate(children):
                        result.memory_kib[f"process {i}"] = smaps_rollup(pid)
            finally:
                if previous is None:
                    os.environ.pop("FLOTILLA_CACHE_DIR", None)
                else:
                    os.environ["FLOTILLA_CACHE_DIR"] = previous
        results.append(result)
    return results


def memory_rows(results: list[ShapeResult]) -> list[dict[str, Any]]:
    """MiB per shape: the supervisor, one process (mean), and the whole worker."""
    out = []
    for r in results:
        supervisor = r.memory_kib["supervisor"]
        children = [m for name, m in r.memory_kib.items() if name != "supervisor"]

        def mean(key: str, of: list[dict[str, int]] = children) -> float:
            return round(statistics.fmean(m.get(key, 0) for m in of) / 1024, 1)

        out.append({
            "shape": str(r.shape), "supervisor_rss": mean("rss", [supervisor]),
            "supervisor_pss": mean("pss", [supervisor]), "process_rss": mean("rss"),
            "process_pss": mean("pss"), "process_shared_clean": mean("shared_clean"),
            "process_private_dirty": mean("private_dirty"),
            "total_rss": round(sum(m["rss"] for m in r.memory_kib.values()) / 1024, 1),
            "total_pss": round(sum(m["pss"] for m in r.memory_kib.values()) / 1024, 1),
            "errors": r.errors,
        })
    return out


async def drain(shapes: list[Shape], function: str, body: bytes, *, envelopes: int = 3000,
                rounds: int = 5, log: Any = print) -> list[ShapeResult]:
    """Worker throughput with nothing else busy: per round and shape, `envelopes` are
    published straight into its queue (replies go to a queue that does not exist: the
    broker drops them), then its worker's rate is timed from the end of the publish until
    its `/metrics` count all of them. The dispatcher and the load generator are idle then;
    the broker is not."""
    import aio_pika
    import redis.asyncio as aioredis

    from flotilla.envelope import REPLY_QUEUE, Envelope, now_ms
    from flotilla.registry import Registry
    from flotilla.topology import Topology

    components = build_guests(["echo", "probe"])
    results = [ShapeResult(shape) for shape in shapes]
    async with AsyncExitStack() as stack:
        fleets = []
        for shape in shapes:
            log(f"starting a fleet of shape {shape}")
            fleet = Fleet(processes=shape.processes, concurrency=shape.threads)
            await fleet.start()
            stack.push_async_callback(fleet.stop)
            await fleet.deploy(components)
            fleets.append(fleet)
        connection = await aio_pika.connect(fleets[0].amqp_url)
        stack.push_async_callback(connection.close)
        channel = await connection.channel(publisher_confirms=False)
        redis = aioredis.from_url(fleets[0].redis_url)
        stack.push_async_callback(redis.aclose)

        async def invoked(fleet: Fleet) -> float:
            async with httpx.AsyncClient(timeout=10) as client:
                text = (await client.get(f"http://127.0.0.1:{fleet.worker_ports[0]}/metrics")).text
            return sum(s.value for f in text_string_to_metric_families(text)
                       for s in f.samples if s.name == "flotilla_invocations_total"
                       and s.labels.get("function") == function)

        async def one(fleet: Fleet) -> float:
            digest = (await Registry(redis, prefix=fleet.prefix).get_version(function)).digest
            queue = Topology(fleet.prefix).sync
            start = await invoked(fleet)
            for _ in range(envelopes):
                iid = uuid.uuid4().hex
                envelope = Envelope(iid, iid, function, digest, (), body, now_ms() + 600_000,
                                    reply_mode=REPLY_QUEUE, reply_to=f"lt-void-{iid[:8]}")
                await channel.default_exchange.publish(aio_pika.Message(envelope.encode()),
                                                       routing_key=queue)
            t0, c0 = time.perf_counter(), await invoked(fleet)
            pids = worker_pids(fleet)
            cpu0 = sum(cpu_seconds(p) for p in pids)
            while (count := await invoked(fleet)) < start + envelopes:
                await asyncio.sleep(0.05)  # polling the worker's counter: its only signal
            cpu[fleet.prefix] = (sum(cpu_seconds(p) for p in pids) - cpu0) / (count - c0)
            return (count - c0) / (time.perf_counter() - t0)

        cpu: dict[str, float] = {}
        for fleet in fleets:
            await one(fleet)  # warm-up: every process loads the component
        for n in range(rounds):
            log(f"round {n + 1}/{rounds}, load average {os.getloadavg()[0]:.1f}")
            order = list(range(len(shapes)))
            order = order[n % len(order):] + order[:n % len(order)]
            for i in order:
                results[i].rps.append(await one(fleets[i]))
                results[i].cpu_us.append(cpu[fleets[i].prefix] * 1e6)
    return results


def drain_rows(results: list[ShapeResult]) -> list[dict[str, Any]]:
    """Median invocations per second of each shape's worker, and per-round ratios."""
    base = results[0]
    return [{
        "shape": str(r.shape), "inv_per_s": round(statistics.median(r.rps)),
        "worker_cpu_us_per_inv": round(statistics.median(r.cpu_us)),
        "round_ratio": f"{statistics.median(a / b for a, b in zip(r.rps, base.rps, strict=True)):.2f}x",
        "rounds": [round(x) for x in r.rps],
    } for r in results]
