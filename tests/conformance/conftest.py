"""Fixtures of the conformance suite: real host clients in three set-ups, one Sandbox each."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import LoadedFunction, Sandbox
from flotilla.settings import WorkerSettings
from tests.conformance.cases import Env, Headers
from tests.conformance.guests import conformance_wasm
from tests.hosts.conftest import RoutesHandler, RoutesServer, closed_port


class MemorySecrets:
    """One secret, `token`, for every function."""

    def get(self, ctx: InvocationContext, name: str) -> str | None:
        """The secret's value, None when there is no such secret."""
        return {"token": "s3cr3t"}.get(name)


def _refuse(name: str, what: str) -> None:
    """Names starting with "no" are denied, names with a space are invalid (as the real
    clients' checks answer), so every error case of topics and spawn crosses the guest."""
    if name.startswith("no"):
        raise HostError("denied", f"{name} is not in {what}")
    if " " in name:
        raise HostError("invalid-argument", f"{name!r} is not a valid name")


class MemoryTopics:
    """Records publishes into `sent`; refuses some names (see `_refuse`)."""

    def __init__(self, sent: list[tuple[str, str, bytes]]) -> None:
        self.sent = sent

    def publish(self, ctx: InvocationContext, topic: str, message: bytes) -> None:
        """Record or refuse."""
        _refuse(topic, "publish_topics")
        self.sent.append((ctx.config.name, topic, bytes(message)))


class MemorySpawner:
    """Records jobs into `jobs` and hands out ids; refuses some names (see `_refuse`)."""

    def __init__(self, jobs: list[tuple[str, str, Headers, bytes, str]]) -> None:
        self.jobs = jobs
        self.lock = threading.Lock()

    def job(
        self, ctx: InvocationContext, function: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> str:
        """Record and return a new job id."""
        _refuse(function, "spawn_functions")
        with self.lock:
            job_id = f"job-{uuid.uuid4().hex[:12]}"
            self.jobs.append((ctx.config.name, function, tuple(headers), bytes(body), job_id))
        return job_id


class Conformance:
    """The session's host clients, sandboxes and loaded guests, made on first use."""

    def __init__(self, redis_url: str, aws_endpoint_url: str, http: RoutesServer) -> None:
        port = http.server_address[1]
        suffix = uuid.uuid4().hex[:10]
        self.vars = {
            "http": f"http://127.0.0.1:{port}", "http_host": f"127.0.0.1:{port}",
            "http_port": str(port), "closed": str(closed_port()),
            "bucket": f"conformance-{suffix}", "table": f"conformance-{suffix}",
            "redis_port": str(urlsplit(redis_url).port or 6379),
        }  # fmt: skip
        self.redis = redis.Redis.from_url(redis_url)
        self.env = Env(vars=self.vars, redis=self.redis)
        real = HostClients.from_settings(
            WorkerSettings(redis_url=redis_url, aws_endpoint_url=aws_endpoint_url)
        )
        closed = f"127.0.0.1:{closed_port()}"  # Redis, S3 and DynamoDB all unreachable
        down = HostClients.from_settings(
            WorkerSettings(redis_url=f"redis://{closed}/0", aws_endpoint_url=f"http://{closed}")
        )
        self._owned = [real, down]
        self.hosts = {
            "real": real,
            "down": down,
            "clients": real.with_clients(
                secrets=MemorySecrets(),
                topics=MemoryTopics(self.env.published),
                spawn=MemorySpawner(self.env.spawned),
            ),
        }
        real.s3.client.create_bucket(Bucket=self.vars["bucket"])
        real.dynamodb.client.create_table(
            TableName=self.vars["table"],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self._sandboxes: dict[str, Sandbox] = {}
        self._loaded: dict[tuple[str, str], LoadedFunction] = {}

    def function(self, hosts: str, language: str) -> tuple[Sandbox, LoadedFunction]:
        """The sandbox of host set `hosts` and the language's guest loaded into it."""
        wasm = conformance_wasm(language)  # skips (or fails under CI) when it cannot be built
        sandbox = self._sandboxes.get(hosts)
        if sandbox is None:
            sandbox = self._sandboxes[hosts] = Sandbox(self.hosts[hosts], cache_dir=_cache_dir())
        fn = self._loaded.get((hosts, language))
        if fn is None:
            fn = self._loaded[(hosts, language)] = sandbox.load(wasm.read_bytes())
        return sandbox, fn

    def forget(self, unique: str) -> None:
        """Delete the cache keys a case's function left in Redis."""
        keys = list(self.redis.scan_iter(match=f"fn:{unique}:*", count=1000))
        if keys:
            self.redis.delete(*keys)

    def close(self) -> None:
        """Stop the sandboxes, close the clients."""
        for sandbox in self._sandboxes.values():
            sandbox.close()
        for clients in self._owned:
            clients.close()
        self.redis.close()


def _cache_dir() -> str:
    return WorkerSettings.from_env().cache_dir


@pytest.fixture(scope="session")
def conformance_http() -> Iterator[RoutesServer]:
    """The local HTTP server the `http` cases call (tests/hosts/conftest.py's routes)."""
    server = RoutesServer(("127.0.0.1", 0), RoutesHandler)
    server.seen = []
    server.stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def conformance(
    redis_url: str, aws_endpoint_url: str, conformance_http: RoutesServer
) -> Iterator[Conformance]:
    """Host clients (real, services down, with in-memory clients) and their sandboxes."""
    suite = Conformance(redis_url, aws_endpoint_url, conformance_http)
    yield suite
    suite.close()


def fill(value: Any, subst: Any) -> Any:
    """`value` with placeholders filled in its strings, tuples and lists."""
    if isinstance(value, str):
        return subst(value)
    if isinstance(value, (tuple, list)):
        return tuple(fill(v, subst) for v in value)
    return value
