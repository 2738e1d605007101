"""`flotilla invoke NAME [--data @file|TEXT] [--header "K: V"] [--version V] [-X METHOD]
[--path /SUB/PATH] [--query K=V] [-i]`.

Sends `METHOD /v1/functions/NAME/invoke[/SUB/PATH]?K=V...` (default POST, no sub-path) and
prints the function's response body to stdout; `-i` prints the status line and headers
first (to stderr). Exits 0 for responses below 400, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from flotilla.commands.functions import (
    add_url_flag,
    client,
    parse_header,
    problem_text,
    read_data,
)


def add_parser(subparsers: Any) -> None:
    """Register `flotilla invoke`."""
    parser = subparsers.add_parser("invoke", help="Invoke a function and print its response")
    parser.add_argument("name")
    parser.add_argument("--data", "-d", help="Body: TEXT, @file, or @- for stdin")
    parser.add_argument("--header", "-H", action="append", type=parse_header, default=[],
                        metavar="'K: V'", help="Request header (repeatable)")
    parser.add_argument("--version", help="Pin a version (digest, prefix or number)")
    parser.add_argument("--method", "-X", default="POST", type=str.upper,
                        choices=("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"),
                        help="HTTP method the function sees (default POST)")
    parser.add_argument("--path", default="", metavar="/SUB/PATH",
                        help="Sub-path the function sees (default /); sent percent-encoded")
    parser.add_argument("--query", "-q", action="append", type=parse_pair, default=[],
                        metavar="K=V", help="Query parameter the function sees (repeatable)")
    parser.add_argument("--include", "-i", action="store_true",
                        help="Print status and headers (to stderr)")
    add_url_flag(parser)
    parser.set_defaults(func=main)


def parse_pair(text: str) -> tuple[str, str]:
    """A `--query K=V` argument as a (key, value) pair (`K` alone: an empty value)."""
    key, _, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"query parameter {text!r} must look like 'K=V'")
    return key, value


def main(args: argparse.Namespace) -> int:
    """METHOD /v1/functions/{name}/invoke[/path]."""
    params = list(args.query) + ([("version", args.version)] if args.version else [])
    sub = quote(args.path if args.path.startswith("/") or not args.path else "/" + args.path,
                safe="/%!$&'()*+,;=:@-._~")
    with client(args, timeout=960) as c:
        response = c.request(
            args.method,
            f"/v1/functions/{args.name}/invoke{sub}",
            content=read_data(args.data),
            headers=args.header,
            params=params or None,
        )
    if args.include:
        print(f"HTTP {response.status_code}", file=sys.stderr)
        for k, v in response.headers.multi_items():
            print(f"{k}: {v}", file=sys.stderr)
    if response.headers.get("content-type") == "application/problem+json":
        print(problem_text(response), file=sys.stderr)
        return 1
    sys.stdout.buffer.write(response.content)
    sys.stdout.flush()
    return 0 if response.status_code < 400 else 1
