"""The host calls added in WIT 0.1.1, through a real Sandbox and the probe guest (integration).

- `invocation`: the request's CallInfo reaches the guest as given;
- `cache.set-if-equal` / `set-if-present` against real Redis, including a race of writers
  that all expect the same value (exactly one wins);
- `dynamodb.put-item-if` against the moto server: written, condition failed (ok(false)),
  bad arguments (invalid-argument), denied table;
- `secrets`, `topics`, `spawn`: `unavailable` on a worker built without their clients, and
  each bridge reaching its client (an in-memory one here; the real ones have their own tests).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from flotilla.config import FunctionConfig
from flotilla.hosts.base import CallInfo, HostError, InvocationContext
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import LoadedFunction, Sandbox
from flotilla.sandbox.results import Request
from flotilla.settings import WorkerSettings
from tests.guests.build import probe_wasm  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cache_dir() -> Path:
    base = os.environ.get("FLOTILLA_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "flotilla")
    return Path(base)


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
        self.sent: list[tuple[str, str, bytes]] = []

    def publish(self, ctx: InvocationContext, topic: str, message: bytes) -> None:
        """Record or refuse."""
        if topic.startswith("no"):
            raise HostError("denied", f"{topic} is not in publish_topics")
        self.sent.append((ctx.config.name, topic, message))


class MemorySpawner:
    """Hands out job ids and records what was asked."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, str, tuple[tuple[str, str], ...], bytes]] = []

    def job(
        self, ctx: InvocationContext, function: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> str:
        """Record and return an id."""
        self.jobs.append((ctx.invocation_id, function, tuple(headers), body))
        return f"job-{len(self.jobs)}"


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
def probe(sandbox: Sandbox, probe_wasm: Path) -> LoadedFunction:  # noqa: F811 - fixture
    return sandbox.load(probe_wasm.read_bytes())


def run(
    sandbox: Sandbox, probe: LoadedFunction, config: FunctionConfig, ops: list[Any],
    call: CallInfo | None = None,
) -> list[tuple[bool, Any]]:
    """Run ops in one invocation: [(ok, result or error)]."""
    body = json.dumps({"op": "batch", "ops": ops}).encode()
    request = Request(f"inv-{os.urandom(4).hex()}", config.name, (), body, call or CallInfo())
    result = sandbox.invoke(probe, config, request)
    assert result.outcome == "ok", result
    assert result.response is not None
    answers = json.loads(result.response.body)["result"]
    return [(r["ok"], r.get("result") if r["ok"] else r["error"]) for r in answers]


def test_invocation_reports_the_call(sandbox: Sandbox, probe: LoadedFunction, unique: str) -> None:
    config = FunctionConfig(name=unique, timeout_ms=5_000)
    call = CallInfo(method="PATCH", path="/a/b%20c", query=(("x", "1"), ("x", "2"), ("é", "")),
                    caller="k1", kind="spawned", attempt=3)
    [(ok, seen)] = run(sandbox, probe, config, [{"op": "invocation"}], call)
    assert ok
    assert {k: v for k, v in seen.items() if k != "remaining_ms"} == {
        "method": "PATCH", "path": "/a/b%20c", "query": [["x", "1"], ["x", "2"], ["é", ""]],
        "caller": "k1", "kind": "spawned", "attempt": 3,
    }
    assert 0 < seen["remaining_ms"] <= 5_000
    [(_, default)] = run(sandbox, probe, config, [{"op": "invocation"}])
    assert (default["method"], default["path"], default["query"], default["caller"],
            default["kind"], default["attempt"]) == ("POST", "/", [], None, "sync", 1)


def test_cache_conditional_writes(sandbox: Sandbox, probe: LoadedFunction, unique: str) -> None:
    config = FunctionConfig(name=unique, timeout_ms=5_000)
    answers = run(sandbox, probe, config, [
        {"op": "cache.set_if_present", "key": "k", "value": "a"},   # absent: not written
        {"op": "cache.set_if_equal", "key": "k", "expected": "", "value": "a"},  # absent != ""
        {"op": "cache.set", "key": "k", "value": "a"},
        {"op": "cache.set_if_equal", "key": "k", "expected": "b", "value": "c"},  # a != b
        {"op": "cache.set_if_equal", "key": "k", "expected": "a", "value": "c", "ttl_ms": 60_000},
        {"op": "cache.set_if_present", "key": "k", "value": "d"},
        {"op": "cache.get", "key": "k"},
        {"op": "cache.set_if_equal", "key": "k", "expected": "x" * (1 << 20 | 1), "value": "e"},
        {"op": "cache.delete", "key": "k"},
    ])
    assert [a for a in answers[:6]] == [
        (True, False), (True, False), (True, None), (True, False), (True, True), (True, True)
    ]
    assert answers[6] == (True, {"text": "d", "b64": "ZA=="})
    assert answers[7][0] is False and answers[7][1]["case"] == "invalid-argument"


def test_set_if_equal_race_has_exactly_one_winner(
    sandbox: Sandbox, probe: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    config = FunctionConfig(name=unique, timeout_ms=10_000)
    writers = 8
    for round_ in range(5):
        run(sandbox, probe, config, [{"op": "cache.set", "key": "cas", "value": f"v{round_}"}])
        start = threading.Barrier(writers)
        wins: list[bool] = []

        def write(
            i: int, r: int = round_, start: threading.Barrier = start, wins: list[bool] = wins
        ) -> None:
            start.wait()
            [(ok, won)] = run(sandbox, probe, config, [
                {"op": "cache.set_if_equal", "key": "cas", "expected": f"v{r}",
                 "value": f"w{r}-{i}"},
            ])
            assert ok
            wins.append(won)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False] * (writers - 1) + [True]
        [(_, final)] = run(sandbox, probe, config, [{"op": "cache.get", "key": "cas"}])
        assert final["text"].startswith(f"w{round_}-")


def test_dynamodb_put_item_if(
    sandbox: Sandbox, probe: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    hosts.dynamodb.client.create_table(
        TableName=unique,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    config = FunctionConfig(name=unique, timeout_ms=10_000, dynamodb_tables=(unique,))
    item = {"pk": {"S": "a"}, "n": {"N": "1"}}
    answers = run(sandbox, probe, config, [
        {"op": "dynamodb.put_if", "table": unique, "item": item,
         "condition": "attribute_not_exists(pk)"},
        {"op": "dynamodb.put_if", "table": unique, "item": item,
         "condition": "attribute_not_exists(pk)"},
        {"op": "dynamodb.put_if", "table": unique, "item": {"pk": {"S": "a"}, "n": {"N": "2"}},
         "condition": "n = :old", "values": {":old": {"N": "1"}}},
        {"op": "dynamodb.get", "table": unique, "key": {"pk": {"S": "a"}}},
        {"op": "dynamodb.put_if", "table": unique, "item": item, "condition": "n = :old",
         "values": "not json"},
        {"op": "dynamodb.put_if", "table": unique, "item": item, "condition": " "},
        {"op": "dynamodb.put_if", "table": "other-table", "item": item,
         "condition": "attribute_not_exists(pk)"},
    ])
    assert answers[:3] == [(True, True), (True, False), (True, True)]
    assert json.loads(answers[3][1])["n"] == {"N": "2"}
    assert [(ok, err["case"]) for ok, err in answers[4:]] == [
        (False, "invalid-argument"), (False, "invalid-argument"), (False, "denied")
    ]


def test_unconfigured_clients_answer_unavailable(
    sandbox: Sandbox, probe: LoadedFunction, unique: str
) -> None:
    config = FunctionConfig(name=unique, timeout_ms=5_000)
    answers = run(sandbox, probe, config, [
        {"op": "secrets.get", "name": "token"},
        {"op": "topics.publish", "topic": "t", "message": "m"},
        {"op": "spawn.job", "function": "other"},
    ])
    assert [(ok, err["case"]) for ok, err in answers] == [(False, "unavailable")] * 3
    assert all("not configured" in err["detail"] for _, err in answers)


def test_configured_clients_are_reached(
    hosts: HostClients, probe_wasm: Path, unique: str  # noqa: F811 - fixture
) -> None:
    secrets = MemorySecrets({(unique, "token"): "s3cr3t", ("other", "token"): "theirs"})
    topics, spawner = MemoryTopics(), MemorySpawner()
    with_all = hosts.with_clients(secrets=secrets, topics=topics, spawn=spawner)
    sb = Sandbox(with_all, cache_dir=_cache_dir())
    try:
        fn = sb.load(probe_wasm.read_bytes())
        config = FunctionConfig(name=unique, timeout_ms=5_000)
        answers = run(sb, fn, config, [
            {"op": "secrets.get", "name": "token"},
            {"op": "secrets.get", "name": "missing"},
            {"op": "topics.publish", "topic": "news", "message": "hi"},
            {"op": "topics.publish", "topic": "nope", "message": "hi"},
            {"op": "spawn.job", "function": "other", "headers": [["a", "1"]], "body": "b"},
        ])
    finally:
        sb.close()
    assert answers[:3] == [(True, "s3cr3t"), (True, None), (True, None)]
    assert answers[3][0] is False and answers[3][1]["case"] == "denied"
    assert answers[4] == (True, "job-1")
    assert topics.sent == [(unique, "news", b"hi")]
    assert [(f, h, b) for _, f, h, b in spawner.jobs] == [("other", (("a", "1"),), b"b")]
