"""`flotilla keys create|list|revoke`: manage the dispatcher's API keys.

These talk to Redis directly (FLOTILLA_REDIS_URL and FLOTILLA_QUEUE_PREFIX, or the flags),
not to the HTTP API: they are how the first key is made, and whoever can reach Redis is
already trusted with everything. Remote administration goes through /v1/keys with an
admin key instead. A created key is printed once; only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from dispatcher.auth import DEFAULT_LIMIT, SCOPES, ApiKey, Authenticator
from flotilla.config import NAME_PATTERN
from flotilla.ratelimit import Limit
from flotilla.settings import DispatcherSettings


def add_parser(subparsers: Any) -> None:
    """Register `flotilla keys`."""
    parser = subparsers.add_parser(
        "keys", help="Create, list or revoke API keys (in Redis)",
        description="Manage the dispatcher's API keys, stored hashed in Redis.",
    )
    sub = parser.add_subparsers(dest="keys_command", required=True)

    create = sub.add_parser("create", help="Create a key and print it (shown only once)")
    create.add_argument("--scope", dest="scopes", action="append", choices=SCOPES,
                        required=True, help=", ".join(SCOPES) + " (repeat for several)")
    create.add_argument("--function", dest="functions", action="append", default=[],
                        help="Limit the invoke scope to this function (repeatable)")
    create.add_argument("--name", default="", help="What the key is for")
    create.add_argument("--rate", type=float, default=DEFAULT_LIMIT.rate,
                        help=f"Requests per second (default {DEFAULT_LIMIT.rate:g}; 0: unlimited)")
    create.add_argument("--burst", type=int, default=DEFAULT_LIMIT.burst,
                        help=f"Requests allowed at once (default {DEFAULT_LIMIT.burst})")
    create.add_argument("--json", action="store_true", help="Print the key and record as JSON")

    listing = sub.add_parser("list", help="List keys (ids, names, scopes; never the keys)")
    listing.add_argument("--json", action="store_true", help="Print JSON")

    revoke = sub.add_parser("revoke", help="Revoke a key by id (effective at once)")
    revoke.add_argument("key_id", help="The key's id (the 12 hex digits after `flk_`)")

    for p in (create, listing, revoke):
        p.add_argument("--redis-url", default=None, help="Redis URL (env FLOTILLA_REDIS_URL)")
        p.add_argument("--queue-prefix", default=None,
                       help="The dispatcher's prefix (env FLOTILLA_QUEUE_PREFIX)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run one keys subcommand; 0 on success, 1 when a key to revoke is unknown, 2 on misuse."""
    import re

    settings = DispatcherSettings.from_env(redis_url=args.redis_url,
                                           queue_prefix=args.queue_prefix)
    if args.keys_command == "create":
        bad = [f for f in args.functions if not re.match(NAME_PATTERN, f)]
        if bad:
            print(f"flotilla keys: not function names: {', '.join(bad)}", file=sys.stderr)
            return 2
        try:
            limit = Limit(args.rate, args.burst) if args.rate > 0 else None
        except ValueError as exc:
            print(f"flotilla keys: {exc}", file=sys.stderr)
            return 2
    return asyncio.run(_run(args, settings, limit if args.keys_command == "create" else None))


async def _run(args: argparse.Namespace, settings: DispatcherSettings, limit: Limit | None) -> int:
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis_url)
    try:
        keys = Authenticator.on_redis(redis, prefix=settings.queue_prefix).keys
        if args.keys_command == "create":
            record, key = await keys.create(args.name, args.scopes, functions=args.functions,
                                            limit=limit)
            if args.json:
                print(json.dumps({"key": key, **record.to_dict()}, indent=2))
            else:
                print(key)
                print(f"id {record.id}: {describe(record)}. Shown once: store it now.",
                      file=sys.stderr)
            return 0
        if args.keys_command == "list":
            records = await keys.list()
            if args.json:
                print(json.dumps([r.to_dict() for r in records], indent=2))
            for r in records if not args.json else ():
                print(f"{r.id}  {describe(r)}")
            return 0
        if not await keys.revoke(args.key_id):
            print(f"flotilla keys: no key with id {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
        return 0
    finally:
        await redis.aclose()


def describe(key: ApiKey) -> str:
    """One line about a key: name, scopes, functions, limit, age."""
    parts = [repr(key.name) if key.name else "(no name)", "scopes " + ",".join(key.scopes)]
    if key.functions:
        parts.append("functions " + ",".join(key.functions))
    parts.append(f"{key.limit.rate:g}/s burst {key.limit.burst}" if key.limit else "unlimited")
    created = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(key.created_at))
    parts.append(f"created {created}")
    return ", ".join(parts)
