"""`flotilla functions list|get|delete`, plus the HTTP helpers the client commands share.

Client commands talk to a dispatcher's HTTP API with httpx; `--url` (or FLOTILLA_URL)
says where it is and FLOTILLA_API_KEY is the key they send. Problem documents are printed
to stderr as "title: detail" and make the command exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 60.0


def add_url_flag(parser: argparse.ArgumentParser) -> None:
    """The `--url` flag every client command takes."""
    parser.add_argument(
        "--url", default=None,
        help=f"Dispatcher base URL (env FLOTILLA_URL, default {DEFAULT_URL})",
    )


def client(args: argparse.Namespace, timeout: float = TIMEOUT_S) -> httpx.Client:
    """An httpx client for the dispatcher named by `--url` / FLOTILLA_URL, sending the API
    key in FLOTILLA_API_KEY (if set) as `Authorization: Bearer`."""
    base = args.url or os.environ.get("FLOTILLA_URL") or DEFAULT_URL
    key = os.environ.get("FLOTILLA_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    import httpx  # here, not at the top: every `flotilla` command builds this module's parser

    return httpx.Client(base_url=base, timeout=timeout, headers=headers)


def read_data(value: str | None) -> bytes:
    """`--data` as bytes: `@path` reads a file, `@-` stdin, anything else is the text itself."""
    if value is None:
        return b""
    if value == "@-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        return Path(value[1:]).read_bytes()
    return value.encode("utf-8")


def parse_header(text: str) -> tuple[str, str]:
    """A `--header "Name: value"` argument as a (name, value) pair."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header {text!r} must look like 'Name: value'")
    return name.strip(), value.strip()


def report(response: httpx.Response) -> int:
    """Print a JSON response (stdout) or a problem (stderr); the exit status."""
    if response.status_code >= 400:
        print(problem_text(response), file=sys.stderr)
        return 1
    if response.status_code != 204 and response.content:
        print(json.dumps(response.json(), indent=2))
    return 0


def problem_text(response: httpx.Response) -> str:
    """One line describing an error response (problem document or not)."""
    try:
        body: Any = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(body, dict) and "title" in body:
        detail = f": {body['detail']}" if body.get("detail") else ""
        return f"{body['title']} ({response.status_code}){detail}"
    return f"HTTP {response.status_code}: {json.dumps(body)[:500]}"


def add_parser(subparsers: Any) -> None:
    """Register `flotilla functions`."""
    parser = subparsers.add_parser("functions", help="List, show or delete deployed functions")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p_list = sub.add_parser("list", help="List deployed functions")
    add_url_flag(p_list)
    p_list.set_defaults(func=list_functions)
    p_get = sub.add_parser("get", help="Show a function's config and versions")
    p_get.add_argument("name")
    add_url_flag(p_get)
    p_get.set_defaults(func=get_function)
    p_delete = sub.add_parser("delete", help="Delete a function and its version history")
    p_delete.add_argument("name")
    add_url_flag(p_delete)
    p_delete.set_defaults(func=delete_function)


def list_functions(args: argparse.Namespace) -> int:
    """GET /v1/functions as a table."""
    with client(args) as c:
        response = c.get("/v1/functions")
    if response.status_code >= 400:
        return report(response)
    rows = response.json()["functions"]
    print(f"{'NAME':<24} {'VERSIONS':>8}  LATEST")
    for f in rows:
        print(f"{f['name']:<24} {f['version_count']:>8}  {f['latest'][:16]}")
    return 0


def get_function(args: argparse.Namespace) -> int:
    """GET /v1/functions/{name} as JSON."""
    with client(args) as c:
        return report(c.get(f"/v1/functions/{args.name}"))


def delete_function(args: argparse.Namespace) -> int:
    """DELETE /v1/functions/{name}."""
    with client(args) as c:
        status = report(c.delete(f"/v1/functions/{args.name}"))
    if status == 0:
        print(f"deleted {args.name}")
    return status
