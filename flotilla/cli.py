"""The `flotilla` command. Each subcommand lives in `flotilla/commands/<name>.py`.

A command module defines `add_parser(subparsers)`, which registers its parser and sets
`func=<callable(args) -> int>` as the parser's default; the callable's return value is the
exit status.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from flotilla import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command module's subparser."""
    parser = argparse.ArgumentParser(
        prog="flotilla", description="Run WebAssembly functions on a RabbitMQ-fed fleet."
    )
    parser.add_argument("--version", action="version", version=f"flotilla {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flotilla` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
