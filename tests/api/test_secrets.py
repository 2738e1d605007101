"""The secrets routes against real Redis (API keys on, a fake worker): every status, the
deploy scope, 501 without a key, 503 with Redis down, and values in no response; and dev
mode, where the guest reads what its API set."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from dispatcher.app import ApiOptions, create_app
from dispatcher.auth import Authenticator
from flotilla.artifacts import ArtifactStore, LocalBackend
from flotilla.dev.stack import build_dev
from flotilla.jobs import JobStore
from flotilla.registry import Deployer, Registry
from flotilla.secrets import MAX_VALUE_BYTES, Keyring, SecretStore, new_key
from flotilla.settings import DispatcherSettings
from tests.api.conftest import FakeTransport, fake_compile
from tests.guests.build import python_guest
from tests.services import free_port

pytestmark = pytest.mark.integration

ADMIN = "secrets-test-admin-key"
VALUE = "sk_live_do-not-show-me-4f1c9a"
PROBLEM = "application/problem+json"


@dataclasses.dataclass
class SecretsApi:
    """An app on real Redis with API keys on; `seen` collects every response."""

    client: httpx.AsyncClient
    auth: Authenticator
    store: SecretStore | None
    seen: list[httpx.Response]

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN}"}


def build(redis: Any, prefix: str, root: Path, store: SecretStore | None) -> tuple[Any, Any]:
    """The dispatcher app with `store` (None: secrets off) and its authenticator."""
    registry = Registry(redis, prefix=prefix)
    auth = Authenticator.on_redis(redis, prefix=prefix, admin_key=ADMIN)
    app = create_app(
        registry=registry,
        deployer=Deployer(registry, ArtifactStore(LocalBackend(root), "k"),
                          compile=fake_compile, engine_fingerprint="eng"),
        jobs=JobStore(redis, prefix=prefix, ttl_s=60),
        transport=FakeTransport(),
        options=ApiOptions(reply_margin_ms=500, job_ttl_s=60),
        auth=auth,
        secrets=store,
    )
    return app, auth


@pytest.fixture
async def api(redis_url: str, unique: str, tmp_path: Path,
              request: pytest.FixtureRequest) -> AsyncIterator[SecretsApi]:
    redis = aioredis.from_url(redis_url)
    configured = getattr(request, "param", True)
    store = SecretStore(redis, Keyring.parse(new_key()), prefix=unique, max_secrets=3) \
        if configured else None
    app, auth = build(redis, unique, tmp_path, store)
    seen: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                               event_hooks={"response": [record]})
    try:
        yield SecretsApi(client, auth, store, seen)
    finally:
        await client.aclose()
        keys = [k async for k in redis.scan_iter(f"{unique}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def assert_problem(resp: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["type"] == f"urn:flotilla:problem:{slug}"
    return body


def assert_never_shown(api: SecretsApi, *values: str) -> None:
    """No response body or header carried any of `values`."""
    assert api.seen
    for resp in api.seen:
        text = resp.text + "".join(f"{k}: {v}\n" for k, v in resp.headers.items())
        for value in values:
            assert value not in text, (resp.request.method, resp.request.url)


async def test_set_list_replace_delete(api: SecretsApi) -> None:
    url = "/v1/functions/not-deployed-yet/secrets"
    resp = await api.client.put(f"{url}/API_TOKEN", content=VALUE, headers=api.admin())
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body.pop("updated_at") > 0
    assert body == {"function": "not-deployed-yet", "name": "API_TOKEN", "created": True}
    resp = await api.client.put(f"{url}/API_TOKEN", content=VALUE + "-2", headers=api.admin())
    assert resp.status_code == 200 and resp.json()["created"] is False
    await api.client.put(f"{url}/a.first", content="x", headers=api.admin())
    resp = await api.client.get(url, headers=api.admin())
    assert resp.status_code == 200
    listed = resp.json()
    assert listed["function"] == "not-deployed-yet"
    assert [s["name"] for s in listed["secrets"]] == ["API_TOKEN", "a.first"]  # by code point
    assert all(set(s) == {"name", "updated_at"} for s in listed["secrets"])
    assert api.store is not None
    assert await api.store.get("not-deployed-yet", "API_TOKEN") == VALUE + "-2"
    resp = await api.client.delete(f"{url}/API_TOKEN", headers=api.admin())
    assert resp.status_code == 204 and resp.content == b""
    resp = await api.client.delete(f"{url}/API_TOKEN", headers=api.admin())
    body = assert_problem(resp, 404, "secret-not-found")
    assert "API_TOKEN" in body["detail"]
    resp = await api.client.get(url, headers=api.admin())
    assert [s["name"] for s in resp.json()["secrets"]] == ["a.first"]
    assert_never_shown(api, VALUE)


async def test_bad_names_and_values_are_refused(api: SecretsApi) -> None:
    h = api.admin()
    put = api.client.put
    assert_problem(await put("/v1/functions/fn/secrets/1bad", content="v", headers=h),
                   422, "invalid-request")
    assert_problem(await put("/v1/functions/fn/secrets/a%20b", content="v", headers=h),
                   422, "invalid-request")
    resp = await put("/v1/functions/fn/secrets/a%2Fb", content="v", headers=h)
    assert resp.status_code == 404  # a slash: no such route
    assert_problem(await put("/v1/functions/Bad_Fn/secrets/ok", content="v", headers=h),
                   422, "invalid-request")
    body = assert_problem(await put("/v1/functions/fn/secrets/ok", content=b"", headers=h),
                          422, "invalid-request")
    assert "empty" in body["detail"]
    body = assert_problem(await put("/v1/functions/fn/secrets/ok", content=b"\xff\xfe" + b"x",
                                    headers=h), 422, "invalid-request")
    assert "UTF-8" in body["detail"]
    big = b"x" * (MAX_VALUE_BYTES + 1)
    body = assert_problem(await put("/v1/functions/fn/secrets/ok", content=big, headers=h),
                          413, "body-too-large")
    assert str(MAX_VALUE_BYTES) in body["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off while reading
        for _ in range(MAX_VALUE_BYTES // 1024 + 1):
            yield b"y" * 1024

    assert_problem(await put("/v1/functions/fn/secrets/ok", content=chunks(), headers=h),
                   413, "body-too-large")
    assert (await api.client.get("/v1/functions/fn/secrets", headers=h)).json()["secrets"] == []
    assert (await put("/v1/functions/fn/secrets/ok", content=b"x" * MAX_VALUE_BYTES,
                      headers=h)).status_code == 201


async def test_a_function_holds_a_bounded_number_of_secrets(api: SecretsApi) -> None:
    for i in range(3):
        resp = await api.client.put(f"/v1/functions/fn/secrets/s{i}", content="v",
                                    headers=api.admin())
        assert resp.status_code == 201
    resp = await api.client.put("/v1/functions/fn/secrets/s3", content="v", headers=api.admin())
    assert "already has 3 secrets" in assert_problem(resp, 409, "too-many-secrets")["detail"]


async def test_secrets_need_the_deploy_scope(api: SecretsApi) -> None:
    _, invoke_key = await api.auth.keys.create("caller", ["invoke"])
    _, deploy_key = await api.auth.keys.create("ci", ["deploy"])
    url = "/v1/functions/fn/secrets"
    for method, path in (("PUT", f"{url}/token"), ("GET", url), ("DELETE", f"{url}/token")):
        content = VALUE if method == "PUT" else None
        resp = await api.client.request(method, path, content=content)
        assert_problem(resp, 401, "unauthorized")
        resp = await api.client.request(method, path, content=content,
                                        headers={"Authorization": f"Bearer {invoke_key}"})
        assert_problem(resp, 403, "forbidden")
    resp = await api.client.put(f"{url}/token", content=VALUE,
                                headers={"Authorization": f"Bearer {deploy_key}"})
    assert resp.status_code == 201
    assert_never_shown(api, VALUE)


@pytest.mark.parametrize("api", [False], indirect=True)
async def test_without_a_key_every_route_answers_501(api: SecretsApi) -> None:
    url = "/v1/functions/fn/secrets"
    for method, path in (("PUT", f"{url}/token"), ("GET", url), ("DELETE", f"{url}/token")):
        resp = await api.client.request(method, path, content=VALUE if method == "PUT" else None,
                                        headers=api.admin())
        body = assert_problem(resp, 501, "secrets-not-configured")
        assert "FLOTILLA_SECRETS_KEY" in body["detail"]
    assert_never_shown(api, VALUE)


async def test_redis_down_is_503(tmp_path: Path, unique: str, redis_url: str) -> None:
    up = aioredis.from_url(redis_url)
    down = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    store = SecretStore(down, Keyring.parse(new_key()), prefix=unique)
    app, _ = build(up, unique, tmp_path, store)  # keys are checked on the Redis that is up
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        for method in ("PUT", "GET"):
            path = "/v1/functions/fn/secrets" + ("/token" if method == "PUT" else "")
            resp = await client.request(method, path, content=VALUE if method == "PUT" else None,
                                        headers=admin)
            assert_problem(resp, 503, "unavailable")
            assert VALUE not in resp.text
    await up.aclose()
    await down.aclose()


async def test_openapi_documents_the_secrets_routes(api: SecretsApi) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    ops = {(path, method): op for path, item in doc["paths"].items()
           for method, op in item.items()}
    put = ops[("/v1/functions/{name}/secrets/{secret}", "put")]
    assert put["operationId"] == "set_secret"
    assert {"200", "201", "409", "413", "422", "501", "503"} <= set(put["responses"])
    assert "application/octet-stream" in put["requestBody"]["content"]
    listed = ops[("/v1/functions/{name}/secrets", "get")]
    assert "secrets-not-configured" in listed["responses"]["501"]["description"]
    delete = ops[("/v1/functions/{name}/secrets/{secret}", "delete")]
    assert "secret-not-found" in delete["responses"]["404"]["description"]
    assert all(op.get("security") for key, op in ops.items() if "secrets" in key[0])


@pytest.mark.slow
async def test_dev_mode_guests_read_secrets_set_through_its_api(aws_endpoint_url: str) -> None:
    wasm = python_guest("secret-digest").read_bytes()
    # No FLOTILLA_SECRETS_KEY: dev mode makes a key of its own.
    environ = {"FLOTILLA_CACHE_DIR": os.environ["FLOTILLA_CACHE_DIR"]}
    settings = DispatcherSettings.from_env(environ, aws_endpoint_url=aws_endpoint_url)
    stack = build_dev(settings, loop=asyncio.get_running_loop(), concurrency=1)
    await stack.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app),
                                     base_url="http://dev", timeout=120) as client:
            resp = await client.put("/v1/functions/digest/secrets/TOKEN", content=VALUE)
            assert resp.status_code == 201, resp.text
            resp = await client.put("/v1/functions/digest", files={"component": ("f", wasm)})
            assert resp.status_code == 201, resp.text
            resp = await client.post("/v1/functions/digest/invoke", content="TOKEN")
            assert resp.json()["sha256"] == hashlib.sha256(VALUE.encode()).hexdigest()
            assert VALUE not in resp.text
    finally:
        await stack.close()
