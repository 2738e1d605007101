"""`flotilla bench <benchmark>`: benchmarks that print figures beside a baseline.

Each benchmark is a subparser registered by one function in BENCHMARKS; add yours (e.g.
`e2e`) by writing `_add_<name>(subparsers)` and listing it there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flotilla.settings import WorkerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_ECHO = REPO_ROOT / "examples" / "echo" / "app.py"


def add_parser(subparsers: Any) -> None:
    """Register `bench` and one subcommand per benchmark."""
    parser = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    benches = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for register in BENCHMARKS:
        register(benches)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _add_sandbox(benches: Any) -> None:
    p = benches.add_parser(
        "sandbox",
        help="invocation cost of the sandbox vs naive wasmtime-py",
        description="Median/p99 of an invocation and of each phase, minor page faults and "
        "CPU time per invocation, for the trivial WAT echo, the Python echo example and any "
        "--guest; cost per KiB of body; the same figures for a naive use of wasmtime-py "
        "measured in the same run; and the Python echo loop in 1 thread, 2 threads and 2 "
        "processes.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--cache-dir", help="cache directory (default: FLOTILLA_CACHE_DIR)")
    p.add_argument(
        "--python-app",
        type=Path,
        default=PYTHON_ECHO,
        help="Python echo guest to build (default: examples/echo/app.py)",
    )
    p.add_argument("--no-python", action="store_true", help="skip the Python guest")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    p.add_argument("--no-languages", action="store_true",
                   help="skip each language's echo (loadtest/languages.py)")
    p.add_argument(
        "--guest",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also measure this echo guest (a .wasm component or a source `flotilla build` "
        "takes); repeatable",
    )
    p.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="override an EngineSettings field for the sandbox side, e.g. "
        "linear_memory_keep_resident=16777216; repeatable",
    )
    p.add_argument(
        "--scaling",
        type=int,
        default=None,
        metavar="N",
        help="Python echo invocations per thread/process in the 1 vs 2 threads vs 2 processes "
        "loops (0: skip; default 600, 40 with --quick)",
    )
    p.set_defaults(func=_run_sandbox)


def _run_sandbox(args: argparse.Namespace) -> int:
    from loadtest.sandbox import Plan, format_table, run_bench

    cache_dir = args.cache_dir or WorkerSettings.from_env().cache_dir
    plan = Plan(trivial=100, python=10, per_size=(10, 3, 2), scaling=40) if args.quick else Plan()
    if args.scaling is not None:
        plan = dataclasses.replace(plan, scaling=max(0, args.scaling))
    try:
        guests = dict(_pair(g, "--guest") for g in args.guest)
        engine = _engine_settings([_pair(e, "--engine") for e in args.engine])
    except ValueError as exc:
        print(f"flotilla bench sandbox: {exc}", file=sys.stderr)
        return 2
    results = run_bench(
        cache_dir,
        python_app=None if args.no_python else args.python_app,
        plan=plan,
        baseline=not args.no_baseline,
        guests={name: Path(path) for name, path in guests.items()},
        engine_settings=engine,
    )
    languages = _languages(args, cache_dir)
    if args.json:
        json.dump({**results, **languages}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(format_table(results))
        if languages:
            from loadtest.languages import format_languages

            print(format_languages(languages))
    return 0


def _languages(args: argparse.Namespace, cache_dir: str) -> dict[str, Any]:
    """Each guest language's echo, measured in the same run (loadtest/languages.py)."""
    if args.no_languages:
        return {}
    from loadtest.languages import measure_languages

    return measure_languages(cache_dir, quick=args.quick)


def _pair(text: str, flag: str) -> tuple[str, str]:
    """NAME=VALUE split once; a clear error otherwise."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"{flag} takes NAME=VALUE, got {text!r}")
    return name, value


def _engine_settings(pairs: list[tuple[str, str]]) -> Any:
    """EngineSettings with `pairs` applied (values parsed by the field's default type)."""
    if not pairs:
        return None
    from flotilla.sandbox.engine import EngineSettings

    defaults = EngineSettings()
    fields = {f.name for f in dataclasses.fields(EngineSettings)}
    values: dict[str, Any] = {}
    for name, raw in pairs:
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ValueError(f"unknown engine setting {name!r} (one of: {known})")
        current = getattr(defaults, name)
        if isinstance(current, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{name} takes true or false, got {raw!r}")
            values[name] = raw.lower() in ("true", "1")
        elif isinstance(current, float):
            values[name] = float(raw)
        elif raw.lower() == "none":  # wasmtime's default, where the field allows it
            values[name] = None
        else:
            try:
                values[name] = int(raw, 0)
            except ValueError:
                raise ValueError(f"{name} takes an integer, got {raw!r}") from None
    return dataclasses.replace(defaults, **values)


def _add_e2e(benches: Any) -> None:
    p = benches.add_parser(
        "e2e",
        help="HTTP API and Python client end to end vs a bare aio-pika RPC echo and Celery",
        description="Starts a moto server, a worker (default settings), a dispatcher, a bare "
        "aio-pika echo and a Celery worker (trivial task, rpc backend) under a unique queue "
        "prefix (RabbitMQ and Redis from FLOTILLA_AMQP_URL and FLOTILLA_REDIS_URL), deploys "
        "the chosen echo guest, and prints p50/p99 latency and throughput at concurrency 1 "
        "and 64 for each, the ratios to the bare echo and to Celery, and issue 10's targets; "
        "then deletes its queues and keys. Without Celery installed (the loadtest extra) its "
        "figures are null.",
    )
    p.add_argument("--json", action="store_true", help="print the headline figures as JSON")
    p.add_argument("--guest", choices=["wat", "python"], default="wat",
                   help="wat: the trivial WAT echo; python: examples/echo built with "
                   "componentize-py (cached by content); default wat")
    p.add_argument("--no-celery", action="store_true", help="skip the Celery baseline")
    p.add_argument("--requests", type=int, default=6000, help="calls at concurrency 64")
    p.add_argument("--c1-requests", type=int, default=1000, help="calls at concurrency 1")
    p.add_argument("--warmup", type=int, default=50, help="calls before each measured run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved c64 rounds per system")
    p.add_argument("--worker-concurrency", type=int, default=0, help="0: the worker default")
    p.add_argument("--worker-prefetch", type=int, default=0, help="0: the worker default")
    p.set_defaults(func=_run_e2e)


def _run_e2e(args: argparse.Namespace) -> int:
    import asyncio

    from flotilla.settings import DispatcherSettings
    from loadtest.e2e import Plan, format_table, headline, run_e2e

    settings = DispatcherSettings.from_env()
    plan = Plan(
        c1_requests=args.c1_requests,
        c64_requests=args.requests,
        warmup=args.warmup,
        worker_concurrency=args.worker_concurrency,
        worker_prefetch=args.worker_prefetch,
        rounds=max(1, args.rounds),
        guest=args.guest,
        celery=not args.no_celery,
    )
    results = asyncio.run(
        # One node: the baseline is a bare aio-pika echo, which connects to one URL.
        run_e2e(plan, amqp_url=settings.amqp_url[0], redis_url=settings.redis_url)
    )
    if (skipped := results.get("celery_skipped")) and plan.celery:
        print(f"flotilla bench e2e: no Celery baseline: {skipped}", file=sys.stderr)
    if args.json:
        json.dump(headline(results), sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(format_table(results))
    return 0


def _add_soak(benches: Any) -> None:
    p = benches.add_parser(
        "soak",
        help="mixed traffic against a real fleet for N minutes; RSS, errors, lost jobs",
        description="Starts moto, a dispatcher and two workers against the local RabbitMQ and "
        "Redis, runs sync, async-job, cache, http, failing and hostile calls for N minutes and "
        "prints throughput, outcomes by kind, lost jobs and the RSS of each process at start, "
        "after warm-up and at the end. Exits 1 on an unexpected error, a lost job or RSS "
        "growth after warm-up over --max-growth.",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="callers in flight (default 8)")
    p.add_argument("--max-growth", type=float, default=0.10,
                   help="largest RSS growth after warm-up, as a fraction (default 0.10)")
    p.set_defaults(func=_run_soak)


def _run_soak(args: argparse.Namespace) -> int:
    from loadtest.soak import Plan, run_soak

    plan = Plan(args.minutes * 60, concurrency=args.concurrency, max_growth=args.max_growth)
    report = run_soak(plan)
    print(report.format())
    return 0 if report.ok else 1


def _add_chaos(benches: Any) -> None:
    p = benches.add_parser(
        "chaos",
        help="faults on a 3-node RabbitMQ cluster, Redis and the fleet under load; nothing lost",
        description="Starts three extra RabbitMQ nodes, a private Redis, two dispatchers and two "
        "workers, and under a steady mixed load kills the queue leader node, stops a follower, "
        "restarts Redis, kills a dispatcher and a worker. Prints accepted/lost jobs, duplicate "
        "results, sync calls and wrong replies, and the recovery time of each fault. Exits 1 "
        "on a lost job or a wrong reply. Never touches the machine's own broker or Redis.",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--steady-s", type=float, default=6.0, help="load before and after each fault")
    p.add_argument("--outage-s", type=float, default=4.0, help="how long a killed part stays down")
    p.add_argument("--min-jobs", type=int, default=500, help="jobs to submit at least")
    p.add_argument("--min-sync", type=int, default=500, help="synchronous calls to make at least")
    p.add_argument("--keep-logs", type=Path, help="copy the fleet's logs to this folder")
    p.add_argument("--no-heal", action="store_true",
                   help="run without the dead-letter doctor (flotilla broker heal --watch), "
                   "which restarts the dead-letter workers RabbitMQ 3.10.8 leaves stopped after "
                   "a leader dies: shows delayed jobs and retries getting stuck")
    p.set_defaults(func=_run_chaos)


def _run_chaos(args: argparse.Namespace) -> int:
    import asyncio

    from loadtest.chaos import Plan, run_chaos, verdict

    plan = Plan(steady_s=args.steady_s, outage_s=args.outage_s, min_jobs=args.min_jobs,
                min_sync=args.min_sync, heal=not args.no_heal)
    result = asyncio.run(run_chaos(plan, keep_logs=args.keep_logs))
    problems = verdict(result)
    if args.json:
        json.dump(result, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    else:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        print("\nverdict: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    return 1 if problems else 0


BENCHMARKS: list[Callable[[Any], None]] = [_add_sandbox, _add_soak, _add_e2e, _add_chaos]
