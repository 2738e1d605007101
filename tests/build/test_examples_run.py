"""Run the examples under plain wasmtime-py with in-memory fake hosts.

The hosts' limits and real backends are tested elsewhere; here the examples' own logic
is checked: status codes, cache hit/miss, rate limiting, S3 + DynamoDB round trips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from wasmtime.component import Variant

from tests.build.harness import Runner
from tests.guests.build import python_guest

pytestmark = pytest.mark.slow

URL = "http://127.0.0.1:8000/data.json"


@pytest.fixture(scope="module")
def _runners() -> dict[str, Runner]:
    return {}


@pytest.fixture
def example(request: pytest.FixtureRequest, _runners: dict[str, Runner]) -> Iterator[Runner]:
    """The runner of the example named by the test's `name` parameter (compiled once)."""
    name = request.param
    if name not in _runners:
        _runners[name] = Runner(python_guest(name))
    runner = _runners[name]
    yield runner
    runner.hosts.__init__()  # type: ignore[misc]


def header(reply_headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in reply_headers if k == name), None)


@pytest.mark.parametrize("example", ["echo"], indirect=True)
def test_echo_returns_body_and_headers(example: Runner) -> None:
    reply = example.handle(b"hello", headers=[("x-a", "1"), ("x-a", "2")])
    assert (reply.status, reply.headers, reply.body) == (
        200,
        [("x-a", "1"), ("x-a", "2")],
        b"hello",
    )


@pytest.mark.parametrize("example", ["cache-readthrough"], indirect=True)
def test_readthrough_misses_then_hits(example: Runner) -> None:
    example.hosts.http_response = (200, [("content-type", "application/json")], b'{"v": 1}')
    env = {"UPSTREAM_URL": URL, "CACHE_TTL_MS": "5000"}
    first = example.handle(b"", env=env)
    assert (first.status, header(first.headers, "x-cache"), first.body) == (
        200,
        "miss",
        b'{"v": 1}',
    )
    assert header(first.headers, "content-type") == "application/json"
    assert example.hosts.cache == {f"readthrough:{URL}": b'{"v": 1}'}
    second = example.handle(b"", env=env)
    assert (second.status, header(second.headers, "x-cache"), second.body) == (
        200,
        "hit",
        b'{"v": 1}',
    )
    assert example.hosts.calls.count("http.invoke") == 1


@pytest.mark.parametrize("example", ["cache-readthrough"], indirect=True)
def test_readthrough_takes_the_url_from_a_header_and_skips_caching_errors(example: Runner) -> None:
    example.hosts.http_response = (500, [], b"broken")
    reply = example.handle(b"", headers=[("x-upstream-url", "http://other/")])
    assert (reply.status, reply.body) == (500, b"broken")
    assert example.hosts.cache == {}


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (Variant("timeout"), 504, b"timed out"),
        (Variant("denied", "not allowed"), 502, b"Denied not allowed"),
        (Variant("connection", "refused"), 502, b"Connection refused"),
    ],
)
@pytest.mark.parametrize("example", ["cache-readthrough"], indirect=True)
def test_readthrough_upstream_failures(
    example: Runner, error: Variant, status: int, text: bytes
) -> None:
    example.hosts.fail["http.invoke"] = error
    reply = example.handle(b"", env={"UPSTREAM_URL": URL})
    assert reply.status == status and text in reply.body


@pytest.mark.parametrize("example", ["cache-readthrough"], indirect=True)
def test_readthrough_without_upstream_is_400(example: Runner) -> None:
    assert example.handle(b"").status == 400


@pytest.mark.parametrize("example", ["token-vending"], indirect=True)
def test_token_vending_limits_each_caller(example: Runner) -> None:
    env = {"RATE_LIMIT": "2", "RATE_WINDOW_MS": "60000"}
    alice = [("x-caller", "alice")]
    replies = [example.handle(b"", headers=alice, env=env) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    tokens = [r.json()["token"] for r in replies[:2]]
    assert tokens[0] != tokens[1] and len(tokens[0]) >= 40
    assert [r.json()["remaining"] for r in replies[:2]] == [1, 0]
    assert 1 <= int(header(replies[2].headers, "retry-after") or 0) <= 60
    assert example.hosts.cache[f"token:{tokens[0]}"] == b"alice"
    assert example.handle(b"", headers=[("x-caller", "bob")], env=env).status == 200


@pytest.mark.parametrize("example", ["token-vending"], indirect=True)
def test_token_vending_fails_closed_without_the_cache(example: Runner) -> None:
    example.hosts.fail["cache.increment"] = Variant("unavailable", "redis down")
    reply = example.handle(b"")
    assert reply.status == 503 and "redis down" in reply.json()["error"]


S3_ENV = {"BUCKET": "objects", "TABLE": "index"}


@pytest.mark.parametrize("example", ["s3-dynamodb"], indirect=True)
def test_s3_dynamodb_put_get_delete(example: Runner) -> None:
    put = example.handle(
        b"payload", headers=[("x-key", "k1"), ("content-type", "text/plain")], env=S3_ENV
    )
    assert put.status == 201
    assert example.hosts.objects == {("objects", "objects/k1"): b"payload"}
    (item_text,) = example.hosts.items.values()
    item = json.loads(item_text)
    assert item["pk"] == {"S": "k1"} and item["size"] == {"N": "7"}
    assert item["invocation_id"] == {"S": "inv-1"}

    got = example.handle(b"", headers=[("x-key", "k1")], env=S3_ENV)
    assert (got.status, got.body, got.headers) == (
        200,
        b"payload",
        [("content-type", "text/plain")],
    )

    deleted = example.handle(b"", headers=[("x-key", "k1"), ("x-mode", "delete")], env=S3_ENV)
    assert deleted.status == 204
    assert example.hosts.objects == {} and example.hosts.items == {}
    assert example.handle(b"", headers=[("x-key", "k1")], env=S3_ENV).status == 404


@pytest.mark.parametrize(
    ("headers", "env", "status"),
    [
        ([], S3_ENV, 400),
        ([("x-key", "k")], {}, 500),
        ([("x-key", "k"), ("x-mode", "list")], S3_ENV, 400),
    ],
)
@pytest.mark.parametrize("example", ["s3-dynamodb"], indirect=True)
def test_s3_dynamodb_bad_requests(example: Runner, headers: list, env: dict, status: int) -> None:
    assert example.handle(b"", headers=headers, env=env).status == status
