"""`flotilla dlq list|show|replay|purge`: the dead letters a dispatcher keeps (HTTP API,
`dead-letters` or `admin` scope)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from flotilla.commands.functions import add_url_flag, client, problem_text, report

PURGE_PAGE = 500


def add_parser(subparsers: Any) -> None:
    """Register `flotilla dlq`."""
    parser = subparsers.add_parser("dlq", help="List, show, replay or purge dead letters")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="Dead letters, newest first")
    listing.add_argument("--function", help="Only this function's")
    listing.add_argument("--limit", type=int, default=50, help="How many (1-500, default 50)")
    listing.add_argument("--cursor", help="Start after this id (a previous page's next_cursor)")
    listing.add_argument("--json", action="store_true", help="Print the API's JSON")
    listing.set_defaults(func=list_letters)
    show = sub.add_parser("show", help="One dead letter with its headers and body")
    show.add_argument("letter_id")
    show.set_defaults(func=show_letter)
    replay = sub.add_parser("replay", help="Run a dead letter again as a new job")
    replay.add_argument("letter_id")
    replay.add_argument("--version", help="Run this version (default: the latest)")
    replay.set_defaults(func=replay_letter)
    purge = sub.add_parser("purge", help="Delete dead letters by id, or --all of them")
    purge.add_argument("letter_ids", nargs="*", metavar="ID")
    purge.add_argument("--all", action="store_true", help="Every dead letter (or --function's)")
    purge.add_argument("--function", help="With --all: only this function's")
    purge.set_defaults(func=purge_letters)
    for p in (listing, show, replay, purge):
        add_url_flag(p)


def list_letters(args: argparse.Namespace) -> int:
    """GET /v1/dead-letters, one line each (or JSON)."""
    params: dict[str, Any] = {"limit": args.limit}
    if args.function:
        params["function"] = args.function
    if args.cursor:
        params["cursor"] = args.cursor
    with client(args) as c:
        response = c.get("/v1/dead-letters", params=params)
    if args.json or response.status_code >= 400:
        return report(response)
    page = response.json()
    print(f"{'ID':<32}  {'WHEN (UTC)':<19}  {'REASON':<14}  {'FUNCTION':<20}  ATT  ERROR")
    for d in page["dead_letters"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["dead_at"]))
        print(f"{d['id']:<32}  {when:<19}  {d['reason']:<14}  {d['function'] or '-':<20}  "
              f"{d['attempts']:>3}  {d['last_error'][:60]}")
    if page["next_cursor"]:
        print(f"more: --cursor {page['next_cursor']}", file=sys.stderr)
    return 0


def show_letter(args: argparse.Namespace) -> int:
    """GET /v1/dead-letters/{id}."""
    with client(args) as c:
        return report(c.get(f"/v1/dead-letters/{args.letter_id}"))


def replay_letter(args: argparse.Namespace) -> int:
    """POST /v1/dead-letters/{id}/replay: prints the new job."""
    params = {"version": args.version} if args.version else None
    with client(args) as c:
        return report(c.post(f"/v1/dead-letters/{args.letter_id}/replay", params=params))


def purge_letters(args: argparse.Namespace) -> int:
    """DELETE /v1/dead-letters/{id} for each id (or, with --all, each listed one)."""
    if bool(args.letter_ids) == args.all:
        print("flotilla dlq purge: give dead letter ids, or --all", file=sys.stderr)
        return 2
    failed = 0
    with client(args) as c:
        ids = args.letter_ids or _every_id(c, args.function)
        for letter_id in ids:
            response = c.delete(f"/v1/dead-letters/{letter_id}")
            if response.status_code >= 400:
                print(f"{letter_id}: {problem_text(response)}", file=sys.stderr)
                failed += 1
            else:
                print(f"deleted {letter_id}")
    return 1 if failed else 0


def _every_id(c: Any, function: str | None) -> list[str]:
    """Every dead letter id (of `function`), page by page, before anything is deleted."""
    ids: list[str] = []
    params: dict[str, Any] = {"limit": PURGE_PAGE}
    if function:
        params["function"] = function
    while True:
        response = c.get("/v1/dead-letters", params=params)
        if response.status_code >= 400:
            raise SystemExit(f"flotilla dlq purge: {problem_text(response)}")
        page = response.json()
        ids += [d["id"] for d in page["dead_letters"]]
        if not page["next_cursor"]:
            return ids
        params["cursor"] = page["next_cursor"]
