"""Hostile and broken HTTP input against the real app served by uvicorn over TCP.

The dispatcher runs in a thread (its own event loop) with API keys on, real Redis, moto S3, a
scripted fake worker and the real sandbox compile step (so deploys of broken components meet
the real validation). Every answer must be a 4xx problem document with a clear message;
nothing may answer 500 or hang, and the server must keep serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
import redis.asyncio as aioredis
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from dispatcher.app import MAX_UPLOAD_BYTES, ApiOptions, create_app
from dispatcher.auth import Authenticator
from dispatcher.service import compile_step
from flotilla.artifacts import ArtifactStore, S3Backend
from flotilla.jobs import JobStore
from flotilla.registry import Deployer, Registry
from flotilla.secrets import Keyring, SecretStore, new_key
from tests.api.conftest import FakeTransport
from tests.guests.wat import WAT_DIR, assemble_core, build_wat_text
from tests.hardening.conftest import AUTH_ADMIN_KEY, bearer
from tests.services import free_port

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
ADMIN = bearer(AUTH_ADMIN_KEY)
ECHO_CORE = (WAT_DIR.parents[2] / "flotilla" / "sandbox" / "wat" / "echo.wat").read_text()
BODY_LIMIT = 1024


@dataclass
class Live:
    """A dispatcher served on 127.0.0.1:`port`."""

    url: str
    port: int
    registry_names: Any  # () -> list of deployed function names (runs on the server loop)


@pytest.fixture(scope="module")
def live(redis_url: str, aws_endpoint_url: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    prefix = f"hostile{free_port()}"
    port = free_port()
    sandbox, compile = compile_step(str(tmp_path_factory.mktemp("compile-cache")))
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        redis = aioredis.from_url(redis_url)
        registry = Registry(redis, prefix=prefix)
        app = create_app(
            registry=registry,
            deployer=Deployer(registry, ArtifactStore(S3Backend(s3, prefix), "k"),
                              compile=compile, engine_fingerprint=sandbox.engine_fingerprint),
            jobs=JobStore(redis, prefix=prefix, ttl_s=60),
            transport=FakeTransport(),
            options=ApiOptions(reply_margin_ms=500, job_ttl_s=60),
            auth=Authenticator.on_redis(redis, prefix=prefix, admin_key=AUTH_ADMIN_KEY),
            secrets=SecretStore(redis, Keyring.parse(new_key()), prefix=prefix),
        )
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        state.update(server=server, redis=redis, registry=registry)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        started.set()
        await serving
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30), "the dispatcher did not start"

    def names() -> list[str]:
        async def get() -> list[str]:
            return [s.name for s in await state["registry"].list_functions()]
        return asyncio.run_coroutine_threadsafe(get(), loop).result(10)

    url = f"http://127.0.0.1:{port}"
    resp = httpx.put(f"{url}/v1/functions/echo", headers=ADMIN, timeout=60,
                     files={"component": ("echo.wasm", build_wat_text(ECHO_CORE))},
                     data={"config": json.dumps({"max_body_bytes": BODY_LIMIT})})
    assert resp.status_code == 201, resp.text
    try:
        yield Live(url, port, names)
    finally:
        state["server"].should_exit = True
        thread.join(30)
        sandbox.close()


def assert_problem(resp: httpx.Response, status: int | range, pattern: str = "") -> str:
    """The problem's detail (or title), after checking status, media type and message."""
    ok = resp.status_code in status if isinstance(status, range) else resp.status_code == status
    assert ok, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    body = resp.json()
    text = str(body.get("detail") or body["title"])
    assert re.search(pattern, text, re.IGNORECASE), text
    return text


async def raw_exchange(port: int, head: bytes, body: bytes = b"", *, timeout: float = 10
                       ) -> tuple[int, bytes]:
    """Send bytes as they are (no client-side normalisation); the status and response bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = re.search(rb"(?i)content-length: *(\d+)", response_head)
        rest = b""
        if length:
            rest = await asyncio.wait_for(reader.readexactly(int(length.group(1))), timeout)
        return int(response_head.split(b" ", 2)[1]), response_head + rest
    finally:
        writer.close()


# -- schema-based fuzzing ---------------------------------------------------------------

def check_case(case: schemathesis.Case) -> None:
    if case.operation.path == "/v1/jobs/{job_id}":
        case.query = {**(case.query or {}), "wait": 0}  # long polls only cost time here
    resp = case.call(headers=ADMIN, timeout=30)
    assert resp.status_code < 500 or resp.status_code == 503, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        content_type = resp.headers.get("content-type") or [""]
        assert content_type[0].startswith(PROBLEM), resp.text
        assert json.loads(resp.text)["status"] == resp.status_code


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_fuzz_no_500s_and_every_error_is_a_problem(live: Live, mode: GenerationMode) -> None:
    # A bounded run per operation, valid (positive) and invalid (negative) requests alike.
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=8, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            check_case(case)

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (e.g. /healthz)


# -- bodies and content types -------------------------------------------------------------

async def test_oversized_declared_body_is_refused_before_it_is_sent(live: Live) -> None:
    for path, size in (("/v1/functions/echo/invoke", 10 * BODY_LIMIT),
                       ("/v1/functions/echo/jobs", 10 * BODY_LIMIT),
                       ("/v1/functions/echo", MAX_UPLOAD_BYTES + 1)):
        method = b"PUT" if path == "/v1/functions/echo" else b"POST"
        head = (method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + AUTH_ADMIN_KEY.encode() + b"\r\n"
                b"Content-Type: application/octet-stream\r\n"
                b"Content-Length: " + str(size).encode() + b"\r\n\r\n")
        # Only 100 bytes of the body are ever sent: the answer must not wait for the rest.
        status, data = await raw_exchange(live.port, head, b"x" * 100)
        assert status == 413, data[:300]
        assert b"application/problem+json" in data and b"limit" in data


async def test_oversized_streamed_body_is_cut_off(live: Live) -> None:
    async def chunks() -> Any:
        for _ in range(64):
            yield b"y" * 512

    async with httpx.AsyncClient(base_url=live.url, headers=ADMIN) as client:
        resp = await client.post("/v1/functions/echo/invoke", content=chunks())
        assert_problem(resp, 413, f"limit of {BODY_LIMIT} bytes")
        resp = await client.post("/v1/functions/echo/invoke", content=b"z" * BODY_LIMIT)
        assert resp.status_code == 200


async def test_wrong_content_types(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=ADMIN) as client:
        resp = await client.put("/v1/functions/echo", json={"component": "AGFzbQ=="})
        assert_problem(resp, 422, "multipart/form-data")
        resp = await client.put("/v1/functions/echo", content=b"--x\r\n\r\n",
                                headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert_problem(resp, 422, "multipart|component")
        resp = await client.post("/v1/keys", content=b"scopes=admin",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert_problem(resp, range(400, 423))
        resp = await client.post("/v1/keys", content=b"\xff\xfe{",
                                 headers={"Content-Type": "application/json"})
        assert_problem(resp, range(400, 423))
        # The invoke body is opaque: any content type reaches the function.
        resp = await client.post("/v1/functions/echo/invoke", content=b"\x00\xff",
                                 headers={"Content-Type": b"image/x-nonsense; charset=\xff"})
        assert resp.status_code == 200


async def test_deeply_nested_config_json(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=ADMIN) as client:
        for config in ("[" * 100_000 + "]" * 100_000, '{"env":' * 50_000 + "1" + "}" * 50_000,
                       json.dumps({"env": {"A": {"b": {"c": [[[[]]]]}}}})):
            resp = await client.put("/v1/functions/nested", data={"config": config},
                                    files={"component": ("f.wasm", b"\0asm")})
            assert_problem(resp, 422, "config|env")
    assert "nested" not in live.registry_names()


# -- headers ---------------------------------------------------------------------------------

async def test_invalid_utf8_in_headers(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        resp = await client.post("/v1/functions/echo/invoke",
                                 headers={"Authorization": b"Bearer \xff\xfe\xc3("})
        assert_problem(resp, 401, "invalid or revoked")
        resp = await client.post("/v1/functions/echo/invoke",
                                 headers={**ADMIN, "x-bin": b"\xff\xfe\xc3(\x80"}, content=b"ok")
        assert resp.status_code == 200
        assert resp.headers["x-echo-x-bin"].encode("latin-1") == b"\xff\xfe\xc3(\x80"


async def test_many_headers(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        many = [(f"x-h{i}", "v") for i in range(150)]
        resp = await client.post("/v1/functions/echo/invoke", headers=[*ADMIN.items(), *many])
        assert resp.status_code == 200
        assert resp.headers["x-echo-x-h149"] == "v"
        resp = await client.post("/v1/functions/echo/invoke",
                                 headers=[*ADMIN.items(), ("x-big", "v" * 70_000)])
        assert_problem(resp, 431, "64 ?KiB|65536 bytes")
    # Far past what any caller needs (about 1 MB of headers): refused with a problem, before
    # authentication, and the server goes on serving.
    head = b"POST /v1/functions/echo/invoke HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"x-h%d: %s\r\n" % (i, b"v" * 20) for i in range(40_000)
    ) + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    status, data = await raw_exchange(live.port, head)
    assert status == 431, data[:300]
    assert b"application/problem+json" in data and b"at most 200 request headers" in data
    async with httpx.AsyncClient(base_url=live.url, headers=ADMIN) as client:
        assert (await client.get("/v1/functions")).status_code == 200


# -- names -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/v1/functions/../keys",
    "/v1/functions/..%2fkeys",
    "/v1/functions/%2e%2e",
    "/v1/functions/%2e%2e%2fkeys/invoke",
    "/v1/functions/echo%00/invoke",
    "/v1/functions/%D0%B5cho/invoke",  # Cyrillic "е": looks like echo, is not
    "/v1/functions/%EF%BD%85cho/invoke",  # fullwidth "ｅ"
    "/v1/functions/ECHO/invoke",
    "/v1/functions/" + "a" * 64 + "/invoke",
    "/v1/functions/" + "a" * 10_000 + "/invoke",
    "/v1/functions/echo/../../keys",
])
async def test_function_names_with_path_tricks(live: Live, path: str) -> None:
    head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + AUTH_ADMIN_KEY.encode() + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    status, data = await raw_exchange(live.port, head)
    assert status in (404, 405, 422), data[:400]
    assert b"application/problem+json" in data
    if status == 422:
        assert b"String should match pattern" in data
    async with httpx.AsyncClient(base_url=live.url, headers=ADMIN) as client:
        resp = await client.put(path, files={"component": ("f.wasm", build_wat_text(ECHO_CORE))})
        assert resp.status_code in (404, 405, 422), resp.text
    assert live.registry_names() == ["echo"]


# -- components ---------------------------------------------------------------------------

def bad_components() -> dict[str, bytes]:
    good = build_wat_text(ECHO_CORE)
    bad_wit = WAT_DIR / "bad"
    return {
        "truncated": good[: len(good) // 2],
        "core module": assemble_core('(module (func (export "handle")))'),
        "another world": build_wat_text(
            '(module (func (export "run") (result i32) (i32.const 1)))',
            world="other", wit_dir=bad_wit),
        "unknown import": build_wat_text(
            ECHO_CORE.replace("(module", '(module (import "acme:bad/thing@0.1.0" "poke" '
                              '(func (result i32)))', 1),
            world="extra-import", wit_dir=bad_wit),
        "random bytes": b"\0asm\x0d\0\x01\0" + bytes(range(256)) * 4,
        "empty": b"",
    }


EXPECTED = {
    "truncated": "does not compile",
    "core module": "core WebAssembly module, not a component",
    "another world": "does not export `handle`",
    "unknown import": "which Flotilla does not provide",
    "random bytes": "compile|not a",
    "empty": "not a WebAssembly binary|component",
}


def test_broken_components_are_refused_at_deploy(live: Live) -> None:
    for label, wasm in bad_components().items():
        resp = httpx.put(f"{live.url}/v1/functions/broken", headers=ADMIN, timeout=60,
                         files={"component": ("f.wasm", wasm)})
        detail = assert_problem(resp, 422, EXPECTED[label])
        assert resp.json()["type"] == "urn:flotilla:problem:invalid-component", (label, detail)
    assert "broken" not in live.registry_names()


def test_server_still_serves(live: Live) -> None:
    # Runs last in this module: everything above left the server healthy.
    with socket.create_connection(("127.0.0.1", live.port), timeout=5):
        pass
    resp = httpx.post(f"{live.url}/v1/functions/echo/invoke", headers=ADMIN, content=b"alive")
    assert resp.status_code == 200 and resp.content == b"alive"
