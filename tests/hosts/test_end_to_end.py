"""The real host interfaces behind a real Sandbox, driven by the probe guest (integration).

One invocation runs a batch of host calls through WIT, the sandbox's bridge and the hosts
against real Redis, the moto server and the local HTTP server, so the contract between the
sandbox and the hosts (argument types, error cases) is checked end to end.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.config import FunctionConfig
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import LoadedFunction, Sandbox, new_request
from flotilla.settings import WorkerSettings
from tests.guests.build import probe_wasm  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cache_dir() -> Path:
    base = os.environ.get("FLOTILLA_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "flotilla")
    return Path(base)


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
    sandbox: Sandbox, probe: LoadedFunction, config: FunctionConfig, ops: list[Any]
) -> tuple[list[tuple[bool, Any]], Any]:
    """Run ops in one invocation: ([(ok, result or error)], the InvocationResult)."""
    body = json.dumps({"op": "batch", "ops": ops}).encode()
    result = sandbox.invoke(probe, config, new_request(config.name, body))
    assert result.outcome == "ok", result
    assert result.response is not None
    answers = json.loads(result.response.body)["result"]
    return [(r["ok"], r.get("result") if r["ok"] else r["error"]) for r in answers], result


def test_every_interface_through_the_sandbox(
    sandbox: Sandbox,
    probe: LoadedFunction,
    hosts: HostClients,
    http_server: Any,
    unique: str,
) -> None:
    s3, dynamodb = hosts.s3.client, hosts.dynamodb.client
    s3.create_bucket(Bucket=unique)
    dynamodb.create_table(
        TableName=unique,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    port = http_server.server_address[1]
    config = FunctionConfig(
        name=unique,
        timeout_ms=10_000,
        max_body_bytes=4096,
        allowed_hosts=(f"127.0.0.1:{port}",),
        s3_buckets=(unique,),
        dynamodb_tables=(unique,),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        results, invocation = run(sandbox, probe, config, [
            {"op": "cache.set", "key": "k", "value": "v", "ttl_ms": 60_000},
            {"op": "cache.get", "key": "k"},
            {"op": "cache.increment", "key": "n", "delta": 5, "ttl_ms": 60_000},
            {"op": "cache.set_if_absent", "key": "k", "value": "w"},
            {"op": "cache.get", "key": "x" * 1025},
            {"op": "http.invoke", "url": f"{base}/echo", "method": "POST", "body": "hi"},
            {"op": "http.invoke", "url": f"{base}/redirect"},
            {"op": "http.invoke", "url": f"{base}/big?n=5000"},
            {"op": "http.invoke", "url": "http://example.com/"},
            {"op": "http.invoke", "url": f"{base}/slow?ms=2000", "timeout_ms": 100},
            {"op": "http.invoke", "url": f"{base}/echo", "headers": [["X", "a\r\nb"]]},
            {"op": "s3.put", "bucket": unique, "key": "o", "body": "data"},
            {"op": "s3.get", "bucket": unique, "key": "o"},
            {"op": "s3.get", "bucket": unique, "key": "missing"},
            {"op": "s3.get", "bucket": "other-bucket", "key": "o"},
            {"op": "dynamodb.put", "table": unique, "item": {"pk": {"S": "a"}, "v": {"N": "1"}}},
            {"op": "dynamodb.get", "table": unique, "key": {"pk": {"S": "a"}}},
            {"op": "dynamodb.get", "table": unique, "key": {"pk": {"S": "nope"}}},
            {"op": "dynamodb.get", "table": unique, "key": "{not json"},
            {"op": "dynamodb.delete", "table": "other-table", "key": {"pk": {"S": "a"}}},
            {"op": "log", "level": "warn", "message": "from the guest"},
        ])  # fmt: skip
    finally:
        for key in ("k", "n"):
            hosts.redis.delete(f"fn:{unique}:{key}")
        for obj in s3.list_objects_v2(Bucket=unique).get("Contents", []):
            s3.delete_object(Bucket=unique, Key=obj["Key"])
        s3.delete_bucket(Bucket=unique)
        dynamodb.delete_table(TableName=unique)

    def case(i: int) -> str:
        ok, value = results[i]
        assert not ok, results[i]
        return str(value["case"])

    assert results[0] == (True, None)
    assert results[1][1]["text"] == "v"
    assert results[2] == (True, 5)
    assert results[3] == (True, False)
    assert case(4) == "invalid-argument"
    echo = results[5][1]
    assert echo["status"] == 200 and json.loads(echo["body"]["text"])["body"] == "hi"
    assert results[6][1]["status"] == 302
    assert case(7) == "too-large"
    assert case(8) == "denied"
    assert case(9) == "timeout"
    assert case(10) == "invalid-request"
    assert results[11] == (True, None)
    assert results[12][1]["text"] == "data"
    assert results[13] == (True, None)
    assert case(14) == "denied"
    assert results[15] == (True, None)
    assert json.loads(results[16][1]) == {"pk": {"S": "a"}, "v": {"N": "1"}}
    assert results[17] == (True, None)
    assert case(18) == "invalid-argument"
    assert case(19) == "denied"
    assert results[20] == (True, None)
    assert [(r.level, r.message) for r in invocation.logs if r.level == "warn"] == [
        ("warn", "from the guest")
    ]
