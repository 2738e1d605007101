"""`flotilla jobs submit NAME [--data ...] [--callback-url URL]` and `flotilla jobs get ID [--wait S]`."""

from __future__ import annotations

import argparse
from typing import Any

from flotilla.commands.functions import (
    add_url_flag,
    client,
    parse_header,
    read_data,
    report,
)


def add_parser(subparsers: Any) -> None:
    """Register `flotilla jobs`."""
    parser = subparsers.add_parser("jobs", help="Submit asynchronous jobs and read their results")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    submit = sub.add_parser("submit", help="Submit a job; prints its id and status URL")
    submit.add_argument("name")
    submit.add_argument("--data", "-d", help="Body: TEXT, @file, or @- for stdin")
    submit.add_argument("--header", "-H", action="append", type=parse_header, default=[],
                        metavar="'K: V'", help="Request header (repeatable)")
    submit.add_argument("--version", help="Pin a version (digest, prefix or number)")
    submit.add_argument("--callback-url", help="URL the result is POSTed to when done")
    add_url_flag(submit)
    submit.set_defaults(func=submit_job)
    get = sub.add_parser("get", help="Show a job's status and result")
    get.add_argument("job_id")
    get.add_argument("--wait", type=float, default=0, metavar="S",
                     help="Wait up to S seconds (max 30) for the result")
    add_url_flag(get)
    get.set_defaults(func=get_job)


def submit_job(args: argparse.Namespace) -> int:
    """POST /v1/functions/{name}/jobs."""
    params = {}
    if args.version:
        params["version"] = args.version
    if args.callback_url:
        params["callback_url"] = args.callback_url
    with client(args) as c:
        return report(
            c.post(f"/v1/functions/{args.name}/jobs", content=read_data(args.data),
                   headers=args.header, params=params)
        )


def get_job(args: argparse.Namespace) -> int:
    """GET /v1/jobs/{id}[?wait=S]."""
    params = {"wait": args.wait} if args.wait else None
    with client(args, timeout=args.wait + 30) as c:
        return report(c.get(f"/v1/jobs/{args.job_id}", params=params))
