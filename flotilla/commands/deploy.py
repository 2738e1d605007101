"""`flotilla deploy NAME fn.wasm [--env K=V] [--timeout 5s] [--allow-host H] [--config cfg.json]`.

The component may also be a function's sources (a directory, `app.py`, `app.js`, `app.ts`, a
`.c` file): it is built first, as `flotilla build` would (cached by content).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from flotilla.commands.functions import add_url_flag, client, report
from flotilla.errors import FlotillaError

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, None: 1}


def parse_duration_ms(text: str) -> int:
    """"500ms", "5s", "1.5s", "2m" or a bare number of milliseconds, as milliseconds."""
    match = DURATION_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 500ms, 5s or 2m")
    return round(float(match.group(1)) * UNITS_MS[match.group(2)])


def parse_env(text: str) -> tuple[str, str]:
    """A `--env K=V` argument as a (key, value) pair."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env {text!r} must look like KEY=VALUE")
    return key, value


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config object sent with the deploy: --config file first, flags on top."""
    config: dict[str, Any] = {}
    if args.config:
        config = json.loads(Path(args.config).read_text())
        if not isinstance(config, dict):
            raise ValueError(f"{args.config} must hold a JSON object")
        config.pop("name", None)  # the NAME argument decides (one file can serve copies)
    if args.env:
        config["env"] = {**config.get("env", {}), **dict(args.env)}
    if args.timeout is not None:
        config["timeout_ms"] = args.timeout
    if args.memory is not None:
        config["memory_limit_mb"] = args.memory
    if args.max_body_bytes is not None:
        config["max_body_bytes"] = args.max_body_bytes
    for flag, key in (("allow_host", "allowed_hosts"), ("s3_bucket", "s3_buckets"),
                      ("dynamodb_table", "dynamodb_tables")):
        values = getattr(args, flag)
        if values:
            config[key] = [*config.get(key, []), *values]
    if args.cache_namespace:
        config["cache_namespace"] = args.cache_namespace
    return config


def component_bytes(path: Path) -> bytes:
    """The component to upload; sources (a function's directory, app.py, app.js, app.ts, a
    .c file) are built first, in whichever language they are."""
    if path.suffix == ".wasm":
        return path.read_bytes()
    from flotilla.build import build_source

    _, result = build_source(path)
    return result.path.read_bytes()


def add_parser(subparsers: Any) -> None:
    """Register `flotilla deploy`."""
    parser = subparsers.add_parser(
        "deploy", help="Deploy a function (each deploy is an immutable version)"
    )
    parser.add_argument("name", help="Function name (a-z, 0-9, '-')")
    parser.add_argument("component", type=Path, help="Component .wasm, or a function's sources (a directory, app.py, app.js, app.ts, *.c)")
    parser.add_argument("--config", help="JSON file of FunctionConfig fields")
    parser.add_argument("--env", action="append", type=parse_env, metavar="K=V",
                        help="Environment variable (repeatable)")
    parser.add_argument("--timeout", type=parse_duration_ms, help="Timeout, e.g. 500ms, 5s, 2m")
    parser.add_argument("--memory", type=int, metavar="MB", help="Memory limit in MiB")
    parser.add_argument("--max-body-bytes", type=int, help="Largest request/response body")
    parser.add_argument("--allow-host", action="append", metavar="HOST",
                        help="Host outbound HTTP may reach (repeatable)")
    parser.add_argument("--s3-bucket", action="append", metavar="BUCKET",
                        help="S3 bucket the function may use (repeatable)")
    parser.add_argument("--dynamodb-table", action="append", metavar="TABLE",
                        help="DynamoDB table the function may use (repeatable)")
    parser.add_argument("--cache-namespace", help="Cache key namespace (default: the name)")
    add_url_flag(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Upload the component and config; print the version."""
    try:
        config = build_config(args)
        wasm = component_bytes(args.component)
    except (OSError, ValueError, FlotillaError) as exc:
        print(f"flotilla deploy: {exc}", file=sys.stderr)
        return 2
    with client(args, timeout=300) as c:
        response = c.put(
            f"/v1/functions/{args.name}",
            files={"component": (args.component.name, wasm, "application/wasm")},
            data={"config": json.dumps(config)},
        )
    if response.status_code >= 400:
        return report(response)
    version = response.json()
    state = "deployed" if version.get("created") else "unchanged"
    print(f"{state} {version['name']} version {version['number']} ({version['digest'][:16]})")
    return 0
