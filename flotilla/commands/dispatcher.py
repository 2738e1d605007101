"""`flotilla dispatcher`: run the HTTP API (one flag per DispatcherSettings field)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from flotilla.errors import FlotillaError
from flotilla.settings import DispatcherSettings


def add_settings_flags(parser: argparse.ArgumentParser, settings_cls: Any) -> None:
    """One `--field-name` flag per settings field; unset flags fall back to FLOTILLA_* env."""
    for f in fields(settings_cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (env FLOTILLA_{f.name.upper()})"
        type_text = str(f.type)
        if type_text.startswith("bool"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        elif type_text.startswith("int"):
            parser.add_argument(flag, dest=f.name, type=int, default=None, help=help_text)
        elif type_text.startswith("float"):
            parser.add_argument(flag, dest=f.name, type=float, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def settings_from_args(args: argparse.Namespace, settings_cls: Any) -> Any:
    """Settings from FLOTILLA_* variables, overridden by the flags given."""
    overrides = {f.name: getattr(args, f.name, None) for f in fields(settings_cls)}
    return settings_cls.from_env(**overrides)


def add_parser(subparsers: Any) -> None:
    """Register `flotilla dispatcher`."""
    parser = subparsers.add_parser(
        "dispatcher", help="Run the dispatcher (HTTP API)",
        description="Serve the HTTP API: deploy, invoke, jobs. Needs RabbitMQ, Redis and S3.",
    )
    add_settings_flags(parser, DispatcherSettings)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run the dispatcher until interrupted."""
    from dispatcher import service

    try:
        settings = settings_from_args(args, DispatcherSettings)
        return service.run(settings)
    except FlotillaError as exc:
        print(f"flotilla dispatcher: {exc}", file=sys.stderr)
        return 2
