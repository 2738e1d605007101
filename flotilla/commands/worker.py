"""`flotilla worker`: run a worker process (consume invocations until SIGTERM)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, TypeVar

from flotilla import logs
from flotilla.errors import FlotillaError
from flotilla.settings import DispatcherSettings, WorkerSettings

S = TypeVar("S", WorkerSettings, DispatcherSettings)


def add_parser(subparsers: Any) -> None:
    """Register the `worker` subcommand with one flag per WorkerSettings field."""
    parser = subparsers.add_parser(
        "worker",
        help="run a worker: consume invocations from RabbitMQ and run them in the sandbox",
        description="Run a worker process. Every flag overrides its FLOTILLA_<NAME> "
        "environment variable. SIGTERM drains in-flight invocations (up to "
        "--drain-timeout-s); a second SIGTERM exits at once.",
    )
    add_settings_flags(parser, WorkerSettings)
    parser.set_defaults(func=run)


def add_settings_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--field-name` flag per settings field, typed like the field, default None."""
    for f in dataclasses.fields(cls):
        kind = str(f.type)
        if kind.startswith("bool"):
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f.metadata.get("help"),
            )
            continue
        convert: Any = int if kind.startswith("int") else float if kind.startswith("float") else str
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=convert,
            default=None,
            help=f.metadata.get("help"),
        )


def settings_from_args(cls: type[S], args: argparse.Namespace) -> S:
    """The settings object: environment first, flags given on the command line win."""
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    return cls.from_env(**overrides)


def run(args: argparse.Namespace) -> int:
    """Load settings and run the worker until it is told to stop."""
    from worker.service import run_process

    try:
        settings = settings_from_args(WorkerSettings, args)
    except FlotillaError as exc:
        print(f"flotilla worker: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        return run_process(settings)
    except FlotillaError as exc:  # found while building the runtime (e.g. a malformed key)
        print(f"flotilla worker: error: {exc}", file=sys.stderr)
        return 2
