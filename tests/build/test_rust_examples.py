"""The Rust examples (examples/rust/*) through the real Sandbox, against real services.

Each is the Rust twin of a Python example and answers the same way: status codes, cache
hit/miss, rate limiting, S3 + DynamoDB round trips run against real Redis, the moto server
and a local HTTP server. Error variants the services cannot be made to return on demand
(an upstream timeout) are checked with fake hosts under plain wasmtime-py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from flotilla.config import FunctionConfig
from flotilla.hosts.base import InvocationContext
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import InvocationResult, LoadedFunction, Outcome, Sandbox, new_request
from flotilla.sandbox.results import Response
from flotilla.settings import WorkerSettings
from tests.guests.rust import EXAMPLES, rust_example
from tests.hosts.conftest import RoutesHandler, RoutesServer, closed_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cache_dir() -> Path:
    return Path(os.environ.get("FLOTILLA_CACHE_DIR") or Path(tempfile.gettempdir()) / "flotilla")


@pytest.fixture(scope="module")
def hosts(redis_url: str, aws_endpoint_url: str) -> Iterator[HostClients]:
    settings = WorkerSettings(redis_url=redis_url, aws_endpoint_url=aws_endpoint_url)
    clients = HostClients.from_settings(settings)
    yield clients
    clients.close()


@pytest.fixture(scope="module")
def sandbox(hosts: HostClients) -> Iterator[Sandbox]:
    sb = Sandbox(hosts, cache_dir=_cache_dir())
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RoutesServer]:
    """The host tests' local HTTP server (routes /echo, /status/N, ...)."""
    server = RoutesServer(("127.0.0.1", 0), RoutesHandler)
    server.seen, server.stop = [], threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


_loaded: dict[str, LoadedFunction] = {}


def example(sandbox: Sandbox, name: str) -> LoadedFunction:
    """examples/rust/<name>, built and loaded once per module."""
    if name not in _loaded:
        _loaded[name] = sandbox.load(rust_example(name).read_bytes())
    return _loaded[name]


def call(
    sandbox: Sandbox, fn: LoadedFunction, config: FunctionConfig, body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
) -> Response:  # fmt: skip
    """One invocation that must return a response."""
    result: InvocationResult = sandbox.invoke(
        fn, config, new_request(config.name, body, tuple(headers))
    )
    assert result.outcome is Outcome.OK, result
    assert result.response is not None
    return result.response


def header(response: Response, name: str) -> str | None:
    return next((v for k, v in response.headers if k == name), None)


def cached(hosts: HostClients, config: FunctionConfig, key: str) -> bytes | None:
    """What the function's cache holds at `key` (read through the same namespacing)."""
    return hosts.cache.get(InvocationContext(config, "check", time.monotonic() + 5), key)


NAMES = ["echo", "cache-readthrough", "token-vending", "s3-dynamodb"]
HANDLE = "export handle: func(request: request) -> result<response, string>;"


@pytest.mark.parametrize("name", NAMES)
def test_example_is_a_valid_function_component(name: str) -> None:
    path = rust_example(name)
    tool = str(Path(sys.executable).with_name("wasm-tools"))
    subprocess.run([tool, "validate", "--features", "component-model", str(path)], check=True)
    text = subprocess.run(
        [tool, "component", "wit", str(path)], check=True, capture_output=True, text=True
    ).stdout
    world = text[text.index("world root {") :].split("\n}\n")[0]
    assert HANDLE in world
    imports = re.findall(r"^\s*import ([^;]+);", world, re.MULTILINE)
    assert [i for i in imports if not i.startswith(("wasi:", "flotilla:function/"))] == []
    config = FunctionConfig.from_dict(json.loads((EXAMPLES / name / "config.json").read_text()))
    assert config.name == name
    assert (EXAMPLES / name / "README.md").read_text().startswith(f"# {name} (Rust)\n")


def test_echo(sandbox: Sandbox, unique: str) -> None:
    fn = example(sandbox, "echo")
    assert fn.raw is not None  # bodies cross as one string
    body = bytes(range(256)) * 64
    reply = call(sandbox, fn, FunctionConfig(name=unique), body, [("x-a", "1"), ("x-a", "2")])
    assert (reply.status, reply.headers, reply.body) == (200, (("x-a", "1"), ("x-a", "2")), body)


def test_readthrough_misses_then_hits(
    sandbox: Sandbox, hosts: HostClients, upstream: RoutesServer, unique: str
) -> None:
    port = upstream.server_address[1]
    url = f"http://127.0.0.1:{port}/echo?fn={unique}"
    env = {"UPSTREAM_URL": url, "CACHE_TTL_MS": "60000"}
    config = FunctionConfig(name=unique, env=env, allowed_hosts=(f"127.0.0.1:{port}",))
    fn = example(sandbox, "cache-readthrough")
    seen = len(upstream.seen)
    first = call(sandbox, fn, config)
    assert (first.status, header(first, "x-cache")) == (200, "miss")
    assert json.loads(first.body)["path"] == f"/echo?fn={unique}"
    assert header(first, "content-type") is None  # the upstream sent none
    assert cached(hosts, config, f"readthrough:{url}") == first.body
    second = call(sandbox, fn, config)
    assert (second.status, header(second, "x-cache"), second.body) == (200, "hit", first.body)
    assert len(upstream.seen) == seen + 1


def test_readthrough_header_url_errors_and_no_caching_of_failures(
    sandbox: Sandbox, hosts: HostClients, upstream: RoutesServer, unique: str
) -> None:
    port = upstream.server_address[1]
    config = FunctionConfig(name=unique, allowed_hosts=(f"127.0.0.1:{port}",))
    fn = example(sandbox, "cache-readthrough")
    assert call(sandbox, fn, config).status == 400  # no upstream at all
    broken = f"http://127.0.0.1:{port}/status/500"
    reply = call(sandbox, fn, config, headers=[("x-upstream-url", broken)])
    assert (reply.status, header(reply, "x-cache")) == (500, "miss")
    assert cached(hosts, config, f"readthrough:{broken}") is None
    denied = call(sandbox, fn, config, headers=[("x-upstream-url", "http://example.com/")])
    assert denied.status == 502 and b"denied: " in denied.body


def test_readthrough_bypasses_a_dead_cache(
    aws_endpoint_url: str, upstream: RoutesServer, unique: str
) -> None:
    settings = WorkerSettings(redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                              aws_endpoint_url=aws_endpoint_url)  # fmt: skip
    clients = HostClients.from_settings(settings)
    sb = Sandbox(clients, cache_dir=_cache_dir())
    try:
        port = upstream.server_address[1]
        config = FunctionConfig(name=unique, env={"UPSTREAM_URL": f"http://127.0.0.1:{port}/echo"},
                                allowed_hosts=(f"127.0.0.1:{port}",))  # fmt: skip
        result = sb.invoke(sb.load(rust_example("cache-readthrough").read_bytes()), config,
                           new_request(unique))  # fmt: skip
        assert result.response is not None
        assert (result.response.status, header(result.response, "x-cache")) == (200, "bypass")
        assert any(r.level == "warn" and "cache get failed" in r.message for r in result.logs)
    finally:
        sb.close()
        clients.close()


def test_readthrough_upstream_timeout_is_504() -> None:
    from wasmtime.component import Variant

    from tests.build.harness import Runner

    runner = Runner(rust_example("cache-readthrough"))
    runner.hosts.fail["http.invoke"] = Variant("timeout")
    reply = runner.handle(b"", env={"UPSTREAM_URL": "http://u/"})
    assert reply.status == 504 and b"timed out" in reply.body
    runner.hosts.fail["http.invoke"] = Variant("connection", "refused")
    reply = runner.handle(b"", env={"UPSTREAM_URL": "http://u/"})
    assert reply.status == 502 and b"connection: refused" in reply.body


def test_token_vending_limits_each_caller(
    sandbox: Sandbox, hosts: HostClients, unique: str
) -> None:
    config = FunctionConfig(name=unique, env={"RATE_LIMIT": "2", "RATE_WINDOW_MS": "60000"})
    fn = example(sandbox, "token-vending")
    alice = [("x-caller", "alice")]
    replies = [call(sandbox, fn, config, headers=alice) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    payloads = [json.loads(r.body) for r in replies[:2]]
    tokens = [p["token"] for p in payloads]
    assert tokens[0] != tokens[1] and all(len(t) == 43 for t in tokens)
    assert [p["remaining"] for p in payloads] == [1, 0]
    assert payloads[0]["expires_in_ms"] == 300_000
    assert 1 <= int(header(replies[2], "retry-after") or 0) <= 60
    assert json.loads(replies[2].body) == {
        "error": "rate limit exceeded", "limit": 2, "window_ms": 60000,
    }  # fmt: skip
    assert cached(hosts, config, f"token:{tokens[0]}") == b"alice"
    assert call(sandbox, fn, config, headers=[("x-caller", "bob")]).status == 200


def test_token_vending_fails_closed_without_the_cache(aws_endpoint_url: str, unique: str) -> None:
    settings = WorkerSettings(redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                              aws_endpoint_url=aws_endpoint_url)  # fmt: skip
    clients = HostClients.from_settings(settings)
    sb = Sandbox(clients, cache_dir=_cache_dir())
    try:
        fn = sb.load(rust_example("token-vending").read_bytes())
        reply = call(sb, fn, FunctionConfig(name=unique))
        assert reply.status == 503
        assert json.loads(reply.body)["error"].startswith("rate limiter unavailable: unavailable")
    finally:
        sb.close()
        clients.close()


@pytest.fixture
def storage(hosts: HostClients, unique: str) -> FunctionConfig:
    """A bucket and a table named `unique`, and a config that may use them."""
    hosts.s3.client.create_bucket(Bucket=unique)
    hosts.dynamodb.client.create_table(
        TableName=unique,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return FunctionConfig(name=unique, env={"BUCKET": unique, "TABLE": unique},
                          s3_buckets=(unique,), dynamodb_tables=(unique,))  # fmt: skip


def test_s3_dynamodb_put_get_delete(
    sandbox: Sandbox, hosts: HostClients, storage: FunctionConfig, unique: str
) -> None:
    fn = example(sandbox, "s3-dynamodb")
    body = bytes(range(256))
    put = call(sandbox, fn, storage, body, [("x-key", "k1"), ("content-type", "text/plain")])
    assert put.status == 201
    item = json.loads(put.body)["item"]
    assert item["pk"] == {"S": "k1"} and item["size"] == {"N": "256"}
    assert item["s3_key"] == {"S": "objects/k1"} and item["content_type"] == {"S": "text/plain"}
    stored = hosts.s3.client.get_object(Bucket=unique, Key="objects/k1")["Body"].read()
    assert stored == body
    row = hosts.dynamodb.client.get_item(TableName=unique, Key={"pk": {"S": "k1"}})["Item"]
    assert row["invocation_id"] == item["invocation_id"]

    got = call(sandbox, fn, storage, headers=[("x-key", "k1")])
    assert (got.status, got.body, got.headers) == (200, body, (("content-type", "text/plain"),))

    deleted = call(sandbox, fn, storage, headers=[("x-key", "k1"), ("x-mode", "delete")])
    assert deleted.status == 204
    assert hosts.s3.client.list_objects_v2(Bucket=unique).get("KeyCount") == 0
    assert call(sandbox, fn, storage, headers=[("x-key", "k1")]).status == 404


def test_s3_dynamodb_item_without_object(
    sandbox: Sandbox, hosts: HostClients, storage: FunctionConfig, unique: str
) -> None:
    fn = example(sandbox, "s3-dynamodb")
    assert call(sandbox, fn, storage, b"x", [("x-key", "k2")]).status == 201
    hosts.s3.client.delete_object(Bucket=unique, Key="objects/k2")
    missing = call(sandbox, fn, storage, headers=[("x-key", "k2")])
    payload = json.loads(missing.body)
    assert missing.status == 404 and payload["item"]["s3_key"] == {"S": "objects/k2"}


def test_s3_dynamodb_bad_requests_and_denied(
    sandbox: Sandbox, storage: FunctionConfig, unique: str
) -> None:
    fn = example(sandbox, "s3-dynamodb")
    assert call(sandbox, fn, storage).status == 400  # no x-key
    assert call(sandbox, fn, FunctionConfig(name=unique), headers=[("x-key", "k")]).status == 500
    assert call(sandbox, fn, storage, headers=[("x-key", "k"), ("x-mode", "list")]).status == 400
    elsewhere = FunctionConfig(name=unique, env={"BUCKET": "other-bucket", "TABLE": unique},
                               dynamodb_tables=(unique,))  # fmt: skip
    denied = call(sandbox, fn, elsewhere, b"x", [("x-key", "k")])
    assert denied.status == 502
    assert json.loads(denied.body) == {
        "error": "s3.put-object failed", "case": "denied", "detail": json.loads(denied.body)["detail"],
    }  # fmt: skip
