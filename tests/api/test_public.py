"""Public functions (`public: true`): who may invoke without a key, what a refusal reveals,
which version runs, and the per-address limit. The app with keys on, real Redis (keys,
registry, buckets) and moto S3, a scripted fake worker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import boto3
import httpx
import pytest
import redis.asyncio as aioredis

from dispatcher.auth import DEPLOY, INVOKE, SUBSCRIBE, Authenticator
from flotilla.ratelimit import Limit
from tests.api.conftest import WASM, FakeTransport
from tests.hardening.conftest import AUTH_ADMIN_KEY, auth_app, bearer

pytestmark = pytest.mark.integration
ADMIN = bearer(AUTH_ADMIN_KEY)


class Public:
    """The app, its authenticator and scripted worker, and clients by client address."""

    def __init__(self, app: Any, auth: Authenticator, transport: FakeTransport) -> None:
        self.app = app
        self.auth = auth
        self.transport = transport

    def client(self, address: str = "192.0.2.1") -> httpx.AsyncClient:
        """A client connecting from `address`, sending no key unless told to."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(address, 5000)),
            base_url="http://test",
        )

    async def deploy(self, name: str, public: bool, tag: bytes = b"") -> None:
        async with self.client() as c:
            resp = await c.put(f"/v1/functions/{name}", headers=ADMIN,
                               files={"component": ("f.wasm", WASM + tag)},
                               data={"config": json.dumps({"public": public})})
            assert resp.status_code in (200, 201), resp.text


@pytest.fixture
async def public(redis_url: str, aws_endpoint_url: str, unique: str) -> AsyncIterator[Public]:
    redis = aioredis.from_url(redis_url)
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    transport = FakeTransport()
    app, auth = auth_app(redis, s3, unique, transport)
    auth.public_limit = Limit(rate=0.01, burst=5)
    try:
        yield Public(app, auth, transport)
    finally:
        keys = [k async for k in redis.scan_iter(f"{unique}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_without_a_key_only_a_public_functions_invoke_routes_answer(public: Public) -> None:
    await public.deploy("open", public=True)
    await public.deploy("closed", public=False)
    public.auth.public_limit = None  # seven calls from one address
    async with public.client("192.0.2.10") as anon:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
            resp = await anon.request(method, "/v1/functions/open/invoke/cors?x=1")
            assert resp.status_code == 200, (method, resp.text)
    assert [(e.method, e.path, e.caller) for e, _ in public.transport.calls][-2:] == [
        ("HEAD", "/cors", None), ("OPTIONS", "/cors", None)]
    async with public.client("192.0.2.11") as anon:
        for method, path in [("GET", "/v1/functions/open"), ("DELETE", "/v1/functions/open"),
                             ("PUT", "/v1/functions/open"), ("POST", "/v1/functions/open/jobs"),
                             ("GET", "/v1/functions"), ("GET", "/v1/keys"),
                             ("GET", "/v1/jobs/x"), ("GET", "/v1/topics/a/events")]:
            resp = await anon.request(method, path)
            assert resp.status_code == 401, (method, path)


async def test_a_refusal_without_a_key_says_nothing_about_existence(public: Public) -> None:
    # Given a private function; and names that do not exist or could not exist
    await public.deploy("closed", public=False)
    answers = []
    async with public.client("192.0.2.20") as anon:
        for path in ("/v1/functions/closed/invoke", "/v1/functions/ghost/invoke",
                     "/v1/functions/Bad_Name/invoke/x", "/v1/functions/closed/invoke?version=1"):
            resp = await anon.post(path, content=b"x")
            answers.append((resp.status_code, resp.headers["content-type"],
                            resp.headers["www-authenticate"], resp.json()["detail"]))
    # Then the answers are one and the same, and nothing ran
    assert len(set(answers)) == 1
    assert answers[0][0] == 401
    assert public.transport.calls == []


async def test_a_key_that_may_not_invoke_a_public_function_still_may(public: Public) -> None:
    await public.deploy("open", public=True)
    await public.deploy("closed", public=False)
    limited, key = await public.auth.keys.create("t", [INVOKE], functions=("other",))
    subscriber, sub_key = await public.auth.keys.create("t", [SUBSCRIBE, DEPLOY])
    async with public.client() as c:
        for record, k in ((limited, key), (subscriber, sub_key)):
            resp = await c.post("/v1/functions/open/invoke", headers=bearer(k))
            assert resp.status_code == 200
            assert public.transport.calls[-1][0].caller == record.id
        # but not a private one, existing or not: the same 403
        details = set()
        for name in ("closed", "ghost"):
            resp = await c.post(f"/v1/functions/{name}/invoke", headers=bearer(key))
            assert resp.status_code == 403
            details.add(resp.json()["detail"].replace(name, "NAME"))
        assert len(details) == 1
        # and an invalid key is refused even for a public function
        resp = await c.post("/v1/functions/open/invoke",
                            headers=bearer("flk_000000000000_" + "x" * 43))
        assert resp.status_code == 401


async def test_the_latest_version_decides_and_a_pinned_one_must_be_public_too(
    public: Public,
) -> None:
    public.auth.public_limit = None  # many calls from one address
    await public.deploy("fn", public=True, tag=b"v1")   # version 1: public
    await public.deploy("fn", public=False, tag=b"v2")  # version 2: private
    async with public.client("192.0.2.30") as anon:
        # Given the latest version private: no version answers without a key
        assert (await anon.post("/v1/functions/fn/invoke")).status_code == 401
        assert (await anon.post("/v1/functions/fn/invoke?version=1")).status_code == 401
        # When version 3 makes it public again (effective at once on this dispatcher)
        await public.deploy("fn", public=True, tag=b"v3")
        assert (await anon.post("/v1/functions/fn/invoke")).status_code == 200
        assert (await anon.post("/v1/functions/fn/invoke?version=1")).status_code == 200
        # Then a pinned private version still needs a key, and a missing one is a 404
        assert (await anon.post("/v1/functions/fn/invoke?version=2")).status_code == 401
        assert (await anon.post("/v1/functions/fn/invoke?version=9")).status_code == 404
    digests = [e.digest for e, _ in public.transport.calls]
    assert len(digests) == 2 and digests[0] != digests[1]


async def test_calls_without_a_key_share_a_bucket_per_address(public: Public) -> None:
    await public.deploy("open", public=True)
    async with public.client("192.0.2.40") as first, public.client("192.0.2.41") as second:
        statuses = [(await first.get("/v1/functions/open/invoke")).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        limited = await first.get("/v1/functions/open/invoke")
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["retry-after"]) >= 1
        assert "per client address" in limited.json()["detail"]
        assert (await second.get("/v1/functions/open/invoke")).status_code == 200
        # a key is limited by its own bucket, not the address's
        assert (await first.get("/v1/functions/open/invoke", headers=ADMIN)).status_code == 200
    # and an IPv6 host's whole /64 is one caller
    async with public.client("2001:db8::1") as a, public.client("2001:db8::2") as b:
        for _ in range(5):
            assert (await a.get("/v1/functions/open/invoke")).status_code == 200
        assert (await b.get("/v1/functions/open/invoke")).status_code == 429


async def test_no_limit_when_the_setting_is_off(public: Public) -> None:
    await public.deploy("open", public=True)
    public.auth.public_limit = None
    async with public.client("192.0.2.50") as anon:
        statuses = {(await anon.get("/v1/functions/open/invoke")).status_code for _ in range(8)}
    assert statuses == {200}
