"""`flotilla dispatcher`: run the HTTP API (one flag per DispatcherSettings field)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flotilla.errors import FlotillaError
from flotilla.settings import DispatcherSettings, add_flags, from_args


def add_parser(subparsers: Any) -> None:
    """Register `flotilla dispatcher`."""
    parser = subparsers.add_parser(
        "dispatcher", help="Run the dispatcher (HTTP API)",
        description="Serve the HTTP API: deploy, invoke, jobs. Needs RabbitMQ, Redis and S3.",
    )
    add_flags(parser, DispatcherSettings)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run the dispatcher until interrupted."""
    from dispatcher import service

    try:
        settings = from_args(DispatcherSettings, args)
        return service.run(settings)
    except FlotillaError as exc:
        print(f"flotilla dispatcher: {exc}", file=sys.stderr)
        return 2
