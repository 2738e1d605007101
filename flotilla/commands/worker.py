"""`flotilla worker`: run a worker process (consume invocations until SIGTERM)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flotilla import logs
from flotilla.errors import FlotillaError
from flotilla.settings import WorkerSettings, add_flags, from_args


def add_parser(subparsers: Any) -> None:
    """Register the `worker` subcommand with one flag per WorkerSettings field."""
    parser = subparsers.add_parser(
        "worker",
        help="run a worker: consume invocations from RabbitMQ and run them in the sandbox",
        description="Run a worker process. Every flag overrides its FLOTILLA_<NAME> "
        "environment variable. SIGTERM drains in-flight invocations (up to "
        "--drain-timeout-s); a second SIGTERM exits at once.",
    )
    add_flags(parser, WorkerSettings)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load settings and run the worker until it is told to stop."""
    from worker.service import run_process

    try:
        settings = from_args(WorkerSettings, args)
    except FlotillaError as exc:
        print(f"flotilla worker: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        return run_process(settings)
    except FlotillaError as exc:  # found while building the runtime (e.g. a malformed key)
        print(f"flotilla worker: error: {exc}", file=sys.stderr)
        return 2
