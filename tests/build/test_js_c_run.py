"""The JavaScript, TypeScript and C guests through the real Sandbox and real services.

Each language's conformance guest (tests/guests/<lang>/conformance, the protocol of the
shared conformance suite) runs the same cases against real Redis, the moto server (S3,
DynamoDB) and a local HTTP server: bytes and headers crossing (6 MiB of every byte value
on the byte-string export), outcomes (err, trap, timeout, memory), WASI (env, clocks,
random, no files, no sockets, empty stdin, captured stdout/stderr) and every host call with
its errors. The examples (echo, token-vending) run too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from flotilla.config import DEFAULT_MAX_BODY_BYTES, FunctionConfig
from flotilla.hosts.base import CallInfo, HostError, InvocationContext
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import LoadedFunction, Outcome, Sandbox
from flotilla.sandbox.results import InvocationResult, Request
from flotilla.settings import WorkerSettings
from tests.build.js_c_guests import LANGUAGES, example, guest
from tests.hosts.conftest import http_server  # noqa: F401 - fixture
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALL_BYTES = bytes(range(256))


class MemorySecrets:
    """Secrets by (function, name)."""

    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = values

    def get(self, ctx: InvocationContext, name: str) -> str | None:
        """The invocation's own function's secret."""
        return self.values.get((ctx.config.name, name))


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
    """Hands out job ids."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, bytes]] = []

    def job(
        self, ctx: InvocationContext, function: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> str:  # fmt: skip
        """Record and return an id."""
        self.jobs.append((function, body))
        return f"job-{len(self.jobs)}"


@pytest.fixture(scope="module")
def hosts(redis_url: str, aws_endpoint_url: str) -> Iterator[HostClients]:
    """Real Redis and moto clients, with in-memory secrets, topics and spawn."""
    clients = HostClients.from_settings(
        WorkerSettings(redis_url=redis_url, aws_endpoint_url=aws_endpoint_url)
    )
    yield clients.with_clients(
        secrets=MemorySecrets({}), topics=MemoryTopics(), spawn=MemorySpawner()
    )
    clients.close()


@pytest.fixture(scope="module")
def sandbox(hosts: HostClients, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A Sandbox over the real hosts."""
    sb = Sandbox(hosts, cache_dir=tmp_path_factory.mktemp("js-c-run"))
    yield sb
    sb.close()


@pytest.fixture(scope="module", params=LANGUAGES)
def lang(request: pytest.FixtureRequest) -> str:
    """Each language in turn."""
    return str(request.param)


@pytest.fixture(scope="module")
def fn(sandbox: Sandbox, lang: str) -> LoadedFunction:
    """The language's conformance guest, loaded."""
    return sandbox.load(guest(lang, "conformance").read_bytes())


def call(
    sandbox: Sandbox, fn: LoadedFunction, config: FunctionConfig, op: str, body: bytes = b"",
    *, info: CallInfo | None = None, **args: str,
) -> InvocationResult:  # fmt: skip
    """One op of the conformance protocol."""
    headers = (("op", op), *((k.replace("_", "-"), v) for k, v in args.items()))
    request = Request("inv-1", config.name, headers, body, info or CallInfo())
    return sandbox.invoke(fn, config, request)


def answer(result: InvocationResult) -> tuple[int, bytes]:
    """(status, body) of a successful invocation."""
    assert result.outcome is Outcome.OK, result.error
    assert result.response is not None
    return result.response.status, result.response.body


def cfg(name: str, **overrides: Any) -> FunctionConfig:
    """A config for function `name`."""
    values: dict[str, Any] = {"name": name, "timeout_ms": 5_000, "memory_limit_mb": 64}
    values.update(overrides)
    return FunctionConfig(**values)


def test_every_byte_value_and_headers_cross_on_the_byte_string_export(
    sandbox: Sandbox, fn: LoadedFunction, unique: str
) -> None:
    assert fn.raw is not None  # QuickJS (nested component) and C both get the export
    config = cfg(unique, max_body_bytes=DEFAULT_MAX_BODY_BYTES, memory_limit_mb=256)
    big = ALL_BYTES * (DEFAULT_MAX_BODY_BYTES // 256)
    headers = (("op", "echo"), ("x-a", "1"), ("x-caf\u00e9", "\u2603"), ("x-a", "2"))
    for body in (big, b"", ALL_BYTES):
        result = sandbox.invoke(fn, config, Request("i", unique, headers, body, CallInfo()))
        assert answer(result) == (200, body)
        assert result.response is not None and result.response.headers == headers


def test_status_error_and_failures(sandbox: Sandbox, fn: LoadedFunction, unique: str) -> None:
    config = cfg(unique, timeout_ms=1_000)
    assert answer(call(sandbox, fn, config, "status", a1="201")) == (201, b"")
    assert call(sandbox, fn, config, "status", a1="999").outcome is Outcome.BAD_RESPONSE
    failed = call(sandbox, fn, config, "err", a1="no luck \u2603")
    assert (failed.outcome, failed.error) == (Outcome.FUNCTION_ERROR, "no luck \u2603")
    assert call(sandbox, fn, config, "trap").outcome is Outcome.TRAP
    assert call(sandbox, fn, config, "spin").outcome is Outcome.TIMEOUT
    assert call(sandbox, fn, config, "memory").outcome is Outcome.MEMORY_LIMIT
    assert answer(call(sandbox, fn, config, "big", a1="100000")) == (200, b"x" * 100_000)
    assert answer(call(sandbox, fn, config, "nope")) == (400, b"unknown op")
    assert answer(call(sandbox, fn, config, "status", a1="200")) == (200, b"")  # still fine


def test_wasi_env_clocks_random_and_isolation(
    sandbox: Sandbox, fn: LoadedFunction, unique: str
) -> None:
    import time

    config = cfg(unique, env={"GREETING": "h\u00e9llo"})
    assert answer(call(sandbox, fn, config, "env", a1="GREETING")) == (200, "h\u00e9llo".encode())
    assert answer(call(sandbox, fn, config, "env", a1="NOT_SET")) == (204, b"")
    assert answer(call(sandbox, fn, config, "env", a1="FLOTILLA_FUNCTION_NAME")) == (
        200, unique.encode(),
    )  # fmt: skip
    wall, monotonic = answer(call(sandbox, fn, config, "clock"))[1].split()
    assert abs(float(wall) - time.time()) < 60 and int(monotonic) >= 0
    first = answer(call(sandbox, fn, config, "random"))[1]
    assert len(first) == 16 and first != answer(call(sandbox, fn, config, "random"))[1]
    assert answer(call(sandbox, fn, config, "file", a1="/etc/passwd")) == (200, b"error")
    assert answer(call(sandbox, fn, config, "socket", a1="6379")) == (200, b"error")
    assert answer(call(sandbox, fn, config, "stdin")) == (200, b"")
    out = call(sandbox, fn, config, "stdout", a1="to stdout \u2603")
    err = call(sandbox, fn, config, "stderr", a1="to stderr")
    assert answer(out) == (204, b"") and answer(err) == (204, b"")
    assert [(r.level, r.message) for r in out.logs] == [("stdout", "to stdout \u2603")]
    assert [(r.level, r.message) for r in err.logs] == [("stderr", "to stderr")]


def test_cache_calls_against_redis(
    sandbox: Sandbox, fn: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    config = cfg(unique)
    try:
        assert answer(call(sandbox, fn, config, "cache-get", a1="k")) == (204, b"")
        assert answer(call(sandbox, fn, config, "cache-set", b"v\x00\xff", a1="k")) == (204, b"")
        assert answer(call(sandbox, fn, config, "cache-get", a1="k")) == (200, b"v\x00\xff")
        assert hosts.redis.get(f"fn:{unique}:k") == b"v\x00\xff"
        assert answer(call(sandbox, fn, config, "cache-set-if-absent", b"w", a1="k")) == (
            200, b"false",
        )  # fmt: skip
        assert answer(call(sandbox, fn, config, "cache-set-if-present", b"w", a1="k")) == (
            200, b"true",
        )  # fmt: skip
        equal = call(sandbox, fn, config, "cache-set-if-equal", b"z", a1="k", expected="w")
        assert answer(equal) == (200, b"true")
        unequal = call(sandbox, fn, config, "cache-set-if-equal", b"q", a1="k", expected="w")
        assert answer(unequal) == (200, b"false")
        assert answer(call(sandbox, fn, config, "cache-get", a1="k")) == (200, b"z")
        increment = call(sandbox, fn, config, "cache-increment", a1="n", a2="-7", a3="60000")
        assert answer(increment) == (200, b"-7")
        assert 0 < hosts.redis.pttl(f"fn:{unique}:n") <= 60_000
        assert answer(call(sandbox, fn, config, "cache-delete", a1="k")) == (204, b"")
        assert answer(call(sandbox, fn, config, "cache-get", a1="k")) == (204, b"")
        status, body = answer(call(sandbox, fn, config, "cache-set", b"v", a1="x" * 1025))
        assert status == 590 and body.startswith(b"invalid-argument:")
    finally:
        hosts.redis.delete(f"fn:{unique}:k", f"fn:{unique}:n")


def test_cache_unavailable_when_redis_is_down(
    lang: str, tmp_path: Path, aws_endpoint_url: str, unique: str
) -> None:
    down = HostClients.from_settings(WorkerSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    sb = Sandbox(down, cache_dir=tmp_path)
    try:
        fn = sb.load(guest(lang, "conformance").read_bytes())
        status, body = answer(call(sb, fn, cfg(unique), "cache-get", a1="k"))
        assert status == 590 and body.startswith(b"unavailable:")
    finally:
        sb.close()
        down.close()


def test_http_calls(
    sandbox: Sandbox,
    fn: LoadedFunction,
    http_server: Any,  # noqa: F811 - the imported fixture
    unique: str,
) -> None:
    port = http_server.server_address[1]
    config = cfg(unique, allowed_hosts=(f"127.0.0.1:{port}",))
    base = f"http://127.0.0.1:{port}"
    result = call(sandbox, fn, config, "http", b"ping", a1="POST", a2=f"{base}/echo")
    status, body = answer(result)
    assert status == 200 and json.loads(body)["body"] == "ping"
    assert result.response is not None
    multi = [h for h in result.response.headers if h[0] == "X-Multi"]
    assert multi == [("X-Multi", "1"), ("X-Multi", "2")]  # upstream headers, repeats in order
    assert answer(call(sandbox, fn, config, "http", a1="GET", a2=f"{base}/status/418"))[0] == 418
    denied = answer(call(sandbox, fn, config, "http", a1="GET", a2="http://example.com/"))
    assert denied[0] == 590 and denied[1].startswith(b"denied:")
    slow = call(sandbox, fn, config, "http", a1="GET", a2=f"{base}/slow?ms=2000", a3="100")
    assert answer(slow) == (590, b"timeout")  # a case without a message
    bad = answer(call(sandbox, fn, config, "http", a1="GET", a2="ftp://x/"))
    assert bad[0] == 590 and bad[1].split(b":")[0] in (b"invalid-request", b"denied")


def test_s3_and_dynamodb_calls(
    sandbox: Sandbox, fn: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    s3, dynamodb = hosts.s3.client, hosts.dynamodb.client
    s3.create_bucket(Bucket=unique)
    dynamodb.create_table(
        TableName=unique,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    config = cfg(unique, s3_buckets=(unique,), dynamodb_tables=(unique,))
    item, key = '{"pk": {"S": "a"}, "v": {"N": "1"}}', '{"pk": {"S": "a"}}'
    try:
        put = call(sandbox, fn, config, "s3-put", ALL_BYTES, a1=unique, a2="o", a3="x/y")
        assert answer(put) == (204, b"")
        assert s3.get_object(Bucket=unique, Key="o")["ContentType"] == "x/y"
        assert answer(call(sandbox, fn, config, "s3-get", a1=unique, a2="o")) == (200, ALL_BYTES)
        assert answer(call(sandbox, fn, config, "s3-get", a1=unique, a2="no")) == (204, b"")
        assert answer(call(sandbox, fn, config, "s3-delete", a1=unique, a2="o")) == (204, b"")
        other = answer(call(sandbox, fn, config, "s3-get", a1="other-bucket", a2="o"))
        assert other[0] == 590 and other[1].startswith(b"denied:")

        assert answer(call(sandbox, fn, config, "ddb-put", a1=unique, a2=item)) == (204, b"")
        status, got = answer(call(sandbox, fn, config, "ddb-get", a1=unique, a2=key))
        assert status == 200 and json.loads(got) == json.loads(item)
        cond = ("attribute_not_exists(pk)", "{}")
        first = call(sandbox, fn, config, "ddb-put-if", a1=unique, a2=item, a3=cond[0], a4=cond[1])
        assert answer(first) == (200, b"false")
        assert answer(call(sandbox, fn, config, "ddb-delete", a1=unique, a2=key)) == (204, b"")
        assert answer(call(sandbox, fn, config, "ddb-get", a1=unique, a2=key)) == (204, b"")
        again = call(sandbox, fn, config, "ddb-put-if", a1=unique, a2=item, a3=cond[0], a4=cond[1])
        assert answer(again) == (200, b"true")
        bad = answer(call(sandbox, fn, config, "ddb-get", a1=unique, a2="{not json"))
        assert bad[0] == 590 and bad[1].startswith(b"invalid-argument:")
    finally:
        for obj in s3.list_objects_v2(Bucket=unique).get("Contents", []):
            s3.delete_object(Bucket=unique, Key=obj["Key"])
        s3.delete_bucket(Bucket=unique)
        dynamodb.delete_table(TableName=unique)


def test_log_invocation_secrets_topics_spawn(
    sandbox: Sandbox, fn: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    config = cfg(unique)
    logged = call(sandbox, fn, config, "log", a1="warn", a2="from the guest \u2603")
    assert answer(logged) == (204, b"")
    assert [(r.level, r.message) for r in logged.logs] == [("warn", "from the guest \u2603")]
    info = CallInfo(method="PATCH", path="/a/b", query=(("x", "1"), ("x", "2"), ("\u00e9", "")),
                    caller="key-1", kind="spawned", attempt=3)  # fmt: skip
    seen = answer(call(sandbox, fn, config, "invocation", info=info))
    assert seen == (200, "PATCH\n/a/b\nx=1&x=2&\u00e9=\nkey-1\nspawned\n3".encode())
    assert answer(call(sandbox, fn, config, "invocation")) == (200, b"POST\n/\n\n\nsync\n1")
    assert isinstance(hosts.secrets, MemorySecrets)
    hosts.secrets.values[(unique, "api-key")] = "s3cr\u00e9t"
    assert answer(call(sandbox, fn, config, "secret", a1="api-key")) == (
        200,
        "s3cr\u00e9t".encode(),
    )
    assert answer(call(sandbox, fn, config, "secret", a1="other")) == (204, b"")
    assert answer(call(sandbox, fn, config, "publish", b"m\x00", a1="news")) == (204, b"")
    assert isinstance(hosts.topics, MemoryTopics) and ("news", b"m\x00") in hosts.topics.sent
    refused = answer(call(sandbox, fn, config, "publish", b"m", a1="nope"))
    assert refused == (590, b"denied:nope is not in publish_topics")
    status, job_id = answer(call(sandbox, fn, config, "spawn", b"work", a1="worker-fn"))
    assert status == 200 and job_id.startswith(b"job-")
    assert isinstance(hosts.spawn, MemorySpawner) and ("worker-fn", b"work") in hosts.spawn.jobs


@pytest.mark.parametrize("language", LANGUAGES)
def test_echo_examples(sandbox: Sandbox, language: str, unique: str) -> None:
    echo = sandbox.load(example(language, "echo").read_bytes())
    request = Request("i", unique, (("a", "1"), ("a", "2")), ALL_BYTES, CallInfo())
    result = sandbox.invoke(echo, cfg(unique), request)
    assert answer(result) == (200, ALL_BYTES)
    assert result.response is not None and result.response.headers == request.headers


@pytest.mark.parametrize("language", ["js", "ts"])
def test_token_vending_examples_limit_each_caller(
    sandbox: Sandbox, hosts: HostClients, language: str, unique: str
) -> None:
    vend = sandbox.load(example(language, "token-vending").read_bytes())
    config = cfg(unique, env={"RATE_LIMIT": "2", "RATE_WINDOW_MS": "60000"})

    def ask(caller: str) -> InvocationResult:
        request = Request("i", unique, (("x-caller", caller),), b"", CallInfo())
        return sandbox.invoke(vend, config, request)

    try:
        first, second, third = ask("alice"), ask("alice"), ask("alice")
        tokens = [json.loads(answer(r)[1])["token"] for r in (first, second)]
        assert tokens[0] != tokens[1] and len(tokens[0]) == 43
        assert hosts.redis.get(f"fn:{unique}:token:{tokens[0]}") == b"alice"
        assert json.loads(answer(second)[1])["remaining"] == 0
        status, body = answer(third)
        assert status == 429 and json.loads(body)["error"] == "rate limit exceeded"
        assert third.response is not None
        assert any(k == "retry-after" and int(v) >= 1 for k, v in third.response.headers)
        assert answer(ask("bob"))[0] == 200  # a separate limit per caller
    finally:
        for key in hosts.redis.scan_iter(f"fn:{unique}:*"):
            hosts.redis.delete(key)


@pytest.mark.parametrize("language", ["js", "ts"])
def test_token_vending_fails_closed_without_the_cache(
    language: str, tmp_path: Path, unique: str
) -> None:
    down = HostClients.from_settings(WorkerSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    sb = Sandbox(down, cache_dir=tmp_path)
    try:
        vend = sb.load(example(language, "token-vending").read_bytes())
        request = Request("i", unique, (), b"", CallInfo())
        status, body = answer(sb.invoke(vend, cfg(unique), request))
        assert (
            status == 503 and "rate limiter unavailable: unavailable" in json.loads(body)["error"]
        )
    finally:
        sb.close()
        down.close()
