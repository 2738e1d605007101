"""The one table of conformance cases (PROTOCOL.md), run against every language's guest.

A case is a few calls of the conformance guest in a row, under one function config and one
set of host clients (`real`: Redis, the moto server and a local HTTP server; `down`: Redis,
S3 and DynamoDB behind a closed port; `clients`: in-memory secrets, topics and spawn, which
deny names starting with "no" and refuse names with a space as invalid). Arguments and
config values may name `$unique` (the function's name, new for each case and language),
`$http` (the local server's base URL), `$http_host`, `$closed` (a port nothing listens on),
`$bucket`, `$table` and `$redis_port`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flotilla.config import MAX_MAX_BODY_BYTES
from flotilla.hosts.base import SYNC_CALL, CallInfo
from flotilla.sandbox.results import InvocationResult, Outcome, Request

Headers = tuple[tuple[str, str], ...]
ALL_BYTES = bytes(range(256))
MIB = 1024 * 1024
HOST_ERROR_STATUS = 590


@dataclass
class Env:
    """What a case's placeholders and checks may use."""

    vars: dict[str, str]
    redis: Any  # a redis.Redis on the real server (for TTLs)
    # What the in-memory clients were given, by every case: (caller, topic, message) and
    # (caller, function, headers, body, job id); checks keep their own function's.
    published: list[tuple[str, str, bytes]] = field(default_factory=list)
    spawned: list[tuple[str, str, Headers, bytes, str]] = field(default_factory=list)


Check = Callable[[InvocationResult, Request, Env], None]


@dataclass(frozen=True)
class Call:
    """One invocation: `op`, its arguments a1..a4, and what must come back."""

    op: str
    args: tuple[str, ...] = ()
    body: bytes = b""
    before: Headers = ()  # headers sent before `op` and the arguments
    after: Headers = ()  # headers sent after them (repeats here must not count)
    status: int | None = 200
    expect: bytes | None = None  # the exact body, when given
    outcome: Outcome = Outcome.OK
    check: Check | None = None

    def headers(self, subst: Callable[[str], str]) -> Headers:
        """The request's headers, placeholders filled in."""
        args = tuple((f"a{i}", subst(a)) for i, a in enumerate(self.args, 1))
        op = (("op", self.op),) if self.op else ()
        return self.before + op + args + self.after


@dataclass(frozen=True)
class Case:
    """Calls run in order in fresh instances of one function."""

    name: str
    calls: tuple[Call, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    hosts: str = "real"  # real | down | clients
    call_info: CallInfo = SYNC_CALL


def ok(op: str, *args: str, expect: bytes | None = None, **kw: Any) -> Call:
    """200 (with body `expect` when given)."""
    return Call(op, args, expect=expect, **kw)


def none(op: str, *args: str, **kw: Any) -> Call:
    """204 with an empty body: the call returned ok(none) / ok(_)."""
    return Call(op, args, status=204, expect=b"", **kw)


def host_error(op: str, *args: str, case: str, **kw: Any) -> Call:
    """590 with body `<case>` or `<case>:<detail>`."""
    return Call(op, args, status=HOST_ERROR_STATUS, check=_error_case(case), **kw)


def fails(op: str, *args: str, outcome: Outcome, **kw: Any) -> Call:
    """No response: the sandbox reports `outcome`."""
    return Call(op, args, status=None, outcome=outcome, **kw)


# ---- checks ---------------------------------------------------------------------------------


def _error_case(case: str) -> Check:
    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert result.response is not None
        body = result.response.body.decode("utf-8", "replace")
        assert body == case or body.startswith(case + ":"), f"expected {case!r}, got {body!r}"

    return check


def echoes(result: InvocationResult, request: Request, env: Env) -> None:
    """The response carries the request's headers in order (repeats kept) and its body."""
    assert result.response is not None
    assert result.response.headers == request.headers
    assert result.response.body == request.body


def error_is(message: str) -> Check:
    """handle returned err(message)."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert result.error == message

    return check


def logged(level: str, message: str) -> Check:
    """The invocation's logs hold exactly one record (level, message)."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert [(r.level, r.message) for r in result.logs] == [(level, message)]

    return check


def clock(result: InvocationResult, request: Request, env: Env) -> None:
    """`<wall seconds> <monotonic ns>`: the wall clock is the host's, monotonic is positive."""
    assert result.response is not None
    wall, mono = result.response.body.decode().split(" ")
    assert abs(float(wall) - time.time()) < 60
    assert int(mono) > 0


def sixteen_random_bytes(result: InvocationResult, request: Request, env: Env) -> None:
    """16 bytes, not all equal (a fixed or zeroed source would show)."""
    assert result.response is not None
    body = result.response.body
    assert len(body) == 16 and len(set(body)) > 1


def x_bytes(n: int) -> Check:
    """A body of n bytes `x`."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert result.response is not None
        assert len(result.response.body) == n and result.response.body.strip(b"x") == b""

    return check


def ttl_set(key: str, ttl_ms: int) -> Check:
    """The cache key has an expiry of at most `ttl_ms` (the u64 argument crossed intact)."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        left = env.redis.pttl(f"fn:{env.vars['unique']}:{key}")
        assert 0 < left <= ttl_ms

    return check


def upstream_echo(method: str, body: str) -> Check:
    """The local server's /echo answer: it saw `method` and `body`; its repeated header kept."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert result.response is not None
        seen = json.loads(result.response.body)
        assert (seen["method"], seen["body"]) == (method, body)
        multi = [v for k, v in result.response.headers if k.lower() == "x-multi"]
        assert multi == ["1", "2"]

    return check


def item_is(item: dict[str, Any]) -> Check:
    """The DynamoDB-JSON body decodes to `item`."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert result.response is not None
        assert json.loads(result.response.body) == item

    return check


def lines(*expected: str) -> Check:
    """The body's lines (a trailing newline allowed)."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert result.response is not None
        assert result.response.body.decode().rstrip("\n").split("\n") == list(expected)

    return check


def published(topic: str, message: bytes) -> Check:
    """The in-memory topics client got exactly this publish."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        mine = [(t, m) for caller, t, m in env.published if caller == env.vars["unique"]]
        assert mine == [(topic, message)]

    return check


def spawned(function: str, body: bytes) -> Check:
    """The in-memory spawner got this job and the guest answered its id."""

    def check(result: InvocationResult, request: Request, env: Env) -> None:
        assert result.response is not None
        mine = [job for job in env.spawned if job[0] == env.vars["unique"]]
        assert [(f, h, b) for _, f, h, b, _ in mine] == [(function, (), body)]
        assert result.response.body == mine[0][4].encode()

    return check


# ---- the table --------------------------------------------------------------------------

BIG_BODY = ALL_BYTES * (6 * MIB // 256)
ITEM = {"pk": {"S": "$unique"}, "n": {"N": "1"}, "b": {"B": "AAEC"}}
ITEM_JSON = json.dumps(ITEM)
KEY_JSON = json.dumps({"pk": {"S": "$unique"}})
HTTP = {"allowed_hosts": ("$http_host",)}
CALL = CallInfo(method="PATCH", path="/a/b", query=(("x", "1"), ("x", "2"), ("y", "")),
                caller="key-1", kind="spawned", attempt=3)

CASES: tuple[Case, ...] = (
    # -- the request and response records
    Case("echo-every-byte-and-header", (
        ok("echo", body=ALL_BYTES * 4, check=echoes,
           before=(("x-a", "1"), ("x-b", "2"), ("x-a", "3"), ("x-utf8", "h\u00e9 \u2713"))),
    )),
    Case("echo-empty", (ok("echo", expect=b"", check=echoes),)),
    Case("echo-6mib", (ok("echo", body=BIG_BODY, check=echoes),),
         config={"max_body_bytes": MAX_MAX_BODY_BYTES}),
    Case("unknown-op", (
        Call("nope", status=400, expect=b"unknown op"),
        Call("", status=400, expect=b"unknown op"),
    )),
    Case("first-header-counts", (
        ok("env", "FIRST", expect=b"1", before=(("x", "y"),),
           after=(("a1", "SECOND"), ("op", "echo"))),
    ), config={"env": {"FIRST": "1", "SECOND": "2"}}),
    Case("status", (
        Call("status", ("201",), status=201, expect=b""),
        Call("status", ("599",), status=599, expect=b""),
        fails("status", "999", outcome=Outcome.BAD_RESPONSE),
    )),
    Case("big", (
        ok("big", "3000000", check=x_bytes(3_000_000)),
        ok("big", "0", expect=b""),
    ), config={"max_body_bytes": MAX_MAX_BODY_BYTES}),
    Case("big-over-max-body", (fails("big", "1001", outcome=Outcome.BAD_RESPONSE),),
         config={"max_body_bytes": 1000}),
    # -- failures
    Case("err", (
        fails("err", "it broke", outcome=Outcome.FUNCTION_ERROR, check=error_is("it broke")),
        fails("err", "\u00e7a a cass\u00e9 \u2717", outcome=Outcome.FUNCTION_ERROR,
              check=error_is("\u00e7a a cass\u00e9 \u2717")),
    )),
    Case("trap", (fails("trap", outcome=Outcome.TRAP), ok("echo", check=echoes))),
    Case("timeout", (fails("spin", outcome=Outcome.TIMEOUT),), config={"timeout_ms": 300}),
    Case("memory-bomb", (fails("memory", outcome=Outcome.MEMORY_LIMIT), ok("echo")),
         config={"memory_limit_mb": 128, "timeout_ms": 20_000}),
    # -- the WASI surface
    Case("env", (
        ok("env", "GREETING", expect="hello w\u00f6rld".encode()),
        ok("env", "FLOTILLA_FUNCTION_NAME", check=lambda r, q, e: _body_is(r, e.vars["unique"])),
        none("env", "MISSING"),
    ), config={"env": {"GREETING": "hello w\u00f6rld"}}),
    Case("clock", (ok("clock", check=clock),)),
    Case("random", (ok("random", check=sixteen_random_bytes),)),
    Case("no-filesystem", (
        ok("file", "/etc/passwd", expect=b"error"),
        ok("file", "/", expect=b"error"),
        ok("file", ".", expect=b"error"),
    )),
    Case("no-sockets", (
        ok("socket", "$redis_port", expect=b"error"),
        ok("socket", "$http_port", expect=b"error"),
    )),
    Case("empty-stdin", (ok("stdin", expect=b""),)),
    Case("stdout-captured", (none("stdout", "to stdout", check=logged("stdout", "to stdout")),)),
    Case("stderr-captured", (none("stderr", "to stderr", check=logged("stderr", "to stderr")),)),
    # -- cache
    Case("cache", (
        none("cache-get", "k"),
        none("cache-set", "k", body=b"v1"),
        ok("cache-get", "k", expect=b"v1"),
        ok("cache-set-if-absent", "k", body=b"v2", expect=b"false"),
        ok("cache-set-if-absent", "k2", "60000", body=b"v2", expect=b"true",
           check=ttl_set("k2", 60_000)),
        ok("cache-set-if-present", "k", body=b"v3", expect=b"true"),
        ok("cache-set-if-present", "k3", body=b"v3", expect=b"false"),
        ok("cache-set-if-equal", "k", body=b"v4", after=(("expected", "zz"),), expect=b"false"),
        ok("cache-set-if-equal", "k", body=b"v4", after=(("expected", "v3"),), expect=b"true"),
        ok("cache-get", "k", expect=b"v4"),
        none("cache-delete", "k"),
        none("cache-get", "k"),
        none("cache-delete", "k"),
        none("cache-set", "bin", "90000", body=ALL_BYTES, check=ttl_set("bin", 90_000)),
        ok("cache-get", "bin", expect=ALL_BYTES),
        ok("cache-increment", "n", "5", expect=b"5"),
        ok("cache-increment", "n", "-7", expect=b"-2"),
        ok("cache-increment", "n", "1000000000", expect=b"999999998"),
    )),
    Case("cache-invalid-argument", (
        host_error("cache-get", "k" * 1025, case="invalid-argument"),
        none("cache-set", "word", body=b"abc"),
        host_error("cache-increment", "word", "1", case="invalid-argument"),
    )),
    Case("cache-down", (
        host_error("cache-get", "k", case="unavailable"),
        host_error("cache-set", "k", body=b"v", case="unavailable"),
        host_error("cache-set-if-absent", "k", body=b"v", case="unavailable"),
        host_error("cache-increment", "n", "1", case="unavailable"),
        host_error("cache-delete", "k", case="unavailable"),
    ), hosts="down"),
    Case("aws-down", (
        host_error("s3-get", "$bucket", "k", case="unavailable"),
        host_error("s3-put", "$bucket", "k", body=b"v", case="unavailable"),
        host_error("ddb-get", "$table", KEY_JSON, case="unavailable"),
        host_error("ddb-put-if", "$table", ITEM_JSON, "attribute_not_exists(pk)", "{}",
                   case="unavailable"),
    ), config={"s3_buckets": ("$bucket",), "dynamodb_tables": ("$table",)}, hosts="down"),
    # -- outbound HTTP
    Case("http", (
        ok("http", "GET", "$http/echo", check=upstream_echo("GET", "")),
        ok("http", "POST", "$http/echo", "5000", body=b"payload",
           check=upstream_echo("POST", "payload")),
        Call("http", ("GET", "$http/status/404"), status=404),
    ), config=HTTP),
    Case("http-denied", (host_error("http", "GET", "$http/echo", case="denied"),)),
    Case("http-timeout", (host_error("http", "GET", "$http/slow?ms=2000", "100", case="timeout"),),
         config=HTTP),
    Case("http-connection", (host_error("http", "GET", "http://127.0.0.1:$closed/",
                                        case="connection"),),
         config={"allowed_hosts": ("127.0.0.1:$closed",)}),
    Case("http-invalid-request", (
        host_error("http", "GE T", "$http/echo", case="invalid-request"),
        host_error("http", "GET", "ftp://127.0.0.1/", case="invalid-request"),
    ), config=HTTP),
    Case("http-too-large", (host_error("http", "GET", "$http/big?n=5000", case="too-large"),),
         config={**HTTP, "max_body_bytes": 1000}),
    # -- S3
    Case("s3", (
        none("s3-get", "$bucket", "$unique/o"),
        none("s3-put", "$bucket", "$unique/o", "application/x-test", body=ALL_BYTES),
        ok("s3-get", "$bucket", "$unique/o", expect=ALL_BYTES),
        none("s3-put", "$bucket", "$unique/o", body=b""),
        ok("s3-get", "$bucket", "$unique/o", expect=b""),
        none("s3-delete", "$bucket", "$unique/o"),
        none("s3-get", "$bucket", "$unique/o"),
        none("s3-delete", "$bucket", "$unique/o"),
    ), config={"s3_buckets": ("$bucket",)}),
    Case("s3-errors", (
        host_error("s3-get", "other-bucket", "k", case="denied"),
        host_error("s3-put", "other-bucket", "k", body=b"x", case="denied"),
        host_error("s3-get", "$bucket", "", case="invalid-argument"),
    ), config={"s3_buckets": ("$bucket",)}),
    # -- DynamoDB
    Case("dynamodb", (
        none("ddb-get", "$table", KEY_JSON),
        none("ddb-put", "$table", ITEM_JSON),
        ok("ddb-get", "$table", KEY_JSON, check=lambda r, q, e: item_is(_filled(ITEM, e))(r, q, e)),
        ok("ddb-put-if", "$table", ITEM_JSON, "attribute_not_exists(pk)", "{}", expect=b"false"),
        ok("ddb-put-if", "$table", ITEM_JSON.replace('"1"', '"2"'), "n = :old",
           '{":old": {"N": "1"}}', expect=b"true"),
        none("ddb-delete", "$table", KEY_JSON),
        none("ddb-get", "$table", KEY_JSON),
    ), config={"dynamodb_tables": ("$table",)}),
    Case("dynamodb-errors", (
        host_error("ddb-get", "other-table", KEY_JSON, case="denied"),
        host_error("ddb-get", "$table", "not json", case="invalid-argument"),
        host_error("ddb-put-if", "$table", ITEM_JSON, "n = :old", "not json",
                   case="invalid-argument"),
    ), config={"dynamodb_tables": ("$table",)}),
    # -- log, invocation, secrets, topics, spawn
    Case("log", tuple(
        none("log", level, f"a {level} line", check=logged(level, f"a {level} line"))
        for level in ("debug", "info", "warn", "error")
    )),
    Case("invocation-default", (ok("invocation", check=lines("POST", "/", "", "", "sync", "1")),)),
    Case("invocation-given", (
        ok("invocation", check=lines("PATCH", "/a/b", "x=1&x=2&y=", "key-1", "spawned", "3")),
    ), call_info=CALL),
    Case("unconfigured-clients-unavailable", (
        host_error("secret", "token", case="unavailable"),
        host_error("publish", "news", body=b"hi", case="unavailable"),
        host_error("spawn", "other", body=b"job", case="unavailable"),
    )),
    Case("secrets", (
        ok("secret", "token", expect=b"s3cr3t"),
        none("secret", "missing"),
    ), hosts="clients"),
    Case("publish", (
        none("publish", "news", body=ALL_BYTES, check=published("news", ALL_BYTES)),
        host_error("publish", "nope", body=b"hi", case="denied"),
        host_error("publish", "bad name", body=b"hi", case="invalid-argument"),
    ), hosts="clients"),
    Case("spawn", (
        ok("spawn", "other", body=b"job body", check=spawned("other", b"job body")),
        host_error("spawn", "nope", case="denied"),
        host_error("spawn", "bad name", case="invalid-argument"),
    ), hosts="clients"),
)  # fmt: skip


def _body_is(result: InvocationResult, text: str) -> None:
    assert result.response is not None
    assert result.response.body == text.encode()


def _filled(value: Any, env: Env) -> Any:
    """`value` (JSON-like) with `$unique` filled in."""
    return json.loads(json.dumps(value).replace("$unique", env.vars["unique"]))
