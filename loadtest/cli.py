"""`python -m loadtest` / `flotilla loadtest`: run, scenarios, compare, scale, procs.

Every command prints a table and writes `<out>.json` plus `<out>.png` (throughput, latency
percentiles and errors over time).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from loadtest import scenarios

if TYPE_CHECKING:  # the rest is imported when a command runs: `flotilla` builds this parser
    from loadtest.runner import RunResult

SUMMARY_COLUMNS = ["name", "mode", "concurrency", "requests", "rps", "p50_ms", "p90_ms",
                   "p99_ms", "errors"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands and their flags (shared by `python -m loadtest` and `flotilla`)."""
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="one scenario, closed or open loop")
    run.add_argument("--scenario", default="echo", choices=list(scenarios.SCENARIOS))
    run.add_argument("--payload-size", type=int, help="replace the scenario's body (bytes)")
    run.add_argument("--mode", choices=["closed", "open"], default="closed",
                     help="closed: fixed concurrency; open: fixed arrival rate")
    run.add_argument("--concurrency", type=int, default=8, help="closed loop: calls in flight")
    run.add_argument("--rate", type=float, default=50, help="open loop: calls started per s")
    _common(run)
    run.set_defaults(handler=_run)

    every = sub.add_parser("scenarios", help="every scenario, closed loop, one table")
    every.add_argument("--concurrency", type=int, default=16)
    every.add_argument("--only", nargs="*", choices=list(scenarios.SCENARIOS))
    _common(every)
    every.set_defaults(handler=_scenarios)

    cmp = sub.add_parser("compare", help="Flotilla vs Celery vs bare aio-pika echo")
    cmp.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    cmp.add_argument("--duration", type=float, default=10, help="seconds per system and level")
    cmp.add_argument("--out", type=Path, default=Path("loadtest-results/compare"))
    cmp.set_defaults(handler=_compare)

    scale = sub.add_parser("scale", help="1 vs 2 worker processes on this machine")
    scale.add_argument("--scenario", default="cpu", choices=list(scenarios.SCENARIOS))
    scale.add_argument("--concurrency", type=int, default=64)
    scale.add_argument("--worker-concurrency", type=int, default=0,
                       help="invocations per worker process (0: CPU cores)")
    scale.add_argument("--duration", type=float, default=10)
    scale.add_argument("--out", type=Path, default=Path("loadtest-results/scale"))
    scale.set_defaults(handler=_scale)


    procs = sub.add_parser("procs", help="worker shapes (processes x threads) end to end, "
                           "interleaved in one run")
    procs.add_argument("--shapes", nargs="+", default=["1x2", "2x1"],
                       help="PROCESSESxTHREADS per worker; the first is the baseline")
    procs.add_argument("--scenario", default="echo",
                       choices=[*scenarios.SCENARIOS, "blocked"],
                       help="blocked: a guest waiting 10 ms in a host wait (little CPU)")
    procs.add_argument("--concurrency", type=int, default=64)
    procs.add_argument("--rounds", type=int, default=5)
    procs.add_argument("--round-s", type=float, default=4.0, help="seconds per shape and round")
    procs.add_argument("--drain", type=int, default=0, metavar="N",
                       help="instead: time each worker alone through N envelopes published "
                       "straight into its queue (no dispatcher, no load generator)")
    procs.add_argument("--memory", action="store_true",
                       help="instead: each shape alone, then the RSS and PSS of its processes")
    procs.add_argument("--out", type=Path, default=Path("loadtest-results/procs"))
    procs.set_defaults(handler=_procs)

    fair = sub.add_parser("fairness", help="one function's job backlog vs another's sync "
                          "calls and job (issue 12): p50s, ratio, job start delay as JSON")
    fair.add_argument("--backlog", type=int, default=2_000, help="queued jobs of the backlog")
    fair.add_argument("--job-ms", type=int, default=20, help="each backlog job's busy time")
    fair.add_argument("--calls", type=int, default=50, help="sync calls, idle and busy")
    fair.add_argument("--processes", type=int, default=2, help="worker processes")
    fair.add_argument("--worker-concurrency", type=int, default=2,
                      help="invocations per worker process")
    fair.add_argument("--out", type=Path, default=Path("loadtest-results/fairness"))
    fair.set_defaults(handler=_fairness)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=10, help="seconds of load per run")
    p.add_argument("--fleet", default="local",
                   help="dev (in-process MemoryTransport), local (dispatcher + workers on "
                   "RabbitMQ, started here) or the base URL of a running dispatcher")
    p.add_argument("--target", choices=["http", "client"], default="http",
                   help="the HTTP API or the Python client (client needs --fleet local)")
    p.add_argument("--workers", type=int, default=1, help="--fleet local: worker processes")
    p.add_argument("--out", type=Path, default=Path("loadtest-results/run"),
                   help="result path without suffix (.json and .png are written)")


class Session:
    """The fleet and target a run/scenarios command talks to, started and closed together."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.fleet: Any = None
        self.target: Any = None

    async def __aenter__(self) -> Self:
        from loadtest.fleet import DevFleet, Fleet, build_guests
        from loadtest.targets import ClientTarget, HttpTarget

        args = self.args
        if args.target == "client" and args.fleet != "local":
            raise SystemExit("--target client needs --fleet local")
        if args.fleet == "dev":
            self.fleet = DevFleet()
        elif args.fleet == "local":
            self.fleet = Fleet(workers=args.workers)
        if self.fleet is not None:
            await self.fleet.start()
            await self.fleet.deploy(build_guests(["echo", "probe"]))
        if args.target == "client":
            self.target = ClientTarget(self.fleet.amqp_url, self.fleet.redis_url,
                                       self.fleet.prefix)
            await self.target.start()
        elif isinstance(self.fleet, DevFleet):
            self.target = HttpTarget(self.fleet.base_url, transport=self.fleet.transport())
        else:
            base = self.fleet.base_url if self.fleet is not None else args.fleet
            self.target = HttpTarget(base, connections=max(getattr(args, "concurrency", 8), 8))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.target is not None:
            await self.target.close()
        if self.fleet is not None:
            await self.fleet.stop()


async def _run(args: argparse.Namespace) -> list[RunResult]:
    from loadtest.runner import closed_loop, open_loop

    scenario = scenarios.get(args.scenario)
    if args.payload_size is not None:
        scenario = scenarios.with_payload(scenario, args.payload_size)
    async with Session(args) as session:
        call = session.target.call(scenario)
        for _ in range(3):
            await call()  # warm: first calls load the compiled component
        if args.mode == "closed":
            return [await closed_loop(scenario.name, call, concurrency=args.concurrency,
                                      duration_s=args.duration)]
        return [await open_loop(scenario.name, call, rate=args.rate, duration_s=args.duration)]


async def _scenarios(args: argparse.Namespace) -> list[RunResult]:
    from loadtest.runner import closed_loop

    names = args.only or list(scenarios.SCENARIOS)
    results = []
    async with Session(args) as session:
        for name in names:
            call = session.target.call(scenarios.get(name))
            print(f"  {name} at c={args.concurrency}", flush=True)
            results.append(await closed_loop(name, call, concurrency=args.concurrency,
                                             duration_s=args.duration, warmup=3))
    return results


def _print(results: list[RunResult]) -> None:
    from loadtest import report

    print(report.table([r.summary() for r in results], SUMMARY_COLUMNS))


def _finish(doc: dict[str, Any], out: Path) -> None:
    from loadtest import report

    json_path, png_path = report.write(doc, out)
    print(f"load average {doc['machine']['loadavg']} on {doc['machine']['nproc']} cores")
    print(f"wrote {json_path} and {png_path}")


def _params(args: argparse.Namespace, title: str) -> dict[str, Any]:
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("handler", "func")}
    params.update(title=title, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return params


def main(args: argparse.Namespace) -> int:
    """Run the chosen command; 0 when every run finished without errors."""
    from loadtest import compare, report

    handler = args.handler
    if handler in (_run, _scenarios):
        results = asyncio.run(handler(args))
        _print(results)
        doc = report.document(results, _params(args, f"loadtest {args.command}"))
        _finish(doc, args.out)
        return 0 if all(not r.errors() for r in results) else 1
    if handler is _compare:
        results = asyncio.run(compare.compare(args.concurrency, args.duration))
        rows = compare.ratio_rows(results)
        print(report.table(rows, ["system", "c", "rps", "p50_ms", "p99_ms", "errors",
                                  "rps_vs_bare", "p50_vs_bare"]))
        doc = report.document(results, _params(args, "Flotilla vs Celery vs bare echo"))
        doc["table"] = rows
        _finish(doc, args.out)
        return 0
    if handler is _procs:
        return _run_procs(args)
    if handler is _fairness:
        return _run_fairness(args)
    results = asyncio.run(compare.scale(scenarios.get(args.scenario), args.concurrency,
                                        args.duration,
                                        worker_concurrency=args.worker_concurrency))
    rows = compare.scale_rows(results)
    print(report.table(rows, ["workers", "c", "rps", "p50_ms", "p99_ms", "errors", "rps_vs_1"]))
    doc = report.document(results, _params(args, f"1 vs 2 workers: {args.scenario}"))
    doc["table"] = rows
    _finish(doc, args.out)
    return 0


def _compare(args: argparse.Namespace) -> None: ...  # marker: handled in main


def _scale(args: argparse.Namespace) -> None: ...  # marker: handled in main


def _procs(args: argparse.Namespace) -> None: ...  # marker: handled in main


def _fairness(args: argparse.Namespace) -> None: ...  # marker: handled in main


def _run_fairness(args: argparse.Namespace) -> int:
    import json

    from loadtest import fairness

    plan = fairness.FairnessPlan(backlog=args.backlog, job_ms=args.job_ms, calls=args.calls)
    doc = asyncio.run(fairness.run(plan, processes=args.processes,
                                   concurrency=args.worker_concurrency))
    print(json.dumps(doc, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def _run_procs(args: argparse.Namespace) -> int:
    import json

    from loadtest import procs, report

    scenario = procs.BLOCKED if args.scenario == "blocked" else scenarios.get(args.scenario)
    shapes = [procs.Shape.parse(s) for s in args.shapes]
    load_before = report.machine()["loadavg"]
    if args.drain:
        drained = asyncio.run(procs.drain(shapes, scenario.function, scenario.body,
                                          envelopes=args.drain, rounds=args.rounds))
        print(report.table(procs.drain_rows(drained),
                           ["shape", "inv_per_s", "round_ratio", "worker_cpu_us_per_inv",
                            "rounds"]))
        print(f"load average {load_before} before, {report.machine()['loadavg']} after")
        return 0
    if args.memory:
        measured = asyncio.run(procs.memory(shapes, scenario))
        print(report.table(procs.memory_rows(measured), [
            "shape", "supervisor_rss", "supervisor_pss", "process_rss", "process_pss",
            "process_shared_clean", "process_private_dirty", "total_rss", "total_pss",
            "errors"]))
        print(f"MiB, after 400 calls of {scenario.name} at concurrency 8 (smaps_rollup)")
        return 0 if all(r.errors == 0 for r in measured) else 1
    results = asyncio.run(procs.run(shapes, scenario, concurrency=args.concurrency,
                                    rounds=args.rounds, round_s=args.round_s))
    rows = procs.rows(results)
    print(report.table(rows, ["shape", "rps", "rps_vs_first", "round_ratio", "p50_ms",
                              "c1_p50_ms",
                              "worker_cpu_us_per_call", "rss_mib_each", "pss_mib_total",
                              "errors", "rounds_rps"]))
    doc = {"params": _params(args, f"worker shapes: {args.scenario}"),
           "machine": report.machine(), "loadavg_before": load_before, "table": rows,
           "memory_kib": {str(r.shape): r.memory_kib for r in results}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"load average {load_before} before, {doc['machine']['loadavg']} after, on "
          f"{doc['machine']['nproc']} cores; wrote {args.out.with_suffix('.json')}")
    return 0 if all(r.errors == 0 for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    """The standalone parser of `python -m loadtest`."""
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    add_arguments(parser)
    return parser
