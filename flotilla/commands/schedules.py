"""`flotilla schedules put|list|get|delete`: cron schedules that submit a function's jobs
(HTTP API, `deploy` scope)."""

from __future__ import annotations

import argparse
import base64
import sys
import time
from typing import Any

from flotilla.commands.functions import add_url_flag, client, parse_header, read_data, report


def add_parser(subparsers: Any) -> None:
    """Register `flotilla schedules`."""
    parser = subparsers.add_parser("schedules", help="Cron schedules submitting jobs")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    put = sub.add_parser("put", help="Create or replace a schedule")
    put.add_argument("name")
    put.add_argument("--function", required=True, help="The function each tick submits")
    put.add_argument("--cron", required=True,
                     help="5 fields (min hour day month weekday) or 6 (seconds first)")
    put.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    put.add_argument("--data", "-d", help="The jobs' body: TEXT, @file, or @- for stdin")
    put.add_argument("--header", "-H", action="append", type=parse_header, default=[],
                     metavar="'K: V'", help="The jobs' request header (repeatable)")
    put.set_defaults(func=put_schedule)
    listing = sub.add_parser("list", help="Every schedule with its next run")
    listing.add_argument("--json", action="store_true", help="Print the API's JSON")
    listing.set_defaults(func=list_schedules)
    get = sub.add_parser("get", help="One schedule, its next run and its last job")
    get.add_argument("name")
    get.set_defaults(func=get_schedule)
    delete = sub.add_parser("delete", help="Delete a schedule")
    delete.add_argument("name")
    delete.set_defaults(func=delete_schedule)
    for p in (put, listing, get, delete):
        add_url_flag(p)


def schedule_body(args: argparse.Namespace) -> dict[str, Any]:
    """The PUT body from the flags."""
    return {
        "function": args.function,
        "cron": args.cron,
        "timezone": args.timezone,
        "body_base64": base64.b64encode(read_data(args.data)).decode("ascii"),
        "headers": [list(h) for h in args.header],
    }


def put_schedule(args: argparse.Namespace) -> int:
    """PUT /v1/schedules/{name}."""
    with client(args) as c:
        return report(c.put(f"/v1/schedules/{args.name}", json=schedule_body(args)))


def list_schedules(args: argparse.Namespace) -> int:
    """GET /v1/schedules as a table (or JSON)."""
    with client(args) as c:
        response = c.get("/v1/schedules")
    if args.json or response.status_code >= 400:
        return report(response)
    print(f"{'NAME':<24}  {'FUNCTION':<24}  {'CRON':<20}  {'TIMEZONE':<16}  NEXT RUN (UTC)")
    for s in response.json()["schedules"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s["next_run_at"]))
        print(f"{s['name']:<24}  {s['function']:<24}  {s['cron']:<20}  {s['timezone']:<16}  "
              f"{when}")
    return 0


def get_schedule(args: argparse.Namespace) -> int:
    """GET /v1/schedules/{name}."""
    with client(args) as c:
        return report(c.get(f"/v1/schedules/{args.name}"))


def delete_schedule(args: argparse.Namespace) -> int:
    """DELETE /v1/schedules/{name}."""
    with client(args) as c:
        status = report(c.delete(f"/v1/schedules/{args.name}"))
    if status == 0:
        print(f"deleted {args.name}", file=sys.stderr)
    return status
