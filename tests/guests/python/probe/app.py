"""Probe: one multi-purpose test guest whose behaviour the request picks.

A body that is not a JSON object with an "op" is echoed back raw (status 200, the
request's headers). A request without a body (GET, HEAD) names its command in the header
`x-probe-op` instead: an op name, or a JSON command object; the header wins over the body. Otherwise the body is a command `{"op": "<name>", ...args}` and the
answer is usually 200 with a JSON body `{"op": ..., "ok": true, "result": ...}` or
`{"op": ..., "ok": false, "error": "<ExceptionType>: <message>"}` for ops that probe
what the sandbox allows. Host calls answer `{"ok": false, "error": {"case": "<wit case>",
"detail": ...}}` on a host error. Bytes cross JSON as text (UTF-8) or as `{"b64": "..."}`
in arguments; host results that are bytes come back as `{"text": ..., "b64": ...}`.

Ops (arguments with their defaults):
  echo                              -> {invocation_id, function_name, headers, body}
  respond  status=200 headers=[] body=""    -> exactly that response (e.g. status 999)
  big      n=1048576                -> response body of n bytes b"x"
  env                               -> dict(os.environ)
  read_file  path="/etc/passwd"     -> file text
  list_dir   path="/"               -> sorted names
  write_file path="/tmp/probe" data="probe" -> bytes written
  tcp_connect host="127.0.0.1" port=6379 timeout_s=2 -> peer address
  udp_send   host="127.0.0.1" port=9 data="probe"  -> bytes sent
  getaddrinfo host="localhost" port=80 -> addresses
  stdout / stderr  n=1024           -> writes n bytes "o"/"e" (flushed), returns n
  stdin                             -> sys.stdin.read()
  exit     code=0 how="sys"         -> sys.exit(code) (SystemExit), or os._exit(code) with how="os"
  clocks                            -> {time, monotonic, perf_counter}
  random   n=16                     -> {urandom: hex, random: float}
  counter                           -> value of a module global after += 1 (1 when fresh)
  loop                              -> never returns (CPU spin)
  memory_bomb chunk_mb=1 catch=false -> keeps allocating; with catch, returns MiB held at MemoryError
  recursion depth=100000 limit=null -> recurses depth deep; over the recursion limit (default
                                       1000) RecursionError traps; raise `limit` to go deeper
  sleep    ms=100                   -> busy-waits ms, returns elapsed ms
  wall_sleep ms=100                 -> time.sleep (blocks in a WASI poll, not in wasm code)
  alloc    mb=16                    -> allocates and touches mb MiB, returns mb
  err      message="probe error"    -> handle returns err(message)
  raise    message="probe exception" -> raises RuntimeError (uncaught: traps)
  cache.get key | cache.set key value ttl_ms=0 | cache.set_if_absent key value ttl_ms=0
  cache.delete key | cache.increment key delta=1 ttl_ms=0
  http.invoke url method="GET" headers=[] body="" timeout_ms=null
        -> {status, headers, body: {text, b64}}
  s3.get bucket key | s3.put bucket key body content_type=null | s3.delete bucket key
  dynamodb.get table key | dynamodb.put table item | dynamodb.delete table key
        (key/item: DynamoDB-JSON text, or an object which is JSON-encoded)
  cache.set_if_equal key expected value ttl_ms=0 | cache.set_if_present key value ttl_ms=0
  dynamodb.put_if table item condition values={}
  invocation                        -> {method, path, query, caller, kind, attempt, remaining_ms}
  secrets.get name | topics.publish topic message | spawn.job function headers=[] body=""
  log      level="info" message="probe"
  hammer   call={host op} n=100     -> runs the host op n times: {n, ok, errors, last, ms}
  batch    ops=[{op...}, ...]       -> list of each op's JSON result (ops that return JSON)

Seen under plain wasmtime-py (tests/build/test_guests_run.py): `raise`, `recursion` past
the limit, `alloc`/`memory_bomb` past the store's memory limit and an uncaught exception
all trap with `unreachable` (componentize-py aborts); both `exit` forms raise
wasmtime.ExitTrap; `err` returns the err string; file and socket ops fail cleanly
(`ok: false`) when the WASI context grants no preopens and no network.
"""

import base64
import encodings.idna  # noqa: F401 - socket.getaddrinfo needs it and the build only bundles imports
import json
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

COUNTER = 0
HOLD: list = []


def as_bytes(value) -> bytes:
    """Argument to bytes: str as UTF-8, {"b64": ...} decoded, None as empty."""
    if value is None:
        return b""
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode()


def show_bytes(value):
    """Bytes result to JSON: {"text", "b64"}; None stays None."""
    if value is None:
        return None
    return {"text": value.decode("utf-8", "replace"), "b64": base64.b64encode(value).decode()}


def as_json_text(value) -> str:
    """DynamoDB key/item argument: text as is, anything else JSON-encoded."""
    return value if isinstance(value, str) else json.dumps(value)


def error_case(error) -> dict:
    """A WIT error variant as {"case": "kebab-case", "detail": payload or None}."""
    name = type(error).__name__.removeprefix("Error_")
    case = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
    return {"case": case, "detail": getattr(error, "value", None)}


def host_call(cmd: dict):
    """Run one host op; returns its JSON-able result (raises Err on host errors)."""
    op = cmd["op"]
    ttl = int(cmd.get("ttl_ms", 0))
    if op == "cache.get":
        return show_bytes(cache.get(cmd["key"]))
    if op == "cache.set":
        return cache.set(cmd["key"], as_bytes(cmd.get("value")), ttl)
    if op == "cache.set_if_absent":
        return cache.set_if_absent(cmd["key"], as_bytes(cmd.get("value")), ttl)
    if op == "cache.delete":
        return cache.delete(cmd["key"])
    if op == "cache.increment":
        return cache.increment(cmd["key"], int(cmd.get("delta", 1)), ttl)
    if op == "cache.set_if_equal":
        return cache.set_if_equal(
            cmd["key"], as_bytes(cmd.get("expected")), as_bytes(cmd.get("value")), ttl
        )
    if op == "cache.set_if_present":
        return cache.set_if_present(cmd["key"], as_bytes(cmd.get("value")), ttl)
    if op == "http.invoke":
        request = http.Request(
            method=cmd.get("method", "GET"),
            url=cmd["url"],
            headers=[tuple(h) for h in cmd.get("headers", [])],
            body=as_bytes(cmd.get("body")),
            timeout_ms=cmd.get("timeout_ms"),
        )
        response = http.invoke(request)
        return {
            "status": response.status,
            "headers": [list(h) for h in response.headers],
            "body": show_bytes(response.body),
        }
    if op == "s3.get":
        return show_bytes(s3.get_object(cmd["bucket"], cmd["key"]))
    if op == "s3.put":
        return s3.put_object(
            cmd["bucket"], cmd["key"], as_bytes(cmd.get("body")), cmd.get("content_type")
        )
    if op == "s3.delete":
        return s3.delete_object(cmd["bucket"], cmd["key"])
    if op == "dynamodb.get":
        return dynamodb.get_item(cmd["table"], as_json_text(cmd["key"]))
    if op == "dynamodb.put":
        return dynamodb.put_item(cmd["table"], as_json_text(cmd["item"]))
    if op == "dynamodb.delete":
        return dynamodb.delete_item(cmd["table"], as_json_text(cmd["key"]))
    if op == "dynamodb.put_if":
        return dynamodb.put_item_if(
            cmd["table"], as_json_text(cmd["item"]), cmd["condition"],
            as_json_text(cmd.get("values", {})),
        )
    if op == "invocation":
        return {
            "method": invocation.method(),
            "path": invocation.path(),
            "query": [list(q) for q in invocation.query()],
            "caller": invocation.caller(),
            "kind": invocation.kind().name.lower(),
            "attempt": invocation.attempt(),
            "remaining_ms": invocation.remaining_ms(),
        }
    if op == "secrets.get":
        return secrets.get(cmd["name"])
    if op == "topics.publish":
        return topics.publish(cmd["topic"], as_bytes(cmd.get("message")))
    if op == "spawn.job":
        return spawn.job(
            cmd["function"], [tuple(h) for h in cmd.get("headers", [])], as_bytes(cmd.get("body"))
        )
    if op == "log":
        level = getattr(log.Level, str(cmd.get("level", "info")).upper())
        return log.log(level, str(cmd.get("message", "probe")))
    raise KeyError(op)


HOST_OPS = {
    "cache.get", "cache.set", "cache.set_if_absent", "cache.delete", "cache.increment",
    "http.invoke", "s3.get", "s3.put", "s3.delete",
    "dynamodb.get", "dynamodb.put", "dynamodb.delete", "log",
    "cache.set_if_equal", "cache.set_if_present", "dynamodb.put_if", "invocation",
    "secrets.get", "topics.publish", "spawn.job",
}  # fmt: skip


def run_host(cmd: dict) -> dict:
    """A host op as an outcome: {"ok": true, "result"} or {"ok": false, "error": {case, detail}}."""
    try:
        return {"op": cmd["op"], "ok": True, "result": host_call(cmd)}
    except Err as exc:
        return {"op": cmd["op"], "ok": False, "error": error_case(exc.value)}


def hammer(cmd: dict) -> dict:
    """Run one host op n times in a loop."""
    inner, n = cmd["call"], int(cmd.get("n", 100))
    ok = errors = 0
    last = None
    started = time.monotonic()
    for _ in range(n):
        last = run_host(inner)
        if last["ok"]:
            ok += 1
        else:
            errors += 1
    ms = (time.monotonic() - started) * 1000
    return {"n": n, "ok": ok, "errors": errors, "last": last, "ms": ms}


def memory_bomb(cmd: dict):
    """Allocate chunk_mb MiB at a time (touched, held) until failure."""
    chunk = int(cmd.get("chunk_mb", 1)) * 1024 * 1024
    try:
        while True:
            HOLD.append(bytearray(b"\x01") * chunk)
    except MemoryError:
        held = len(HOLD) * chunk // (1024 * 1024)
        HOLD.clear()
        if cmd.get("catch"):
            return held
        raise


def recurse(n: int) -> int:
    """Recursion n deep (not a tail call: the frames stay alive)."""
    return 0 if n <= 0 else 1 + recurse(n - 1)


def system_op(cmd: dict):
    """Ops probing the sandbox's WASI surface; exceptions become {"ok": false}."""
    global COUNTER
    op = cmd["op"]
    if op == "env":
        return dict(os.environ)
    if op == "read_file":
        with open(cmd.get("path", "/etc/passwd")) as handle:
            return handle.read()
    if op == "list_dir":
        return sorted(os.listdir(cmd.get("path", "/")))
    if op == "write_file":
        with open(cmd.get("path", "/tmp/probe"), "w") as handle:
            return handle.write(str(cmd.get("data", "probe")))
    if op == "tcp_connect":
        # A plain connect: no name lookup for IP literals, so a denied lookup and a
        # denied connect are told apart (use getaddrinfo to probe lookups).
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(float(cmd.get("timeout_s", 2)))
            sock.connect((cmd.get("host", "127.0.0.1"), int(cmd.get("port", 6379))))
            return list(sock.getpeername())
    if op == "udp_send":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            data = as_bytes(cmd.get("data", "probe"))
            return sock.sendto(data, (cmd.get("host", "127.0.0.1"), int(cmd.get("port", 9))))
    if op == "getaddrinfo":
        infos = socket.getaddrinfo(cmd.get("host", "localhost"), int(cmd.get("port", 80)))
        return sorted({info[4][0] for info in infos})
    if op in ("stdout", "stderr"):
        n = int(cmd.get("n", 1024))
        stream = sys.stdout if op == "stdout" else sys.stderr
        stream.write(("o" if op == "stdout" else "e") * n)
        stream.flush()
        return n
    if op == "stdin":
        return sys.stdin.read()
    if op == "clocks":
        return {
            "time": time.time(),
            "monotonic": time.monotonic(),
            "perf_counter": time.perf_counter(),
        }
    if op == "random":
        import random

        return {"urandom": os.urandom(int(cmd.get("n", 16))).hex(), "random": random.random()}
    if op == "counter":
        COUNTER += 1
        return COUNTER
    if op == "sleep":
        started = time.monotonic()
        deadline = started + int(cmd.get("ms", 100)) / 1000
        while time.monotonic() < deadline:
            pass
        return (time.monotonic() - started) * 1000
    if op == "wall_sleep":
        started = time.monotonic()
        time.sleep(int(cmd.get("ms", 100)) / 1000)
        return (time.monotonic() - started) * 1000
    if op == "alloc":
        HOLD.append(bytearray(b"\x01") * (int(cmd.get("mb", 16)) * 1024 * 1024))
        return int(cmd.get("mb", 16))
    if op == "memory_bomb":
        return memory_bomb(cmd)
    if op == "recursion":
        if cmd.get("limit") is not None:
            sys.setrecursionlimit(int(cmd["limit"]))
        return recurse(int(cmd.get("depth", 100000)))
    raise KeyError(op)


SYSTEM_OPS = {
    "env", "read_file", "list_dir", "write_file", "tcp_connect", "udp_send", "getaddrinfo",
    "stdout", "stderr", "stdin", "clocks", "random", "counter", "sleep", "wall_sleep",
}  # fmt: skip
# These must not have their exceptions caught: the sandbox should see the failure.
UNCAUGHT_OPS = {"memory_bomb", "recursion", "alloc"}


def run_op(cmd: dict) -> dict:
    """Run one op that answers JSON; used directly and by batch."""
    op = cmd.get("op")
    if op in HOST_OPS:
        return run_host(cmd)
    if op == "hammer":
        return {"op": op, "ok": True, "result": hammer(cmd)}
    if op == "batch":
        return {"op": op, "ok": True, "result": [run_op(c) for c in cmd.get("ops", [])]}
    if op == "echo":
        return {"op": op, "ok": True}
    if op in UNCAUGHT_OPS:
        return {"op": op, "ok": True, "result": system_op(cmd)}
    if op in SYSTEM_OPS:
        try:
            return {"op": op, "ok": True, "result": system_op(cmd)}
        except Exception as exc:  # noqa: BLE001 - the outcome is the point
            return {"op": op, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"op": op, "ok": False, "error": f"unknown op {op!r}"}


def json_response(payload, status: int = 200) -> types.Response:
    """A JSON response."""
    body = json.dumps(payload).encode()
    return types.Response(status=status, headers=[("content-type", "application/json")], body=body)


class WitWorld(wit_world.WitWorld):
    """The probe's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Run the op named by the JSON body, or echo a non-command body."""
        header = next((v for k, v in request.headers if k.lower() == "x-probe-op"), None)
        try:
            if header is not None:
                cmd = json.loads(header) if header.startswith("{") else {"op": header}
            else:
                # Decode first: json.loads(bytes) sniffs UTF-16/32, codecs the build leaves out.
                cmd = json.loads(request.body.decode("utf-8"))
        except ValueError:
            cmd = None
        if not isinstance(cmd, dict) or "op" not in cmd:
            return types.Response(status=200, headers=list(request.headers), body=request.body)
        op = cmd["op"]
        if op == "echo":
            return json_response(
                {
                    "op": "echo",
                    "ok": True,
                    "invocation_id": request.invocation_id,
                    "function_name": request.function_name,
                    "headers": [list(h) for h in request.headers],
                    "body": request.body.decode("utf-8", "replace"),
                }
            )
        if op == "respond":
            return types.Response(
                status=int(cmd.get("status", 200)),
                headers=[tuple(h) for h in cmd.get("headers", [])],
                body=as_bytes(cmd.get("body", "")),
            )
        if op == "big":
            return types.Response(status=200, headers=[], body=b"x" * int(cmd.get("n", 1 << 20)))
        if op == "exit":
            if cmd.get("how") == "os":
                os._exit(int(cmd.get("code", 0)))
            sys.exit(int(cmd.get("code", 0)))
        if op == "loop":
            while True:
                pass
        if op == "err":
            raise Err(str(cmd.get("message", "probe error")))
        if op == "raise":
            raise RuntimeError(str(cmd.get("message", "probe exception")))
        return json_response(run_op(cmd))
