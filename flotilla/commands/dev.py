"""`flotilla dev [--listen HOST:PORT]`: dispatcher + worker in one process, no services needed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from flotilla.errors import FlotillaError
from flotilla.settings import DispatcherSettings


def add_parser(subparsers: Any) -> None:
    """Register `flotilla dev`."""
    parser = subparsers.add_parser(
        "dev", help="Run dispatcher and worker in one process (no RabbitMQ, Redis or S3)",
        description="Dev mode: an in-memory queue, fakeredis and a local artifact directory; "
        "deploys the examples at startup and prints curl lines.",
    )
    parser.add_argument("--listen", default=None, help="host:port (default 127.0.0.1:8080)")
    parser.add_argument("--cache-dir", default=None, help="Built guests, artifacts, dev store")
    parser.add_argument("--examples", type=Path, default=None,
                        help="Directory of examples to deploy (default: the repo's examples/)")
    parser.add_argument("--no-examples", action="store_true", help="Deploy nothing at startup")
    parser.add_argument("--concurrency", type=int, default=4, help="Invocations run at once")
    parser.add_argument("--callback-hosts", default=None,
                        help="Hosts job callbacks may go to (default: localhost,127.0.0.1)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run dev mode until Ctrl-C."""
    from flotilla.dev.stack import EXAMPLES_DIR, serve_dev

    try:
        settings = DispatcherSettings.from_env(
            listen=args.listen, cache_dir=args.cache_dir, log_level=args.log_level,
        )
        if args.callback_hosts is not None or not settings.callback_hosts:
            settings = settings.with_(callback_hosts=args.callback_hosts or "localhost,127.0.0.1")
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        examples = None if args.no_examples else (args.examples or EXAMPLES_DIR)
        asyncio.run(serve_dev(settings, examples=examples, concurrency=args.concurrency))
    except FlotillaError as exc:
        print(f"flotilla dev: {exc}", file=sys.stderr)
        return 2
    return 0
