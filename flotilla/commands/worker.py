"""`flotilla worker`: run worker processes (consume invocations until SIGTERM) under a supervisor."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

from flotilla import logs
from flotilla.errors import FlotillaError
from flotilla.settings import WorkerSettings, add_flags, from_args


def add_parser(subparsers: Any) -> None:
    """Register the `worker` subcommand with one flag per WorkerSettings field."""
    parser = subparsers.add_parser(
        "worker",
        help="run a worker: consume invocations from RabbitMQ and run them in the sandbox",
        description="Run --processes worker processes under one supervisor, which serves "
        "their /metrics, /healthz and /readyz on --metrics-port and starts a process that "
        "dies again. Every flag overrides its FLOTILLA_<NAME> environment variable. SIGTERM "
        "drains in-flight invocations (up to --drain-timeout-s); a second SIGTERM exits at "
        "once.",
    )
    add_flags(parser, WorkerSettings)
    # Set by the supervisor for its children: the file descriptor of the child's link.
    parser.add_argument("--child-link", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load settings and run the supervisor (or, with --child-link, one worker process)."""
    try:
        settings = from_args(WorkerSettings, args)
    except FlotillaError as exc:
        print(f"flotilla worker: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if args.child_link is not None:
        from worker.service import run_process
        from worker.supervisor import serve_link

        try:
            return run_process(settings, link=partial(serve_link, args.child_link))
        except FlotillaError as exc:  # found while building the runtime (e.g. a malformed key)
            print(f"flotilla worker: error: {exc}", file=sys.stderr)
            return 2
    from worker.supervisor import run_supervisor, worker_command

    try:
        check_settings(settings)
    except FlotillaError as exc:  # refused before any worker process starts
        print(f"flotilla worker: error: {exc}", file=sys.stderr)
        return 2
    return run_supervisor(settings, worker_command(given_flags(args)))


def check_settings(settings: WorkerSettings) -> None:
    """What every worker process would refuse while building its runtime, found once, before
    the supervisor starts any (a malformed FLOTILLA_SECRETS_KEY, say): the supervisor would
    otherwise restart children that can never start."""
    if settings.secrets_key:
        from flotilla.secrets import Keyring

        Keyring.parse(settings.secrets_key)
    from flotilla.tracing import check_installed

    check_installed(settings.tracing)


def given_flags(args: argparse.Namespace) -> list[str]:
    """The settings flags given on this command line, to give a child the same settings (the
    environment it inherits does the rest)."""
    flags: list[str] = []
    for name in WorkerSettings.model_fields:
        value = getattr(args, name, None)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            flags += [flag, str(value)]
    return flags
