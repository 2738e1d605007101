"""Hostile guests (issue 4, section 2): the probe guest, a real component, tries each escape
against a real Sandbox over the real host clients (Redis, moto, outbound HTTP), and against a
real `flotilla worker` process for the "other invocations are unaffected" items.

Which test proves which item (tests elsewhere that already prove one are named too):
- worker environment / files: test_environment_is_only_the_functions, test_no_worker_files
  (also tests/sandbox/test_wasi.py)
- sockets: test_no_sockets_to_the_workers_services (also tests/sandbox/test_wasi.py)
- allow-list, redirects, userinfo, IPv6 forms, numeric shorthands:
  test_outbound_http_outside_the_allow_list_is_refused; DNS names resolving to private,
  loopback, link-local or metadata addresses: test_allowed_name_resolving_inside_is_denied
  (pure rules: tests/hosts/test_policy.py, host level: tests/hosts/test_http.py)
- another function's cache keys, S3 buckets, DynamoDB tables:
  test_cache_keys_of_another_function_are_out_of_reach, test_other_buckets_and_tables_are_denied
- outliving the timeout (CPU loop, blocking sleep): test_guest_cannot_outlive_its_timeout;
  a sleep blocked in a WASI poll is answered `timeout` by the worker and its thread abandoned:
  test_blocking_sleep_is_cut_off_at_the_timeout (in process),
  test_blocked_guest_is_answered_at_its_timeout_by_a_real_worker (cap and readiness too)
- memory cap: test_memory_cap_holds
- flooding logs and stdout: test_log_and_stdout_floods_are_capped
- a host call held open past the deadline: test_host_call_is_cut_off_at_the_deadline
- crashing, hanging or slowing the worker for others:
  test_hostile_guests_do_not_hurt_a_normal_one_on_the_same_worker (real worker process)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from flotilla.config import FunctionConfig
from flotilla.envelope import Envelope, now_ms
from flotilla.hosts.clients import HostClients
from flotilla.hosts.http import HttpHost
from flotilla.metrics import WorkerMetrics
from flotilla.sandbox import InvocationResult, LoadedFunction, Outcome, Sandbox, new_request
from flotilla.settings import WorkerSettings
from loadtest.soak import SECRET_ENV, Fleet
from tests.guests.build import probe_wasm  # noqa: F401 - fixture
from tests.hosts.conftest import http_server  # noqa: F401 - fixture
from tests.sandbox.conftest import persistent_cache_dir
from worker.executor import InvocationPool
from worker.handler import EnvelopeHandler
from worker.runner import SandboxRunner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def hosts(redis_url: str, aws_endpoint_url: str) -> Iterator[HostClients]:
    clients = HostClients.from_settings(
        WorkerSettings(redis_url=redis_url, aws_endpoint_url=aws_endpoint_url)
    )
    yield clients
    clients.close()


@pytest.fixture(scope="module")
def sandbox(hosts: HostClients) -> Iterator[Sandbox]:
    sb = Sandbox(hosts, cache_dir=persistent_cache_dir())
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def probe(sandbox: Sandbox, probe_wasm: Path) -> LoadedFunction:  # noqa: F811 - fixture
    return sandbox.load(probe_wasm.read_bytes())


def invoke(
    sb: Sandbox, fn: LoadedFunction, config: FunctionConfig, op: dict[str, Any]
) -> InvocationResult:
    return sb.invoke(fn, config, new_request(config.name, json.dumps(op).encode()))


def answer(sb: Sandbox, fn: LoadedFunction, config: FunctionConfig, op: dict[str, Any]) -> Any:
    """The probe's JSON answer to one op (the invocation itself must succeed)."""
    result = invoke(sb, fn, config, op)
    assert result.outcome is Outcome.OK, result
    assert result.response is not None
    return json.loads(result.response.body)


def host_error(doc: Any) -> tuple[str, str]:
    """(case, detail) of a host call the probe reports as failed."""
    assert doc["ok"] is False, doc
    return doc["error"]["case"], str(doc["error"].get("detail") or "")


def cfg(name: str, **kw: Any) -> FunctionConfig:
    return FunctionConfig(name=name, **{"timeout_ms": 10_000, "memory_limit_mb": 128, **kw})


def test_environment_is_only_the_functions(
    sandbox: Sandbox, probe: LoadedFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "worker-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-aws-secret")
    env = answer(sandbox, probe, cfg("envy", env={"A": "1"}), {"op": "env"})["result"]
    assert set(env) == {"A", "FLOTILLA_FUNCTION_NAME", "FLOTILLA_INVOCATION_ID"}
    assert "worker-secret" not in json.dumps(env)


@pytest.mark.parametrize(
    "op",
    [
        {"op": "read_file", "path": "/etc/passwd"},
        {"op": "read_file", "path": "/proc/self/environ"},
        {"op": "read_file", "path": "../../../../etc/hostname"},
        {"op": "list_dir", "path": "/"},
        {"op": "list_dir", "path": "."},
        {"op": "write_file", "path": "/tmp/flotilla-hostile-probe"},
    ],
)
def test_no_worker_files(sandbox: Sandbox, probe: LoadedFunction, op: dict[str, Any]) -> None:
    doc = answer(sandbox, probe, cfg("files"), op)
    assert doc["ok"] is False, doc
    assert not Path("/tmp/flotilla-hostile-probe").exists()


@pytest.mark.parametrize(
    "op",
    [
        {"op": "tcp_connect", "host": "127.0.0.1", "port": 6379},
        {"op": "tcp_connect", "host": "127.0.0.1", "port": 5672},
        {"op": "tcp_connect", "host": "::1", "port": 6379},
        {"op": "udp_send", "host": "127.0.0.1", "port": 9},
        {"op": "getaddrinfo", "host": "localhost"},
    ],
)
def test_no_sockets_to_the_workers_services(
    sandbox: Sandbox, probe: LoadedFunction, op: dict[str, Any]
) -> None:
    doc = answer(sandbox, probe, cfg("sockets", allowed_hosts=("localhost:6379",)), op)
    assert doc["ok"] is False, doc  # even with the port in allowed_hosts: http.invoke only


def test_outbound_http_outside_the_allow_list_is_refused(
    sandbox: Sandbox,
    probe: LoadedFunction,
    http_server: Any,  # noqa: F811 - fixture
) -> None:
    port = http_server.server_address[1]
    config = cfg("http-out", allowed_hosts=(f"127.0.0.1:{port}",))
    ok = answer(
        sandbox, probe, config, {"op": "http.invoke", "url": f"http://127.0.0.1:{port}/echo"}
    )
    assert ok["ok"] and ok["result"]["status"] == 200  # the allowed host itself works
    refused = {
        "http://evil.example/": "denied",
        f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/": "denied",  # other port
        f"http://localhost:{port}/echo": "denied",  # same target, a name the list lacks
        f"http://127.0.0.1:{port}@evil.example/": "invalid-request",  # userinfo trick
        f"http://evil.example@127.0.0.1:{port}/": "invalid-request",
        f"http://[::1]:{port}/echo": "denied",  # IPv6 forms of the allowed address
        f"http://[::ffff:127.0.0.1]:{port}/echo": "denied",
        f"http://[::ffff:7f00:1]:{port}/echo": "denied",
        f"http://2130706433:{port}/echo": "invalid-request",  # numeric shorthands
        f"http://0x7f.0.0.1:{port}/echo": "invalid-request",
        f"http://127.1:{port}/echo": "invalid-request",
        "http://169.254.169.254/latest/meta-data/": "denied",
        "file:///etc/passwd": "invalid-request",
    }
    for url, case in refused.items():
        doc = answer(sandbox, probe, config, {"op": "http.invoke", "url": url})
        assert host_error(doc)[0] == case, (url, doc)
    # A redirect to a host outside the list is handed back, never followed.
    seen = len(http_server.seen)
    doc = answer(
        sandbox, probe, config, {"op": "http.invoke", "url": f"http://127.0.0.1:{port}/redirect"}
    )
    assert doc["result"]["status"] == 302
    assert [path for path, *_ in http_server.seen[seen:]] == ["/redirect"]


@pytest.mark.parametrize(
    ("resolved", "why"),
    [
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["10.0.0.7"], "private"),
        (["192.168.1.20"], "private"),
        (["100.64.0.1"], "private"),
        (["fd00::7"], "private"),
        (["::ffff:10.0.0.7"], "private"),
        (["93.184.216.34", "172.16.0.1"], "private"),  # one inside answer is enough
        (["169.254.169.254"], "metadata"),
        (["fe80::1"], "link-local"),
    ],
)
def test_allowed_name_resolving_inside_is_denied(
    hosts: HostClients,
    probe_wasm: Path,  # noqa: F811 - fixture
    resolved: list[str],
    why: str,
) -> None:
    # The worker's resolver answers with an inside address for a public allowed name
    # (DNS rebinding, a hostile zone): the call is denied before any connection.
    rebinding = HttpHost(resolve=lambda host, port: list(resolved))
    clients = HostClients(
        cache=hosts.cache, http=rebinding, s3=hosts.s3, dynamodb=hosts.dynamodb,
        log=hosts.log, redis=hosts.redis,
    )  # fmt: skip
    sb = Sandbox(clients, cache_dir=persistent_cache_dir())
    try:
        fn = sb.load(probe_wasm.read_bytes())
        config = cfg("rebind", allowed_hosts=("api.example.com", "*.example.com:8080"))
        for url in ("http://api.example.com/", "http://x.example.com:8080/"):
            doc = answer(sb, fn, config, {"op": "http.invoke", "url": url})
            case, detail = host_error(doc)
            assert case == "denied" and why in detail, (url, doc)
    finally:
        sb.close()
        rebinding.close()


def test_cache_keys_of_another_function_are_out_of_reach(
    sandbox: Sandbox, probe: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    owner, thief = cfg(f"{unique}-a"), cfg(f"{unique}-b")
    try:
        assert answer(
            sandbox, probe, owner, {"op": "cache.set", "key": "secret", "value": "s3cr3t"}
        )["ok"]
        for key in (
            "secret",
            f"fn:{owner.name}:secret",
            f"../{owner.name}:secret",
            f"{owner.name}:secret",
        ):
            doc = answer(sandbox, probe, thief, {"op": "cache.get", "key": key})
            assert doc == {"op": "cache.get", "ok": True, "result": None}, (key, doc)
            assert answer(sandbox, probe, thief, {"op": "cache.delete", "key": key})["ok"]
        got = answer(sandbox, probe, owner, {"op": "cache.get", "key": "secret"})
        assert got["result"]["text"] == "s3cr3t"  # untouched by the other function's deletes
    finally:
        for name in (owner.name, thief.name):
            for key in hosts.redis.scan_iter(match=f"fn:{name}:*"):
                hosts.redis.delete(key)


def test_other_buckets_and_tables_are_denied(
    sandbox: Sandbox, probe: LoadedFunction, hosts: HostClients, unique: str
) -> None:
    s3 = hosts.s3.client
    s3.create_bucket(Bucket=unique)
    s3.put_object(Bucket=unique, Key="k", Body=b"theirs")
    try:
        config = cfg("nosy", s3_buckets=(f"{unique}-mine",), dynamodb_tables=(f"{unique}-mine",))
        ops: list[dict[str, Any]] = [
            {"op": "s3.get", "bucket": unique, "key": "k"},
            {"op": "s3.put", "bucket": unique, "key": "k", "body": "overwritten"},
            {"op": "s3.delete", "bucket": unique, "key": "k"},
            {"op": "dynamodb.get", "table": unique, "key": {"pk": {"S": "a"}}},
            {"op": "dynamodb.put", "table": unique, "item": {"pk": {"S": "a"}}},
            {"op": "dynamodb.delete", "table": unique, "key": {"pk": {"S": "a"}}},
        ]
        for op in ops:
            assert host_error(answer(sandbox, probe, config, op))[0] == "denied", op
        assert s3.get_object(Bucket=unique, Key="k")["Body"].read() == b"theirs"
    finally:
        s3.delete_object(Bucket=unique, Key="k")
        s3.delete_bucket(Bucket=unique)


@pytest.mark.parametrize("op", [{"op": "loop"}, {"op": "sleep", "ms": 60_000}])
def test_guest_cannot_outlive_its_timeout(
    sandbox: Sandbox, probe: LoadedFunction, op: dict[str, Any]
) -> None:
    # Without the cut-off this test would run 60 s into its pytest timeout.
    result = invoke(sandbox, probe, cfg("slowpoke", timeout_ms=500), op)
    assert result.outcome is Outcome.TIMEOUT, result


class _OneFunction:
    """The `ArtifactCache` lookup of `SandboxRunner`, answering with one loaded function."""

    def __init__(self, fn: LoadedFunction, config: FunctionConfig) -> None:
        self._found = (fn, config)

    def get(self, name: str, digest: str) -> tuple[LoadedFunction, FunctionConfig]:
        return self._found


def _envelope(function: str, op: dict[str, Any], timeout_ms: int) -> Envelope:
    iid = uuid.uuid4().hex
    return Envelope(
        invocation_id=iid, correlation_id=iid, function=function, digest="d" * 64, headers=(),
        body=json.dumps(op).encode(), deadline_ms=now_ms() + timeout_ms, reply_to="q.reply",
    )  # fmt: skip


async def test_blocking_sleep_is_cut_off_at_the_timeout(
    sandbox: Sandbox, probe: LoadedFunction
) -> None:
    # time.sleep blocks in a WASI poll inside wasmtime, where the epoch deadline cannot
    # interrupt it: the worker's InvocationPool answers `timeout` and abandons the thread.
    config = cfg("sleepy", timeout_ms=300)
    metrics = WorkerMetrics()
    handler = EnvelopeHandler(
        SandboxRunner(sandbox, _OneFunction(probe, config)),  # type: ignore[arg-type]
        job_results="unused",
        metrics=metrics,
    )
    executor = ThreadPoolExecutor(2)
    try:
        pool = InvocationPool(handler, executor, max_abandoned=1)
        handled = await pool.handle(
            _envelope("sleepy", {"op": "wall_sleep", "ms": 3_000}, 300).encode()
        )
        assert handled.reply is not None and handled.reply.outcome == "timeout", handled
        assert "host call" in handled.reply.error
        assert pool.abandoned == 1  # answered while the guest still sleeps
        assert metrics.registry.get_sample_value("flotilla_invocations_abandoned_total") == 1
        # The worker keeps serving on the spare thread meanwhile.
        echo = await pool.handle(_envelope("sleepy", {"op": "echo"}, 5_000).encode())
        assert echo.reply is not None and echo.reply.outcome == "ok", echo
        await pool.wait_for_room()  # the sleep ended; the thread (and its store) came back
        assert pool.abandoned == 0
    finally:
        executor.shutdown(wait=False)


@pytest.mark.parametrize(
    "op", [{"op": "memory_bomb"}, {"op": "alloc", "mb": 256}, {"op": "big", "n": 200 << 20}]
)
def test_memory_cap_holds(sandbox: Sandbox, probe: LoadedFunction, op: dict[str, Any]) -> None:
    result = invoke(sandbox, probe, cfg("greedy", memory_limit_mb=64), op)
    assert result.outcome in (Outcome.MEMORY_LIMIT, Outcome.TRAP), result
    assert not result.ok
    # ... and the next invocation of the same function starts fresh and works.
    assert (
        answer(sandbox, probe, cfg("greedy", memory_limit_mb=64), {"op": "counter"})["result"] == 1
    )


def test_log_and_stdout_floods_are_capped(sandbox: Sandbox, probe: LoadedFunction) -> None:
    from flotilla.hosts.base import MAX_LOG_BYTES, MAX_LOG_RECORDS
    from flotilla.sandbox.wasi import OUTPUT_CAP

    config = cfg("chatty")
    result = invoke(sandbox, probe, config, {"op": "stdout", "n": 20 << 20})
    assert result.ok
    assert sum(len(r.message) for r in result.logs) <= OUTPUT_CAP + 1024
    flood = {"op": "hammer", "n": 20_000, "call": {"op": "log", "message": "x" * 500}}
    result = invoke(sandbox, probe, config, flood)
    assert result.ok, result
    assert len(result.logs) <= MAX_LOG_RECORDS
    assert sum(len(r.message.encode()) for r in result.logs) <= MAX_LOG_BYTES
    assert result.logs_dropped > 0


def test_host_call_is_cut_off_at_the_deadline(
    sandbox: Sandbox,
    probe: LoadedFunction,
    http_server: Any,  # noqa: F811 - fixture
) -> None:
    # The upstream holds the response for 60 s; the guest asks for no timeout of its own.
    port = http_server.server_address[1]
    config = cfg("holdout", timeout_ms=800, allowed_hosts=(f"127.0.0.1:{port}",))
    url = f"http://127.0.0.1:{port}/slow?ms=60000"
    result = invoke(sandbox, probe, config, {"op": "http.invoke", "url": url})
    if result.outcome is Outcome.OK:  # the host answered `timeout` as the deadline came
        assert result.response is not None
        assert host_error(json.loads(result.response.body))[0] == "timeout"
    else:
        assert result.outcome is Outcome.TIMEOUT, result
    trickle = f"http://127.0.0.1:{port}/trickle?n=600&ms=100"  # a body that never ends in time
    result = invoke(sandbox, probe, config, {"op": "http.invoke", "url": trickle})
    assert result.outcome is Outcome.TIMEOUT or (
        result.response is not None and host_error(json.loads(result.response.body))[0] == "timeout"
    ), result


async def test_hostile_guests_do_not_hurt_a_normal_one_on_the_same_worker(
    amqp_url: str,
    redis_url: str,
    aws_endpoint_url: str,
    probe_wasm: Path,  # noqa: F811
) -> None:
    # One worker process with three slots: two run hostile guests (a CPU loop until its 6 s
    # timeout, a memory bomb, an exit, an uncaught exception) while the third serves a
    # normal function whose own timeout is 4 s: every normal call must still succeed. (2 s
    # was once too short for a ~3 ms echo on a 2-core machine at load 10, with the two
    # hostile threads burning CPU beside it: starvation by the machine, not by the guests.)
    # One process (--processes 1): the point is hostile guests beside a normal one in the
    # same address space; spread over two processes they might never meet.
    fleet = Fleet(amqp_url, redis_url, aws_endpoint_url=aws_endpoint_url)
    try:
        await asyncio.to_thread(fleet.start_dispatcher)
        await asyncio.to_thread(fleet.start_worker, "worker", concurrency=3, processes=1)
        wasm = probe_wasm.read_bytes()
        async with httpx.AsyncClient(base_url=fleet.api, timeout=30) as client:
            for name, config in (
                ("normal", {"timeout_ms": 4_000}),
                ("hostile", {"timeout_ms": 6_000, "memory_limit_mb": 64}),
            ):
                r = await client.put(
                    f"/v1/functions/{name}",
                    files={"component": ("p.wasm", wasm, "application/wasm")},
                    data={"config": json.dumps(config)},
                    timeout=300,
                )
                assert r.status_code in (200, 201), r.text

            async def call(name: str, op: dict[str, Any]) -> httpx.Response:
                return await client.post(f"/v1/functions/{name}/invoke", content=json.dumps(op))

            assert (await call("normal", {"op": "counter"})).status_code == 200  # warm
            hostile_ops: list[dict[str, Any]] = [
                {"op": "loop"},
                {"op": "memory_bomb"},
                {"op": "exit", "how": "os", "code": 3},
                {"op": "raise"},
                {"op": "recursion", "depth": 10_000_000, "limit": 100_000_000},
            ]

            async def hostile() -> list[int]:
                out = []
                for op in hostile_ops:
                    out.append((await call("hostile", op)).status_code)
                return out

            async def normal() -> list[int]:
                statuses: list[int] = []
                began = time.monotonic()
                while time.monotonic() - began < 6 or len(statuses) < 10:
                    statuses.append((await call("normal", {"op": "echo"})).status_code)
                return statuses

            hostile_a, hostile_b, normals = await asyncio.gather(hostile(), hostile(), normal())
        assert set(normals) == {200}, normals
        assert hostile_a[0] == hostile_b[0] == 504  # the loop hit its timeout
        assert all(s in (502, 504) for s in hostile_a + hostile_b), (hostile_a, hostile_b)
        assert fleet.procs["worker"].poll() is None, fleet.log_tail("worker")
    finally:
        await asyncio.to_thread(fleet.stop)


async def test_blocked_guest_is_answered_at_its_timeout_by_a_real_worker(
    amqp_url: str,
    redis_url: str,
    aws_endpoint_url: str,
    probe_wasm: Path,  # noqa: F811
) -> None:
    # A worker with two slots and room for two abandoned threads. A guest asleep in a WASI
    # poll for 6 s with a 500 ms timeout gets its 504 from the worker long before the sleep
    # ends, while a normal function keeps meeting its own 2 s timeout on the same worker.
    # A second sleeper reaches the cap: /readyz says 503 until the first thread comes back.
    # One process (--processes 1): the cap is per process, and the two sleepers must land in
    # the same one to reach it.
    fleet = Fleet(amqp_url, redis_url, aws_endpoint_url=aws_endpoint_url)
    try:
        await asyncio.to_thread(fleet.start_dispatcher)
        await asyncio.to_thread(
            fleet.start_worker, "worker", concurrency=2, processes=1,
            extra=("--max-abandoned-threads", "2"),
        )
        found = re.search(r"/readyz on port (\d+)", fleet.log_tail("worker", 20_000))
        assert found, fleet.log_tail("worker")
        probes = f"http://127.0.0.1:{found.group(1)}"
        wasm = probe_wasm.read_bytes()
        async with httpx.AsyncClient(base_url=fleet.api, timeout=30) as client:
            for name, config in (
                ("normal", {"timeout_ms": 2_000}),
                ("sleepy", {"timeout_ms": 500}),
            ):
                r = await client.put(
                    f"/v1/functions/{name}",
                    files={"component": ("p.wasm", wasm, "application/wasm")},
                    data={"config": json.dumps(config)},
                    timeout=300,
                )
                assert r.status_code in (200, 201), r.text

            async def call(name: str, op: dict[str, Any]) -> httpx.Response:
                return await client.post(f"/v1/functions/{name}/invoke", content=json.dumps(op))

            async def ready() -> int:
                return (await client.get(f"{probes}/readyz")).status_code

            assert (await call("normal", {"op": "counter"})).status_code == 200  # warm
            sleep = {"op": "wall_sleep", "ms": 6_000}
            sleeper = asyncio.ensure_future(call("sleepy", sleep))
            normals: list[int] = []
            while not sleeper.done() or len(normals) < 5:
                normals.append((await call("normal", {"op": "echo"})).status_code)
            first = sleeper.result()
            assert first.status_code == 504, first.text
            assert "host call" in first.text  # the worker's answer, not the dispatcher's wait
            assert set(normals) == {200}, normals
            assert await ready() == 200  # one thread out of two allowed

            second = await call("sleepy", sleep)
            assert second.status_code == 504 and "host call" in second.text, second.text
            assert await ready() == 503  # at the cap: no new work until a thread returns
            while await ready() != 200:  # the first sleep ends; readiness is the only signal
                await asyncio.sleep(0.1)
            assert (await call("normal", {"op": "echo"})).status_code == 200
            metrics = (await client.get(f"{probes}/metrics")).text
            assert "flotilla_invocations_abandoned_total 2.0" in metrics, metrics
        assert fleet.procs["worker"].poll() is None, fleet.log_tail("worker")
    finally:
        await asyncio.to_thread(fleet.stop)
