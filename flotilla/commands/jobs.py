"""`flotilla jobs submit NAME [--data ...] [--callback-url URL] [--delay D | --run-at T]
[--idempotency-key K]`, `flotilla jobs get ID [--wait S]` and `flotilla jobs cancel ID`."""

from __future__ import annotations

import argparse
import re
from typing import Any

from flotilla.commands.functions import (
    add_url_flag,
    client,
    parse_header,
    read_data,
    report,
)

DELAY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
DELAY_UNITS_MS = {None: 1, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_delay_ms(text: str) -> int:
    """"500ms", "30s", "5m", "2h", "1d" or a bare number of milliseconds, as milliseconds."""
    match = DELAY_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a delay like 30s, 5m, 2h or 1d")
    return round(float(match.group(1)) * DELAY_UNITS_MS[match.group(2)])


def add_parser(subparsers: Any) -> None:
    """Register `flotilla jobs`."""
    parser = subparsers.add_parser("jobs", help="Submit asynchronous jobs, read or cancel them")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    submit = sub.add_parser("submit", help="Submit a job; prints its id and status URL")
    submit.add_argument("name")
    submit.add_argument("--data", "-d", help="Body: TEXT, @file, or @- for stdin")
    submit.add_argument("--header", "-H", action="append", type=parse_header, default=[],
                        metavar="'K: V'", help="Request header (repeatable)")
    submit.add_argument("--version", help="Pin a version (digest, prefix or number)")
    submit.add_argument("--callback-url", help="URL the result is POSTed to when done")
    when = submit.add_mutually_exclusive_group()
    when.add_argument("--delay", type=parse_delay_ms, metavar="D",
                      help="Run it this much later (30s, 5m, 2h, 1d; at most 7 days)")
    when.add_argument("--run-at", metavar="TIME",
                      help="Run it at this RFC 3339 time (2030-01-02T03:04:05Z)")
    submit.add_argument("--idempotency-key", metavar="KEY",
                        help="A repeat with the same key within 24 h returns the first job")
    add_url_flag(submit)
    submit.set_defaults(func=submit_job)
    get = sub.add_parser("get", help="Show a job's status and result")
    get.add_argument("job_id")
    get.add_argument("--wait", type=float, default=0, metavar="S",
                     help="Wait up to S seconds (max 30) for the result")
    add_url_flag(get)
    get.set_defaults(func=get_job)
    cancel = sub.add_parser("cancel", help="Cancel a job that has not started")
    cancel.add_argument("job_id")
    add_url_flag(cancel)
    cancel.set_defaults(func=cancel_job)


def submit_job(args: argparse.Namespace) -> int:
    """POST /v1/functions/{name}/jobs."""
    params: dict[str, Any] = {}
    if args.version:
        params["version"] = args.version
    if args.callback_url:
        params["callback_url"] = args.callback_url
    if args.delay is not None:
        params["delay_ms"] = args.delay
    if args.run_at:
        params["run_at"] = args.run_at
    headers = list(args.header)
    if args.idempotency_key:
        headers.append(("Idempotency-Key", args.idempotency_key))
    with client(args) as c:
        return report(
            c.post(f"/v1/functions/{args.name}/jobs", content=read_data(args.data),
                   headers=headers, params=params)
        )


def get_job(args: argparse.Namespace) -> int:
    """GET /v1/jobs/{id}[?wait=S]."""
    params = {"wait": args.wait} if args.wait else None
    with client(args, timeout=args.wait + 30) as c:
        return report(c.get(f"/v1/jobs/{args.job_id}", params=params))


def cancel_job(args: argparse.Namespace) -> int:
    """DELETE /v1/jobs/{id}: prints the cancelled job, or the problem (exit 1)."""
    with client(args) as c:
        return report(c.delete(f"/v1/jobs/{args.job_id}"))
