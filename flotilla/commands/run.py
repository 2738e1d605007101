"""`flotilla run fn.wasm --config cfg.json --data @body|TEXT [--header K:V]...`: one local run.

Runs a single invocation in the worker's Sandbox with the real host clients (settings from
FLOTILLA_* variables), then prints the status, headers and body, and the logs. Exit status:
0 ok, 2 component rejected, 3 timeout, 4 memory_limit, 5 trap, 6 function_error,
7 bad_response.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_CODES = {
    "ok": 0,
    "timeout": 3,
    "memory_limit": 4,
    "trap": 5,
    "function_error": 6,
    "bad_response": 7,
}
EXIT_REJECTED = 2


def add_parser(subparsers: Any) -> None:
    """Register `flotilla run`."""
    from flotilla.commands.functions import parse_header

    parser = subparsers.add_parser(
        "run",
        help="run one invocation of a component locally and print the response and logs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("wasm", type=Path, help="the component (.wasm)")
    parser.add_argument(
        "--config", "-c", type=Path, help='function config JSON (default: {"name": <file stem>})'
    )
    parser.add_argument("--data", "-d", help="body: TEXT, @file, or @- for stdin")
    parser.add_argument(
        "--header",
        "-H",
        action="append",
        type=parse_header,
        default=[],
        metavar="'K: V'",
        help="request header (repeatable)",
    )
    parser.add_argument("--cache-dir", help="compile cache (default: FLOTILLA_CACHE_DIR)")
    parser.set_defaults(func=run)


def load_config(path: Path | None, wasm: Path) -> Any:
    """The FunctionConfig from `path`, or a default named after the component file."""
    from flotilla.config import FunctionConfig

    if path is None:
        stem = "".join(c if c.isalnum() else "-" for c in wasm.stem.lower()).strip("-")
        return FunctionConfig(name=stem if stem and stem[0].isalpha() else f"fn-{stem}")
    return FunctionConfig.from_dict(json.loads(path.read_text()))


def run(args: argparse.Namespace) -> int:
    """Load, invoke once, print; the exit status names the outcome."""
    from flotilla.commands.functions import read_data
    from flotilla.errors import FlotillaError
    from flotilla.hosts.clients import HostClients
    from flotilla.sandbox import Sandbox, new_request
    from flotilla.settings import WorkerSettings

    try:
        config = load_config(args.config, args.wasm)
        body = read_data(args.data)
        wasm = args.wasm.read_bytes()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    settings = WorkerSettings.from_env()
    hosts = HostClients.from_settings(settings)
    sandbox = Sandbox(hosts, cache_dir=args.cache_dir or settings.cache_dir)
    try:
        try:
            fn = sandbox.load(wasm)
            result = sandbox.invoke(fn, config, new_request(config.name, body, tuple(args.header)))
        except FlotillaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        print_result(result)
        return EXIT_CODES.get(result.outcome.value, 1)
    finally:
        sandbox.close()
        hosts.close()


def print_result(result: Any) -> None:
    """Status line, headers, blank line, body (stdout); then logs and the outcome (stderr)."""
    out = sys.stdout
    if result.response is not None:
        out.write(f"status: {result.response.status}\n")
        for name, value in result.response.headers:
            out.write(f"{name}: {value}\n")
        out.write("\n")
        out.flush()
        sys.stdout.buffer.write(result.response.body)
        if result.response.body and not result.response.body.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
    for record in result.logs:
        print(f"[{record.level}] {record.message}", file=sys.stderr)
    if result.logs_dropped:
        print(f"[logs] {result.logs_dropped} records dropped (cap reached)", file=sys.stderr)
    if not result.ok:
        print(f"outcome: {result.outcome.value}: {result.error}", file=sys.stderr)
    else:
        print(f"outcome: ok ({result.timings.total_us / 1000:.2f} ms)", file=sys.stderr)
