"""Access control: API keys (hashed in Redis), scopes, per-key rate limits, explicit insecurity.

Against the real app on real Redis (keys, buckets) and moto S3, with a scripted fake worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import boto3
import httpx
import pytest

from dispatcher.auth import ADMIN, DEPLOY, INVOKE, Authenticator, hash_key
from dispatcher.service import Dispatcher
from flotilla.cli import main
from flotilla.errors import SettingsError
from flotilla.ratelimit import Limit, refill, retry_after_s
from tests.api.conftest import WASM, FakeTransport
from tests.hardening.conftest import AuthApi, auth_app, bearer

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def assert_problem(resp: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = resp.json()
    assert body["type"] == f"urn:flotilla:problem:{slug}"
    assert body["status"] == status
    return body


async def new_key(api: AuthApi, *scopes: str, functions: tuple[str, ...] = (),
                  limit: Limit | None = None) -> dict[str, str]:
    _, key = await api.auth.keys.create("test", scopes, functions=functions, limit=limit)
    return bearer(key)


# Given no key, a bad key or a malformed header, when calling any protected route: 401.
@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer flk_000000000000_" + "x" * 43},
    {"Authorization": "Bearer not-a-key"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
])
async def test_missing_or_bad_key_is_401(auth_api: AuthApi, headers: dict[str, str]) -> None:
    for method, path in [("GET", "/v1/functions"), ("POST", "/v1/functions/echo/invoke"),
                         ("PUT", "/v1/functions/echo"), ("GET", "/v1/jobs/x"),
                         ("GET", "/v1/keys")]:
        resp = await auth_api.client.request(method, path, headers=headers)
        assert_problem(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"].startswith("Bearer")
    assert auth_api.transport.calls == []


async def test_401_and_403_do_not_reveal_whether_a_function_exists(auth_api: AuthApi) -> None:
    await auth_api.deploy("echo")
    await auth_api.deploy("secret")
    limited = await new_key(auth_api, INVOKE, functions=("echo",))
    # Without a key, a deployed and an unknown function look the same (and so does a bad name).
    bodies = []
    for name in ("secret", "ghost", "Bad_Name", "x" * 300):
        resp = await auth_api.client.post(f"/v1/functions/{name}/invoke", content=b"x")
        bodies.append(assert_problem(resp, 401, "unauthorized")["detail"])
    assert len(set(bodies)) == 1
    # With a key limited to echo: forbidden whether the other function exists or not.
    for name in ("secret", "ghost"):
        resp = await auth_api.client.post(f"/v1/functions/{name}/invoke", headers=limited)
        body = assert_problem(resp, 403, "forbidden")
        assert name in str(body["detail"])
    resp = await auth_api.client.post("/v1/functions/echo/invoke", headers=limited, content=b"hi")
    assert resp.status_code == 200
    assert resp.content == b"hi"
    assert [e.function for e, _ in auth_api.transport.calls] == ["echo"]


async def test_scopes(auth_api: AuthApi) -> None:
    await auth_api.deploy("echo")
    invoker = await new_key(auth_api, INVOKE)
    deployer = await new_key(auth_api, DEPLOY)
    # invoke: may invoke and submit jobs, may not manage functions or keys
    assert (await auth_api.client.post("/v1/functions/echo/invoke", headers=invoker)
            ).status_code == 200
    assert (await auth_api.client.post("/v1/functions/echo/jobs", headers=invoker)
            ).status_code == 202
    for method, path in [("GET", "/v1/functions"), ("GET", "/v1/functions/echo"),
                         ("DELETE", "/v1/functions/echo"), ("GET", "/v1/keys")]:
        resp = await auth_api.client.request(method, path, headers=invoker)
        assert "scope" in str(assert_problem(resp, 403, "forbidden")["detail"])
    resp = await auth_api.client.put("/v1/functions/echo", headers=invoker,
                                     files={"component": ("f.wasm", WASM + b"v2")})
    assert_problem(resp, 403, "forbidden")
    # deploy: may manage functions, may not invoke them
    resp = await auth_api.client.put("/v1/functions/other", headers=deployer,
                                     files={"component": ("f.wasm", WASM)})
    assert resp.status_code == 201
    assert (await auth_api.client.get("/v1/functions", headers=deployer)).status_code == 200
    resp = await auth_api.client.post("/v1/functions/echo/invoke", headers=deployer)
    assert_problem(resp, 403, "forbidden")
    resp = await auth_api.client.post("/v1/functions/echo/jobs", headers=deployer)
    assert_problem(resp, 403, "forbidden")
    # open routes stay open
    assert (await auth_api.client.get("/healthz")).status_code == 200
    assert (await auth_api.client.get("/openapi.json")).status_code == 200


async def test_limited_key_sees_other_functions_jobs_as_missing(auth_api: AuthApi) -> None:
    await auth_api.deploy("echo")
    await auth_api.deploy("other")
    resp = await auth_api.client.post("/v1/functions/other/jobs", headers=auth_api.admin())
    job_url = resp.json()["status_url"]
    limited = await new_key(auth_api, INVOKE, functions=("echo",))
    assert_problem(await auth_api.client.get(job_url, headers=limited), 404, "job-not-found")
    assert_problem(await auth_api.client.get("/v1/jobs/nope", headers=limited), 404,
                   "job-not-found")
    assert (await auth_api.client.get(job_url, headers=auth_api.admin())).status_code == 200


async def test_keys_are_stored_hashed_and_revocation_is_immediate(auth_api: AuthApi) -> None:
    await auth_api.deploy("echo")
    record, key = await auth_api.auth.keys.create("ci", [INVOKE])
    secret = key.rsplit("_", 1)[1]
    stored = [k async for k in auth_api.redis.scan_iter(f"{auth_api.prefix}:*")]
    dump = b""
    for k in stored:
        dump += k
        if await auth_api.redis.type(k) == b"hash":
            for f, v in (await auth_api.redis.hgetall(k)).items():
                dump += f + v
    assert hash_key(key).encode() in dump
    assert secret.encode() not in dump
    assert (await auth_api.client.post("/v1/functions/echo/invoke", headers=bearer(key))
            ).status_code == 200
    assert await auth_api.auth.keys.revoke(record.id)
    resp = await auth_api.client.post("/v1/functions/echo/invoke", headers=bearer(key))
    assert_problem(resp, 401, "unauthorized")


async def test_admin_api_creates_lists_and_revokes_keys(auth_api: AuthApi) -> None:
    await auth_api.deploy("echo")
    resp = await auth_api.client.post(
        "/v1/keys", headers=auth_api.admin(),
        json={"name": "app", "scopes": ["invoke"], "functions": ["echo"], "rate": 5, "burst": 5},
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    key, key_id = created["key"], created["id"]
    assert key.startswith(f"flk_{key_id}_")
    assert (created["scopes"], created["functions"], created["rate"]) == (["invoke"], ["echo"], 5)
    listing = (await auth_api.client.get("/v1/keys", headers=auth_api.admin())).json()["keys"]
    assert [k["id"] for k in listing] == [key_id]
    assert key not in json.dumps(listing)
    # The new key invokes but cannot administer keys.
    assert (await auth_api.client.post("/v1/functions/echo/invoke", headers=bearer(key))
            ).status_code == 200
    assert_problem(await auth_api.client.get("/v1/keys", headers=bearer(key)), 403, "forbidden")
    resp = await auth_api.client.post("/v1/keys", headers=auth_api.admin(),
                                      json={"scopes": ["root"]})
    assert_problem(resp, 422, "invalid-request")
    assert (await auth_api.client.delete(f"/v1/keys/{key_id}", headers=auth_api.admin())
            ).status_code == 204
    assert_problem(await auth_api.client.delete(f"/v1/keys/{key_id}", headers=auth_api.admin()),
                   404, "key-not-found")
    assert_problem(await auth_api.client.post("/v1/functions/echo/invoke", headers=bearer(key)),
                   401, "unauthorized")


async def test_rate_limit_is_per_key_and_shared_by_replicas(
    auth_api: AuthApi, aws_endpoint_url: str
) -> None:
    await auth_api.deploy("echo")
    slow = await new_key(auth_api, INVOKE, limit=Limit(rate=0.5, burst=3))
    other = await new_key(auth_api, INVOKE, limit=Limit(rate=0.5, burst=3))
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    replica, _ = auth_app(auth_api.redis, s3, auth_api.prefix, FakeTransport())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=replica),
                                 base_url="http://replica") as second:
        statuses = []
        for client in (auth_api.client, second, auth_api.client, second):
            resp = await client.post("/v1/functions/echo/invoke", headers=slow)
            statuses.append(resp.status_code)
        assert statuses == [200, 200, 200, 429]
        body = assert_problem(resp, 429, "rate-limited")
        assert "0.5 requests/s" in str(body["detail"])
        assert 1 <= int(resp.headers["retry-after"]) <= 2
    # Another key has its own bucket.
    assert (await auth_api.client.post("/v1/functions/echo/invoke", headers=other)
            ).status_code == 200


@pytest.mark.parametrize(("tokens", "elapsed_ms", "allowed", "left", "wait"), [
    (3.0, 0, True, 2.0, 0),
    (0.0, 0, False, 0.0, 500),       # rate 2/s: one token every 500 ms
    (0.0, 250, False, 0.5, 250),
    (0.0, 500, True, 0.0, 0),
    (2.0, 10_000, True, 3.0, 0),     # refill stops at burst (4), then one is taken
    (0.5, -100, False, 0.5, 250),    # a clock going backwards refills nothing
])
def test_token_bucket_arithmetic(
    tokens: float, elapsed_ms: float, allowed: bool, left: float, wait: int
) -> None:
    assert refill(tokens, elapsed_ms, Limit(rate=2, burst=4)) == (allowed, left, wait)


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_s(ms) for ms in (1, 999, 1000, 1001, 2500)] == [1, 1, 1, 2, 3]


def test_limit_rejects_nonsense() -> None:
    for rate, burst in ((0, 1), (-1, 1), (float("inf"), 1), (1, 0)):
        with pytest.raises(ValueError):
            Limit(rate, burst)


async def test_openapi_documents_the_bearer_scheme(auth_api: AuthApi) -> None:
    schema = (await auth_api.client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    invoke = schema["paths"]["/v1/functions/{name}/invoke"]["post"]
    # a key, or none at all (public functions)
    assert invoke["security"] == [{"HTTPBearer": []}, {}]
    assert {"401", "403", "429"} <= set(invoke["responses"])
    jobs = schema["paths"]["/v1/functions/{name}/jobs"]["post"]
    assert jobs["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_dispatcher_refuses_to_serve_without_keys_unless_insecure(
    auth_api: AuthApi,
) -> None:
    def dispatcher(auth: Authenticator | None) -> Dispatcher:
        return Dispatcher(app=None, redis=None, transport=None, recorder=None,  # type: ignore[arg-type]
                          http=None, sandbox=None, auth=auth)  # type: ignore[arg-type]

    keyless = Authenticator.on_redis(auth_api.redis, prefix=auth_api.prefix)
    with pytest.raises(SettingsError, match="--insecure"):
        await dispatcher(keyless).check_auth()
    await dispatcher(None).check_auth()  # --insecure: explicitly open
    await dispatcher(auth_api.auth).check_auth()  # a bootstrap admin key is enough
    await auth_api.auth.keys.create("first", [ADMIN])
    await dispatcher(keyless).check_auth()  # so is one stored key


def test_keys_command_creates_lists_and_revokes(
    redis_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--redis-url", redis_url, "--queue-prefix", unique]
    try:
        assert main(["keys", "create", "--scope", "invoke", "--function", "echo", "--rate", "5",
                     "--name", "ci", *common]) == 0
        out, err = capsys.readouterr()
        key = out.strip()
        assert key.startswith("flk_") and "Shown once" in err
        key_id = key.split("_")[1]
        assert main(["keys", "list", "--json", *common]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(k["id"], k["functions"], k["rate"]) for k in listed] == [(key_id, ["echo"], 5.0)]
        assert main(["keys", "create", "--scope", "invoke", "--function", "../x", *common]) == 2
        assert main(["keys", "revoke", key_id, *common]) == 0
        assert main(["keys", "revoke", key_id, *common]) == 1
        assert "no key" in capsys.readouterr().err
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{unique}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_client_commands_send_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from flotilla.commands.functions import client

    monkeypatch.setenv("FLOTILLA_API_KEY", "flk_abc")
    with client(argparse.Namespace(url="http://x")) as c:
        assert c.headers["authorization"] == "Bearer flk_abc"


@pytest.mark.parametrize("admin_key", ["", "dev-admin-key"])
async def test_dev_mode_says_whether_keys_are_required(
    admin_key: str, aws_endpoint_url: str, tmp_path: Path
) -> None:
    from flotilla.dev.stack import serve_dev
    from flotilla.settings import DispatcherSettings
    from tests.services import free_port

    listen = f"127.0.0.1:{free_port()}"
    lines: list[str] = []
    announced = asyncio.Event()

    def capture(line: str) -> None:
        lines.append(line)
        if "API keys" in line:
            announced.set()

    settings = DispatcherSettings(listen=listen, cache_dir=str(tmp_path), admin_key=admin_key,
                                  aws_endpoint_url=aws_endpoint_url)
    task = asyncio.create_task(serve_dev(settings, examples=None, print_fn=capture))
    try:
        await asyncio.wait_for(announced.wait(), 60)
        async with httpx.AsyncClient(base_url=f"http://{listen}") as client:
            for _ in range(100):  # uvicorn starts listening right after the announcement
                try:
                    resp = await client.get("/v1/functions")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if admin_key:
        assert any("API keys: ON" in line for line in lines)
        assert resp.status_code == 401
    else:
        assert any("API keys: OFF" in line for line in lines)
        assert resp.status_code == 200
