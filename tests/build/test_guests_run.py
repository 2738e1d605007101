"""Run the built probe and examples under plain wasmtime-py with in-memory fake hosts.

This checks the guests themselves (ops, host error handling, status codes); the real
sandbox's limits and isolation are tested in tests/sandbox against the same guests.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from wasmtime.component import Variant

from tests.build.harness import FakeHosts, Runner
from tests.guests.build import python_guest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def probe() -> Runner:
    """The probe, compiled once for this module."""
    return Runner(python_guest("probe"))


@pytest.fixture
def hosts(probe: Runner) -> Iterator[FakeHosts]:
    """The probe's fake hosts, emptied after each test."""
    yield probe.hosts
    probe.hosts.__init__()  # type: ignore[misc]


def test_non_command_body_is_echoed_raw(probe: Runner) -> None:
    reply = probe.handle(b"\x00raw bytes", headers=[("x-a", "1")])
    assert (reply.status, reply.headers, reply.body) == (200, [("x-a", "1")], b"\x00raw bytes")


def test_echo_op_describes_the_request(probe: Runner) -> None:
    result = probe.handle({"op": "echo"}, headers=[("x-a", "1")]).json()
    assert result["invocation_id"] == "inv-1" and result["headers"] == [["x-a", "1"]]


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        ({"op": "counter"}, 1),
        ({"op": "batch", "ops": [{"op": "counter"}, {"op": "counter"}]}, None),
        ({"op": "recursion", "depth": 50}, 50),
        ({"op": "stdout", "n": 3}, 3),
        ({"op": "stderr", "n": 3}, 3),
        ({"op": "stdin"}, ""),
    ],
)
def test_json_ops(probe: Runner, cmd: dict, expected: object) -> None:
    result = probe.handle(cmd).json()
    assert result["ok"] is True
    if expected is not None:
        assert result["result"] == expected


def test_counter_is_fresh_per_instance_but_shared_within_one(probe: Runner) -> None:
    batch = {"op": "batch", "ops": [{"op": "counter"}, {"op": "counter"}]}
    assert [r["result"] for r in probe.handle(batch).json()["result"]] == [1, 2]
    assert probe.handle({"op": "counter"}).json()["result"] == 1


def test_env_clocks_and_random(probe: Runner) -> None:
    assert probe.handle({"op": "env"}, env={"A": "1"}).json()["result"] == {"A": "1"}
    clocks = probe.handle({"op": "clocks"}).json()["result"]
    assert clocks["time"] > 1.7e9 and clocks["monotonic"] >= 0
    first = probe.handle({"op": "random"}).json()["result"]["urandom"]
    assert len(first) == 32 and first != probe.handle({"op": "random"}).json()["result"]["urandom"]


@pytest.mark.parametrize(
    "op", ["read_file", "list_dir", "write_file", "tcp_connect", "getaddrinfo"]
)
def test_denied_system_ops_report_the_error(probe: Runner, op: str) -> None:
    # The harness grants no preopens and no network: every one of these must fail cleanly.
    result = probe.handle({"op": op}).json()
    assert result["ok"] is False and ":" in result["error"]


@pytest.mark.parametrize("op", ["sleep", "wall_sleep"])
def test_sleeps_take_their_time(probe: Runner, op: str) -> None:
    assert probe.handle({"op": op, "ms": 30}).json()["result"] >= 30


def test_alloc_holds_memory_within_the_limit(probe: Runner) -> None:
    assert probe.handle({"op": "alloc", "mb": 64}, memory_limit_mb=128).json()["result"] == 64
    with pytest.raises(Exception, match="wasm backtrace"):
        probe.handle({"op": "alloc", "mb": 200}, memory_limit_mb=128)


def test_respond_big_and_err(probe: Runner) -> None:
    reply = probe.handle({"op": "respond", "status": 999, "headers": [["a", "b"]], "body": "z"})
    assert (reply.status, reply.headers, reply.body) == (999, [("a", "b")], b"z")
    assert len(probe.handle({"op": "big", "n": 5000}).body) == 5000
    assert probe.handle({"op": "err", "message": "nope"}).err == "nope"


@pytest.mark.parametrize(
    "cmd",
    [{"op": "raise"}, {"op": "exit", "code": 3}, {"op": "exit", "how": "os"}, {"op": "recursion"}],
)
def test_failing_ops_trap(probe: Runner, cmd: dict) -> None:
    with pytest.raises(Exception, match="wasm backtrace"):
        probe.handle(cmd)


def test_host_ops_round_trip(probe: Runner, hosts: FakeHosts) -> None:
    ops = [
        {"op": "cache.set", "key": "k", "value": {"b64": base64.b64encode(b"\xff").decode()}},
        {"op": "cache.get", "key": "k"},
        {"op": "cache.set_if_absent", "key": "k", "value": "w"},
        {"op": "cache.increment", "key": "n", "delta": 5},
        {"op": "cache.delete", "key": "k"},
        {"op": "http.invoke", "url": "http://upstream/"},
        {"op": "s3.put", "bucket": "b", "key": "o", "body": "data"},
        {"op": "s3.get", "bucket": "b", "key": "o"},
        {"op": "s3.delete", "bucket": "b", "key": "o"},
        {"op": "dynamodb.put", "table": "t", "item": {"pk": {"S": "a"}, "v": {"N": "1"}}},
        {"op": "dynamodb.get", "table": "t", "key": {"pk": {"S": "a"}}},
        {"op": "dynamodb.delete", "table": "t", "key": {"pk": {"S": "a"}}},
        {"op": "log", "level": "warn", "message": "hello"},
    ]
    results = [r["result"] for r in probe.handle({"op": "batch", "ops": ops}).json()["result"]]
    assert results[1] == {"text": "\ufffd", "b64": "/w=="}
    assert results[2] is False and results[3] == 5
    assert results[5]["status"] == 200 and results[5]["body"]["text"] == "upstream"
    assert results[7]["text"] == "data"
    assert '"v": {"N": "1"}' in results[10]
    assert hosts.logs == [("warn", "hello")]
    assert hosts.cache == {"n": b"5"} and hosts.objects == {} and hosts.items == {}


# wasmtime-py cannot lower an err for results whose ok type admits None (option<T> or
# `_`), so only host functions with a concrete ok type are failed here.
@pytest.mark.parametrize(
    ("op", "cmd", "error", "expected"),
    [
        ("cache.increment", {"op": "cache.increment", "key": "k"},
         Variant("unavailable", "down"), {"case": "unavailable", "detail": "down"}),
        ("cache.set-if-absent", {"op": "cache.set_if_absent", "key": "k", "value": "v"},
         Variant("invalid-argument", "big"), {"case": "invalid-argument", "detail": "big"}),
        ("http.invoke", {"op": "http.invoke", "url": "http://u/"},
         Variant("timeout"), {"case": "timeout", "detail": None}),
        ("http.invoke", {"op": "http.invoke", "url": "http://u/"},
         Variant("too-large"), {"case": "too-large", "detail": None}),
        ("http.invoke", {"op": "http.invoke", "url": "http://u/"},
         Variant("denied", "evil.example"), {"case": "denied", "detail": "evil.example"}),
    ],
)  # fmt: skip
def test_host_errors_are_reported_by_case(
    probe: Runner, hosts: FakeHosts, op: str, cmd: dict, error: Variant, expected: dict
) -> None:
    hosts.fail[op] = error
    assert probe.handle(cmd).json() == {"op": cmd["op"], "ok": False, "error": expected}


def test_hammer_repeats_a_host_call(probe: Runner, hosts: FakeHosts) -> None:
    cmd = {"op": "hammer", "call": {"op": "cache.increment", "key": "h"}, "n": 200}
    result = probe.handle(cmd).json()["result"]
    assert (result["ok"], result["errors"], result["last"]["result"]) == (200, 0, 200)
    assert hosts.calls.count("cache.increment") == 200


def test_memory_bomb_stops_at_the_memory_limit(probe: Runner) -> None:
    cmd = {"op": "memory_bomb", "chunk_mb": 8, "catch": True}
    held = probe.handle(cmd, memory_limit_mb=128).json()["result"]
    assert 32 <= held < 128
    with pytest.raises(Exception, match="wasm backtrace"):
        probe.handle({"op": "memory_bomb", "chunk_mb": 8}, memory_limit_mb=128)
