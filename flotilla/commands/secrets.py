"""`flotilla secrets set|list|delete|rotate|new-key`: manage functions' secrets.

`set`, `list` and `delete` go through the dispatcher's HTTP API (`--url` / FLOTILLA_URL, a key
with the deploy scope in FLOTILLA_API_KEY): the dispatcher holds the sealing key, so whoever
manages secrets needs neither it nor Redis. `set` reads the value from `--value-file`, or
from stdin (a prompt without echo on a terminal); `--value` works but warns, since a value
on the command line lands in shell history and the process list.

`rotate` talks to Redis directly (FLOTILLA_REDIS_URL, FLOTILLA_QUEUE_PREFIX and
FLOTILLA_SECRETS_KEY, as the processes have them): rotation is an operator's step that needs
the keys themselves, and is best run where they already are (`kubectl exec` into a
dispatcher pod), not copied into an API request. `new-key` prints a fresh key entry.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from flotilla.commands.functions import add_url_flag, client, report


def add_parser(subparsers: Any) -> None:
    """Register `flotilla secrets`."""
    parser = subparsers.add_parser(
        "secrets", help="Set, list or delete functions' secrets; rotate the sealing key",
        description="Secrets a function reads with `secrets.get(name)`; values are sealed "
        "at rest and never shown again.",
    )
    sub = parser.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)

    p_set = sub.add_parser("set", help="Set a secret (value from --value-file or stdin)")
    p_set.add_argument("name", help="The function")
    p_set.add_argument("secret", help="The secret's name")
    source = p_set.add_mutually_exclusive_group()
    source.add_argument("--value-file", metavar="FILE",
                        help="Read the value from FILE (`-`: stdin), byte for byte")
    source.add_argument("--value", help="The value itself (lands in shell history: avoid)")
    add_url_flag(p_set)
    p_set.set_defaults(func=set_secret)

    p_list = sub.add_parser("list", help="List a function's secrets (names and times only)")
    p_list.add_argument("name", help="The function")
    p_list.add_argument("--json", action="store_true", help="Print JSON")
    add_url_flag(p_list)
    p_list.set_defaults(func=list_secrets)

    p_delete = sub.add_parser("delete", help="Delete a secret")
    p_delete.add_argument("name", help="The function")
    p_delete.add_argument("secret", help="The secret's name")
    add_url_flag(p_delete)
    p_delete.set_defaults(func=delete_secret)

    p_rotate = sub.add_parser(
        "rotate", help="Reseal every secret under the first key of FLOTILLA_SECRETS_KEY",
        description="Talks to Redis directly; FLOTILLA_SECRETS_KEY must hold the new key "
        "first and every key still sealing a value after it.",
    )
    p_rotate.add_argument("--redis-url", default=None, help="Redis URL (env FLOTILLA_REDIS_URL)")
    p_rotate.add_argument("--queue-prefix", default=None,
                          help="The deployment's prefix (env FLOTILLA_QUEUE_PREFIX)")
    p_rotate.add_argument("--json", action="store_true", help="Print the report as JSON")
    p_rotate.set_defaults(func=rotate)

    p_key = sub.add_parser("new-key", help="Print a fresh `kid:base64` key entry")
    p_key.add_argument("--kid", default=f"k{time.strftime('%Y%m%d')}",
                       help="The key's id (default k<today>)")
    p_key.set_defaults(func=print_new_key)


def read_value(args: argparse.Namespace) -> bytes:
    """The value to set, from --value, --value-file, a no-echo prompt or stdin."""
    if args.value is not None:
        print("flotilla secrets: warning: --value leaves the secret in your shell history and "
              "the process list; prefer --value-file or stdin", file=sys.stderr)
        return str(args.value).encode("utf-8")
    if args.value_file not in (None, "-"):
        return Path(args.value_file).read_bytes()
    if args.value_file is None and sys.stdin.isatty():
        return getpass.getpass(f"value of {args.secret} (not echoed): ").encode("utf-8")
    return sys.stdin.buffer.read()


def set_secret(args: argparse.Namespace) -> int:
    """PUT /v1/functions/{name}/secrets/{secret} with the value as the body."""
    try:
        value = read_value(args)
    except OSError as exc:
        print(f"flotilla secrets: cannot read the value: {exc}", file=sys.stderr)
        return 2
    if value.endswith(b"\n"):
        print("flotilla secrets: note: the value ends with a newline, which is kept "
              "(use printf '%s' or a file without one to leave it out)", file=sys.stderr)
    with client(args) as c:
        response = c.put(f"/v1/functions/{args.name}/secrets/{args.secret}", content=value,
                         headers={"content-type": "application/octet-stream"})
    if response.status_code >= 400:
        return report(response)
    verb = "created" if response.status_code == 201 else "replaced"
    print(f"{verb} secret {args.secret} of {args.name}")
    return 0


def list_secrets(args: argparse.Namespace) -> int:
    """GET /v1/functions/{name}/secrets as a table (or JSON)."""
    with client(args) as c:
        response = c.get(f"/v1/functions/{args.name}/secrets")
    if response.status_code >= 400 or args.json:
        return report(response)
    print(f"{'SECRET':<40} UPDATED")
    for entry in response.json()["secrets"]:
        updated = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(entry["updated_at"]))
        print(f"{entry['name']:<40} {updated}")
    return 0


def delete_secret(args: argparse.Namespace) -> int:
    """DELETE /v1/functions/{name}/secrets/{secret}."""
    with client(args) as c:
        status = report(c.delete(f"/v1/functions/{args.name}/secrets/{args.secret}"))
    if status == 0:
        print(f"deleted secret {args.secret} of {args.name}")
    return status


def rotate(args: argparse.Namespace) -> int:
    """Reseal every value under the current key; 1 when some did not open, 2 on misuse."""
    from flotilla.errors import SettingsError
    from flotilla.settings import DispatcherSettings

    try:
        settings = DispatcherSettings.from_env(redis_url=args.redis_url,
                                               queue_prefix=args.queue_prefix)
        if not settings.secrets_key:
            raise SettingsError("FLOTILLA_SECRETS_KEY is not set: it must hold the new key "
                                "first and the old ones after it")
        return asyncio.run(_rotate(args, settings))
    except SettingsError as exc:
        print(f"flotilla secrets: {exc}", file=sys.stderr)
        return 2


async def _rotate(args: argparse.Namespace, settings: Any) -> int:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from flotilla.secrets import SecretStore

    redis = aioredis.from_url(settings.redis_url)
    try:
        store = SecretStore.from_settings(settings, redis)
        assert store is not None
        result = await store.rotate()
    except RedisError as exc:
        print(f"flotilla secrets: Redis failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    current = store.box.keyring.current
    if args.json:
        print(json.dumps({"key_id": current, "resealed": result.resealed,
                          "current": result.current,
                          "failed": [{"function": f, "secret": n, "reason": why}
                                     for f, n, why in result.failed]}, indent=2))
    else:
        print(f"resealed {result.resealed} secret(s) under key {current!r}; "
              f"{result.current} already were")
        for function, name, why in result.failed:
            print(f"flotilla secrets: not resealed: {function}/{name}: {why}", file=sys.stderr)
    return 1 if result.failed else 0


def print_new_key(args: argparse.Namespace) -> int:
    """Print `kid:base64(32 random bytes)`."""
    from flotilla.errors import SettingsError
    from flotilla.secrets import new_key

    try:
        print(new_key(args.kid))
    except SettingsError as exc:
        print(f"flotilla secrets: {exc}", file=sys.stderr)
        return 2
    return 0
