"""`flotilla loadtest`: the load generator and comparisons of `loadtest/` (see loadtest.cli)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `flotilla loadtest` with the subcommands of loadtest.cli."""
    from loadtest.cli import add_arguments

    parser = subparsers.add_parser(
        "loadtest", help="load-test a fleet; compare with Celery and a bare aio-pika echo",
        description="Open- or closed-loop load against the HTTP API or the Python client; "
        "writes a JSON result and a PNG chart.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from loadtest.cli import main

    return main(args)
