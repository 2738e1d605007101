"""Conformance guest (Python): the protocol of tests/conformance/PROTOCOL.md.

Header `op` names the operation, headers `a1`..`a4` (and `expected`) are its arguments,
the body is its bytes argument; only the first of a repeated header counts. Results: 200
with the value, 204 for none, 590 `<case>[:<detail>]` when a host call returned its
interface's error variant, 400 `unknown op`.
"""

import os
import socket
import sys
import time

import wit_world
from componentize_py_types import Err
from wit_world.imports import (
    cache,
    dynamodb,
    http,
    invocation,
    log,
    s3,
    secrets,
    spawn,
    topics,
    types,
)

HOLD: list = []  # the memory op's blocks stay referenced until the store dies
MIB = 1024 * 1024


def ok(body: bytes = b"", headers=()) -> types.Response:
    """200 with `body`."""
    return types.Response(status=200, headers=list(headers), body=bytes(body))


def none() -> types.Response:
    """204, empty: `ok(none)` / `ok(_)`."""
    return types.Response(status=204, headers=[], body=b"")


def text(value) -> types.Response:
    """200 with `value` as UTF-8 text."""
    return ok(str(value).encode())


def flag(value: bool) -> types.Response:
    """200 `true` / `false`."""
    return ok(b"true" if value else b"false")


def maybe(value) -> types.Response:
    """204 for none, else 200 with the bytes or text."""
    if value is None:
        return none()
    return ok(value) if isinstance(value, (bytes, bytearray)) else text(value)


def host_error(error) -> types.Response:
    """590 with the variant's case in kebab-case, and `:detail` when it carries one."""
    name = type(error).__name__.removeprefix("Error_")
    case = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
    detail = getattr(error, "value", None)
    body = case if detail is None else f"{case}:{detail}"
    return types.Response(status=590, headers=[], body=body.encode())


def ttl(value: str) -> int:
    """A ttl-ms argument; absent means 0 (no expiry)."""
    return int(value) if value else 0


def outcome(attempt) -> types.Response:
    """`ok` when `attempt()` succeeded, `error` when it raised."""
    try:
        attempt()
    except Exception:  # noqa: BLE001 - any failure is the answer
        return text("error")
    return text("ok")


def open_file(path: str) -> None:
    """Open `path` for reading (and close it)."""
    with open(path, "rb"):
        pass


def connect(port: str) -> None:
    """A TCP connect to 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
        pass


def write(stream, value: str) -> types.Response:
    """Write a line to stdout or stderr, flushed."""
    stream.write(value + "\n")
    stream.flush()
    return none()


def memory_bomb() -> None:
    """Allocate and touch 1 MiB blocks until the store's limit kills the guest."""
    while True:
        HOLD.append(bytearray(b"\x01") * MIB)


def trap() -> None:
    """Fail uncaught: componentize-py aborts, the sandbox sees a trap."""
    raise RuntimeError("trap requested")


def spin() -> None:
    """Never return."""
    while True:
        pass


def outbound(a, body: bytes) -> types.Response:
    """One outbound HTTP request; the upstream's status, headers and body."""
    request = http.Request(
        method=a[1], url=a[2], headers=[], body=body, timeout_ms=int(a[3]) if a[3] else None
    )
    response = http.invoke(request)
    return types.Response(status=response.status, headers=list(response.headers),
                          body=bytes(response.body))


def call_info() -> types.Response:
    """method, path, query, caller, kind and attempt, one per line."""
    query = "&".join(f"{k}={v}" for k, v in invocation.query())
    lines = [
        invocation.method(), invocation.path(), query, invocation.caller() or "",
        invocation.kind().name.lower(), str(invocation.attempt()),
    ]
    return text("\n".join(lines))


OPS = {
    "echo": lambda a, r: ok(r.body, r.headers),
    "status": lambda a, r: types.Response(status=int(a[1]), headers=[], body=b""),
    "trap": lambda a, r: trap(),
    "spin": lambda a, r: spin(),
    "memory": lambda a, r: memory_bomb(),
    "big": lambda a, r: ok(b"x" * int(a[1])),
    "env": lambda a, r: maybe(os.environ.get(a[1])),
    "clock": lambda a, r: text(f"{time.time()} {time.monotonic_ns()}"),
    "random": lambda a, r: ok(os.urandom(16)),
    "file": lambda a, r: outcome(lambda: open_file(a[1])),
    "socket": lambda a, r: outcome(lambda: connect(a[1])),
    "stdin": lambda a, r: ok(sys.stdin.read().encode()),
    "stdout": lambda a, r: write(sys.stdout, a[1]),
    "stderr": lambda a, r: write(sys.stderr, a[1]),
    "cache-get": lambda a, r: maybe(cache.get(a[1])),
    "cache-set": lambda a, r: cache.set(a[1], r.body, ttl(a[2])) or none(),
    "cache-set-if-absent": lambda a, r: flag(cache.set_if_absent(a[1], r.body, ttl(a[2]))),
    "cache-set-if-present": lambda a, r: flag(cache.set_if_present(a[1], r.body, ttl(a[2]))),
    "cache-set-if-equal": lambda a, r: flag(
        cache.set_if_equal(a[1], a["expected"].encode(), r.body, ttl(a[2]))
    ),
    "cache-delete": lambda a, r: cache.delete(a[1]) or none(),
    "cache-increment": lambda a, r: text(cache.increment(a[1], int(a[2] or 0), ttl(a[3]))),
    "http": lambda a, r: outbound(a, r.body),
    "s3-get": lambda a, r: maybe(s3.get_object(a[1], a[2])),
    "s3-put": lambda a, r: s3.put_object(a[1], a[2], r.body, a[3] or None) or none(),
    "s3-delete": lambda a, r: s3.delete_object(a[1], a[2]) or none(),
    "ddb-get": lambda a, r: maybe(dynamodb.get_item(a[1], a[2])),
    "ddb-put": lambda a, r: dynamodb.put_item(a[1], a[2]) or none(),
    "ddb-put-if": lambda a, r: flag(dynamodb.put_item_if(a[1], a[2], a[3], a[4] or "{}")),
    "ddb-delete": lambda a, r: dynamodb.delete_item(a[1], a[2]) or none(),
    "log": lambda a, r: log.log(getattr(log.Level, a[1].upper()), a[2]) or none(),
    "invocation": lambda a, r: call_info(),
    "secret": lambda a, r: maybe(secrets.get(a[1])),
    "publish": lambda a, r: topics.publish(a[1], r.body) or none(),
    "spawn": lambda a, r: text(spawn.job(a[1], [], r.body)),
}


def arguments(headers) -> dict:
    """op, 1..4 (a1..a4) and expected: the first of each header, "" when absent."""
    names = {"op": "op", "a1": 1, "a2": 2, "a3": 3, "a4": 4, "expected": "expected"}
    args: dict = {key: "" for key in names.values()}
    seen = set()
    for name, value in headers:
        if name in names and name not in seen:
            seen.add(name)
            args[names[name]] = value
    return args


class WitWorld(wit_world.WitWorld):
    """The conformance guest's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Run the operation the `op` header names."""
        args = arguments(request.headers)
        op = args["op"]
        if op == "err":
            raise Err(args[1])
        run = OPS.get(op)
        if run is None:
            return types.Response(status=400, headers=[], body=b"unknown op")
        try:
            return run(args, request)
        except Err as exc:
            return host_error(exc.value)
