"""The Rust conformance guest through the real Sandbox, against real services (integration).

The guest (tests/guests/rust/conformance, the protocol of tests/conformance/) is built with
`flotilla.build.rust` and the SDK crate (sdk/rust/flotilla), whose canonical-ABI glue is
written by hand; so every case here also checks a type crossing the boundary: strings and
headers (list<tuple<string, string>>) both ways, list<u8> bodies of every byte value,
options, results and each interface's error variant (cases with and without a payload),
records (http request/response), u64/s64 (ttl, increment), u32/u16, enums (log level,
start kind) and bool. Redis, the moto server and a local HTTP server are real; secrets,
topics and spawn use in-memory clients (their real ones have their own tests).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from flotilla.config import MAX_MAX_BODY_BYTES, FunctionConfig
from flotilla.hosts.base import CallInfo, HostError, InvocationContext
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import InvocationResult, LoadedFunction, Outcome, Sandbox
from flotilla.sandbox.results import Request
from flotilla.settings import WorkerSettings
from tests.guests.rust import rust_guest
from tests.hosts.conftest import RoutesHandler, RoutesServer, closed_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVERY_BYTE = bytes(range(256))


class MemorySecrets:
    """Secrets by (function, name); a function named "down" finds the store unreachable."""

    def get(self, ctx: InvocationContext, name: str) -> str | None:
        """The invocation's own function's secret."""
        if ctx.config.name.endswith("down"):
            raise HostError("unavailable", "secret store down")
        return {"token": "s3cr3t"}.get(name)


class MemoryTopics:
    """Records publishes; refuses topics starting with "no"."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, ctx: InvocationContext, topic: str, message: bytes) -> None:
        """Record or refuse."""
        if topic.startswith("no"):
            raise HostError("denied", f"{topic} is not in publish_topics")
        self.sent.append((topic, message))


class MemorySpawner:
    """Hands out job ids; refuses function "nobody"."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, tuple[tuple[str, str], ...], bytes]] = []

    def job(
        self, ctx: InvocationContext, function: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> str:  # fmt: skip
        """Record and return an id."""
        if function == "nobody":
            raise HostError("invalid-argument", "no function named nobody")
        self.jobs.append((function, tuple(headers), body))
        return f"job-{len(self.jobs)}"


def _cache_dir() -> Path:
    return Path(os.environ.get("FLOTILLA_CACHE_DIR") or Path(tempfile.gettempdir()) / "flotilla")


@pytest.fixture(scope="module")
def hosts(redis_url: str, aws_endpoint_url: str) -> Iterator[HostClients]:
    settings = WorkerSettings(redis_url=redis_url, aws_endpoint_url=aws_endpoint_url)
    clients = HostClients.from_settings(settings)
    yield clients.with_clients(
        secrets=MemorySecrets(), topics=MemoryTopics(), spawn=MemorySpawner()
    )
    clients.close()


@pytest.fixture(scope="module")
def sandbox(hosts: HostClients) -> Iterator[Sandbox]:
    sb = Sandbox(hosts, cache_dir=_cache_dir())
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def guest(sandbox: Sandbox) -> LoadedFunction:
    return sandbox.load(rust_guest("conformance").read_bytes())


@pytest.fixture(scope="module")
def upstream() -> Iterator[RoutesServer]:
    """The host tests' local HTTP server (routes /echo, /slow, /big, /status/N, ...)."""
    server = RoutesServer(("127.0.0.1", 0), RoutesHandler)
    server.seen, server.stop = [], threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def config(unique: str) -> FunctionConfig:
    return FunctionConfig(name=unique, timeout_ms=5_000, max_body_bytes=MAX_MAX_BODY_BYTES)


def invoke(
    sandbox: Sandbox, fn: LoadedFunction, config: FunctionConfig, op: str, *args: str,
    body: bytes = b"", headers: Sequence[tuple[str, str]] = (), call: CallInfo | None = None,
) -> InvocationResult:  # fmt: skip
    """One invocation of `op` with arguments a1..aN (and extra headers)."""
    named = [("op", op), *((f"a{i}", a) for i, a in enumerate(args, 1)), *headers]
    request = Request(f"inv-{os.urandom(4).hex()}", config.name, tuple(named), body,
                      call or CallInfo())  # fmt: skip
    return sandbox.invoke(fn, config, request)


def answer(result: InvocationResult) -> tuple[int, bytes]:
    """(status, body) of a result that must be a response."""
    assert result.outcome is Outcome.OK, result
    assert result.response is not None
    return result.response.status, result.response.body


def test_rust_components_get_the_byte_string_export(guest: LoadedFunction) -> None:
    assert guest.raw is not None


@pytest.mark.parametrize("body", [b"", EVERY_BYTE * 4, b"\x00", "é✓".encode()])
def test_echo_keeps_every_byte_and_header(
    sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig, body: bytes
) -> None:
    headers = (("x-a", "1"), ("X-B", "ünï ✓"), ("x-a", "2"), ("empty", ""))
    result = invoke(sandbox, guest, config, "echo", body=body, headers=headers)
    assert answer(result) == (200, body)
    assert result.response is not None
    assert result.response.headers == (("op", "echo"), *headers)


def test_echo_of_six_mib(sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig) -> None:
    body = EVERY_BYTE * (6 * 4096)
    assert answer(invoke(sandbox, guest, config, "echo", body=body)) == (200, body)


def test_status_err_and_unknown_ops(
    sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig
) -> None:
    assert answer(invoke(sandbox, guest, config, "status", "201")) == (201, b"")
    assert answer(invoke(sandbox, guest, config, "status", "599")) == (599, b"")
    assert invoke(sandbox, guest, config, "status", "999").outcome is Outcome.BAD_RESPONSE
    failed = invoke(sandbox, guest, config, "err", "nope ✓")
    assert failed.outcome is Outcome.FUNCTION_ERROR and "nope ✓" in (failed.error or "")
    assert answer(invoke(sandbox, guest, config, "dance")) == (400, b"unknown op")


def test_trap_timeout_and_memory_bomb(
    sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig
) -> None:
    trapped = invoke(sandbox, guest, config, "trap")
    assert trapped.outcome is Outcome.TRAP
    assert any("trap requested" in r.message for r in trapped.logs)  # the panic message
    short = FunctionConfig(name=config.name, timeout_ms=200)
    assert invoke(sandbox, guest, short, "spin").outcome is Outcome.TIMEOUT
    small = FunctionConfig(name=config.name, memory_limit_mb=32)
    assert invoke(sandbox, guest, small, "memory").outcome is Outcome.MEMORY_LIMIT
    assert answer(invoke(sandbox, guest, config, "big", "1000000")) == (200, b"x" * 1_000_000)


def test_wasi_environment(sandbox: Sandbox, guest: LoadedFunction, unique: str) -> None:
    config = FunctionConfig(name=unique, env={"GREETING": "hi ✓"})
    assert answer(invoke(sandbox, guest, config, "env", "GREETING")) == (200, "hi ✓".encode())
    assert answer(invoke(sandbox, guest, config, "env", "MISSING")) == (204, b"")
    wall, monotonic = answer(invoke(sandbox, guest, config, "clock"))[1].split()
    assert abs(float(wall) - time.time()) < 60 and int(monotonic) > 0
    first = answer(invoke(sandbox, guest, config, "random"))[1]
    assert len(first) == 16 and first != answer(invoke(sandbox, guest, config, "random"))[1]
    assert answer(invoke(sandbox, guest, config, "file", "/etc/passwd")) == (200, b"error")
    assert answer(invoke(sandbox, guest, config, "socket", "6379")) == (200, b"error")
    assert answer(invoke(sandbox, guest, config, "stdin")) == (200, b"")


def test_stdout_stderr_and_logs_are_captured(
    sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig
) -> None:
    out = invoke(sandbox, guest, config, "stdout", "to stdout")
    err = invoke(sandbox, guest, config, "stderr", "to stderr")
    assert answer(out) == answer(err) == (204, b"")
    assert [(r.level, r.message) for r in out.logs] == [("stdout", "to stdout")]
    assert [(r.level, r.message) for r in err.logs] == [("stderr", "to stderr")]
    for level in ("debug", "info", "warn", "error"):
        logged = invoke(sandbox, guest, config, "log", level, f"at {level} ✓")
        assert answer(logged) == (204, b"")
        assert [(r.level, r.message) for r in logged.logs] == [(level, f"at {level} ✓")]


def test_cache_round_trip(sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig) -> None:
    def run(
        op: str, *args: str, body: bytes = b"", expected: str | None = None
    ) -> tuple[int, bytes]:
        extra = (("expected", expected),) if expected is not None else ()
        return answer(invoke(sandbox, guest, config, op, *args, body=body, headers=extra))

    assert run("cache-get", "k") == (204, b"")
    assert run("cache-set-if-present", "k", body=b"a") == (200, b"false")
    assert run("cache-set", "k", "60000", body=EVERY_BYTE) == (204, b"")
    assert run("cache-get", "k") == (200, EVERY_BYTE)
    assert run("cache-set-if-absent", "k", body=b"b") == (200, b"false")
    assert run("cache-set-if-absent", "k2", "1000", body=b"b") == (200, b"true")
    assert run("cache-set", "k", body=b"v1") == (204, b"")
    assert run("cache-set-if-equal", "k", body=b"v2", expected="other") == (200, b"false")
    assert run("cache-set-if-equal", "k", body=b"v2", expected="v1") == (200, b"true")
    assert run("cache-set-if-present", "k", body=b"v3") == (200, b"true")
    assert run("cache-get", "k") == (200, b"v3")
    assert run("cache-increment", "n", "-5", "60000") == (200, b"-5")
    assert run("cache-increment", "n", str(2**62)) == (200, str(2**62 - 5).encode())
    for key in ("k", "k2", "n"):
        assert run("cache-delete", key) == (204, b"")
    assert run("cache-get", "k") == (204, b"")


def test_cache_errors(sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig) -> None:
    status, body = answer(invoke(sandbox, guest, config, "cache-get", "k" * 2000))
    assert status == 590 and body.startswith(b"invalid-argument:")
    # The largest u64 arrives intact (the host's message quotes it), and s64's extremes too.
    huge = str(2**64 - 1)
    status, body = answer(invoke(sandbox, guest, config, "cache-set", "k", huge, body=b"v"))
    assert status == 590 and body.startswith(b"invalid-argument:") and huge.encode() in body
    lowest = str(-(2**63)).encode()
    assert answer(invoke(sandbox, guest, config, "cache-increment", "low", lowest.decode(), "60000")) == (
        200, lowest,
    )  # fmt: skip


def test_cache_unavailable_when_redis_is_down(
    aws_endpoint_url: str, config: FunctionConfig
) -> None:
    settings = WorkerSettings(redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                              aws_endpoint_url=aws_endpoint_url)  # fmt: skip
    clients = HostClients.from_settings(settings)
    sb = Sandbox(clients, cache_dir=_cache_dir())
    try:
        fn = sb.load(rust_guest("conformance").read_bytes())
        for op in ("cache-get", "cache-increment", "cache-set-if-absent"):
            status, body = answer(invoke(sb, fn, config, op, "k"))
            assert status == 590 and body.startswith(b"unavailable:"), (op, body)
    finally:
        sb.close()
        clients.close()


def test_http_round_trip(
    sandbox: Sandbox,
    guest: LoadedFunction,
    upstream: RoutesServer,
    unique: str,
) -> None:
    port = upstream.server_address[1]
    config = FunctionConfig(name=unique, allowed_hosts=(f"127.0.0.1:{port}",))
    url = f"http://127.0.0.1:{port}/echo?q=1"
    result = invoke(sandbox, guest, config, "http", "PUT", url, "3000", body=EVERY_BYTE)
    status, body = answer(result)
    seen = json.loads(body)
    assert status == 200 and (seen["method"], seen["path"]) == ("PUT", "/echo?q=1")
    assert seen["body"].encode("latin-1") == EVERY_BYTE
    assert result.response is not None
    assert [v for k, v in result.response.headers if k.lower() == "x-multi"] == ["1", "2"]
    missing = invoke(sandbox, guest, config, "http", "GET", f"http://127.0.0.1:{port}/status/404")
    assert answer(missing) == (404, b"")


@pytest.mark.parametrize(
    ("path", "timeout", "allowed", "max_body", "expected"),
    [
        ("/echo", "", False, 1000, b"denied:"),
        ("/slow?ms=3000", "100", True, 1000, b"timeout"),
        ("/big?n=5000", "", True, 1000, b"too-large"),
    ],
)
def test_http_errors(
    sandbox: Sandbox, guest: LoadedFunction, upstream: RoutesServer,
    unique: str, path: str, timeout: str, allowed: bool, max_body: int, expected: bytes,
) -> None:  # fmt: skip
    port = upstream.server_address[1]
    hosts = (f"127.0.0.1:{port}",) if allowed else ("example.com",)
    config = FunctionConfig(name=unique, allowed_hosts=hosts, max_body_bytes=max_body)
    args = ("GET", f"http://127.0.0.1:{port}{path}", *((timeout,) if timeout else ()))
    status, body = answer(invoke(sandbox, guest, config, "http", *args))
    assert status == 590 and body.startswith(expected), body
    # Cases without a payload come back bare, those with one as case:detail.
    assert (b":" in body) == (expected.endswith(b":"))


def test_http_connection_and_invalid_request(
    sandbox: Sandbox, guest: LoadedFunction, unique: str
) -> None:
    port = closed_port()
    config = FunctionConfig(name=unique, allowed_hosts=(f"127.0.0.1:{port}",))
    refused = answer(invoke(sandbox, guest, config, "http", "GET", f"http://127.0.0.1:{port}/"))
    assert refused[0] == 590 and refused[1].startswith(b"connection:")
    bad = answer(invoke(sandbox, guest, config, "http", "GET", "ftp://127.0.0.1/x"))
    assert bad[0] == 590 and bad[1].startswith(b"invalid-request:")


def test_s3_round_trip_and_errors(
    sandbox: Sandbox, guest: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    hosts.s3.client.create_bucket(Bucket=unique)
    config = FunctionConfig(name=unique, s3_buckets=(unique,))
    run = lambda op, *a, body=b"": answer(invoke(sandbox, guest, config, op, *a, body=body))
    assert run("s3-get", unique, "o") == (204, b"")
    assert run("s3-put", unique, "o", "text/plain", body=EVERY_BYTE) == (204, b"")
    assert run("s3-put", unique, "p", body=b"no content type") == (204, b"")
    assert run("s3-get", unique, "o") == (200, EVERY_BYTE)
    head = hosts.s3.client.head_object(Bucket=unique, Key="o")
    assert head["ContentType"] == "text/plain"
    assert run("s3-delete", unique, "o") == (204, b"")
    assert run("s3-get", unique, "o") == (204, b"")
    status, body = run("s3-get", "someone-elses-bucket", "o")
    assert status == 590 and body.startswith(b"denied:")


def test_dynamodb_round_trip_and_errors(
    sandbox: Sandbox, guest: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    hosts.dynamodb.client.create_table(
        TableName=unique,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    config = FunctionConfig(name=unique, dynamodb_tables=(unique,))
    run = lambda op, *a: answer(invoke(sandbox, guest, config, op, *a))
    key = json.dumps({"pk": {"S": "a"}})
    item = json.dumps({"pk": {"S": "a"}, "n": {"N": "1"}, "s": {"S": "ünï ✓"}})
    assert run("ddb-get", unique, key) == (204, b"")
    assert run("ddb-put-if", unique, item, "attribute_not_exists(pk)") == (200, b"true")
    assert run("ddb-put-if", unique, item, "attribute_not_exists(pk)") == (200, b"false")
    status, got = run("ddb-get", unique, key)
    assert status == 200 and json.loads(got)["s"] == {"S": "ünï ✓"}
    newer = json.dumps({"pk": {"S": "a"}, "n": {"N": "2"}})
    assert run("ddb-put-if", unique, newer, "n = :old", '{":old": {"N": "1"}}') == (200, b"true")
    assert run("ddb-put", unique, item) == (204, b"")
    assert run("ddb-delete", unique, key) == (204, b"")
    assert run("ddb-get", unique, key) == (204, b"")
    invalid = run("ddb-put", unique, "not json")
    assert invalid[0] == 590 and invalid[1].startswith(b"invalid-argument:")
    denied = run("ddb-get", "other-table", key)
    assert denied[0] == 590 and denied[1].startswith(b"denied:")


def test_invocation_reports_the_call(
    sandbox: Sandbox, guest: LoadedFunction, config: FunctionConfig
) -> None:
    call = CallInfo(method="PATCH", path="/a/b%20c", query=(("x", "1"), ("x", "2"), ("é", "")),
                    caller="k1", kind="spawned", attempt=3)  # fmt: skip
    lines = answer(invoke(sandbox, guest, config, "invocation", call=call))[1].decode()
    assert lines.split("\n") == ["PATCH", "/a/b%20c", "x=1&x=2&é=", "k1", "spawned", "3"]
    default = answer(invoke(sandbox, guest, config, "invocation"))[1].decode()
    assert default.split("\n") == ["POST", "/", "", "", "sync", "1"]


def test_secrets_topics_and_spawn(
    sandbox: Sandbox, guest: LoadedFunction, hosts: HostClients, config: FunctionConfig
) -> None:
    assert answer(invoke(sandbox, guest, config, "secret", "token")) == (200, b"s3cr3t")
    assert answer(invoke(sandbox, guest, config, "secret", "missing")) == (204, b"")
    down = FunctionConfig(name=config.name + "down")
    assert answer(invoke(sandbox, guest, down, "secret", "token")) == (
        590, b"unavailable:secret store down",
    )  # fmt: skip
    assert answer(invoke(sandbox, guest, config, "publish", "news", body=EVERY_BYTE)) == (204, b"")
    assert isinstance(hosts.topics, MemoryTopics) and hosts.topics.sent[-1] == ("news", EVERY_BYTE)
    assert answer(invoke(sandbox, guest, config, "publish", "nope", body=b"m")) == (
        590, b"denied:nope is not in publish_topics",
    )  # fmt: skip
    status, job_id = answer(invoke(sandbox, guest, config, "spawn", "other", body=b"b"))
    assert status == 200 and job_id.startswith(b"job-")
    assert isinstance(hosts.spawn, MemorySpawner) and hosts.spawn.jobs[-1] == ("other", (), b"b")
    assert answer(invoke(sandbox, guest, config, "spawn", "nobody")) == (
        590, b"invalid-argument:no function named nobody",
    )  # fmt: skip


@pytest.fixture(scope="module")
def forward(sandbox: Sandbox) -> LoadedFunction:
    """tests/guests/rust/forward: request headers out through http.invoke and spawn.job."""
    return sandbox.load(rust_guest("forward").read_bytes())


def test_header_lists_are_lowered_into_host_calls(
    sandbox: Sandbox, forward: LoadedFunction, hosts: HostClients,
    upstream: RoutesServer, unique: str,
) -> None:  # fmt: skip
    port = upstream.server_address[1]
    config = FunctionConfig(name=unique, allowed_hosts=(f"127.0.0.1:{port}",))
    sent = (("x-one", "1"), ("x-two", "two words"), ("x-one", "again"))
    to = ("to", f"http://127.0.0.1:{port}/echo")
    result = sandbox.invoke(
        forward, config, Request("i", unique, (("op", "http"), to, *sent), b"b")
    )
    seen = json.loads(answer(result)[1])
    got = [(k.lower(), v) for k, v in seen["headers"] if k.lower().startswith("x-")]
    assert sorted(got) == sorted(sent) and seen["body"] == "b"  # urllib3 groups names
    sent = (*sent, ("x-three", "ünï ✓"))  # the HTTP host refuses non-ASCII header values
    spawned = Request("i", unique, (("op", "spawn"), ("to", "other"), *sent), EVERY_BYTE)
    status, job_id = answer(sandbox.invoke(forward, config, spawned))
    assert status == 200 and job_id.startswith(b"job-")
    assert isinstance(hosts.spawn, MemorySpawner) and hosts.spawn.jobs[-1] == (
        "other",
        sent,
        EVERY_BYTE,
    )


def test_host_errors_cross_with_question_mark(
    sandbox: Sandbox, forward: LoadedFunction, unique: str
) -> None:
    config = FunctionConfig(name=unique)
    request = Request("i", unique, (("op", "http"), ("to", "http://example.com/")), b"")
    failed = sandbox.invoke(forward, config, request)
    assert failed.outcome is Outcome.FUNCTION_ERROR and "denied: " in (failed.error or "")


def test_plain_handle_export_without_the_byte_string_path() -> None:
    # wasmtime-py calls the guest's own `handle` (utf8 strings, list<u8> per byte), the path
    # a component takes when the byte-string export cannot be added; the hosts are fakes.
    from wasmtime.component import Variant

    from tests.build.harness import Runner

    runner = Runner(rust_guest("conformance"))
    headers = [("op", "echo"), ("x-a", "ünï ✓"), ("x-a", "2")]
    echoed = runner.handle(EVERY_BYTE, headers=headers)
    assert (echoed.status, echoed.headers, echoed.body) == (200, headers, EVERY_BYTE)
    assert runner.handle(b"\xff\x00", headers=[("op", "cache-set"), ("a1", "k")]).status == 204
    got = runner.handle(b"", headers=[("op", "cache-get"), ("a1", "k")])
    assert (got.status, got.body, runner.hosts.cache) == (200, b"\xff\x00", {"k": b"\xff\x00"})
    runner.hosts.http_response = (201, [("x-up", "1"), ("x-up", "2")], EVERY_BYTE)
    upstream = runner.handle(b"", headers=[("op", "http"), ("a1", "GET"), ("a2", "http://u/")])
    assert (upstream.status, upstream.headers, upstream.body) == (
        201, [("x-up", "1"), ("x-up", "2")], EVERY_BYTE,
    )  # fmt: skip
    runner.hosts.fail["cache.increment"] = Variant("unavailable", "down ✓")
    failed = runner.handle(b"", headers=[("op", "cache-increment"), ("a1", "n"), ("a2", "1")])
    assert (failed.status, failed.body) == (590, "unavailable:down ✓".encode())
    runner.hosts.fail["http.invoke"] = Variant("too-large")
    too_large = runner.handle(b"", headers=[("op", "http"), ("a1", "GET"), ("a2", "http://u/")])
    assert (too_large.status, too_large.body) == (590, b"too-large")
    assert runner.handle(b"", headers=[("op", "err"), ("a1", "bad ✓")]).err == "bad ✓"
