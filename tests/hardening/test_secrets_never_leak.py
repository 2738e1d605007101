"""Secrets end to end on real processes: a guest reads its own, nobody else's, and no value
ever shows up in a response, a header, a log line, a metric, a job record or a CLI output.

`flotilla dispatcher` and `flotilla worker` run as processes (API keys on, DEBUG JSON logs to
files) on the real RabbitMQ, Redis and a moto server. The scenario sets secrets (one before
its function is deployed), runs the secret-digest guest (it answers only a value's SHA-256)
synchronously and as a job, exercises every secrets route and error and the CLI, then rotates
the key the way docs/security.md says: restart with `new,old`, `flotilla secrets rotate`,
restart with `new` alone. Finally every recorded response and output and every line of every
process's log is searched for every value (and its base64) and for the keys: zero hits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis.asyncio as aioredis

from flotilla.secrets import Keyring, SecretStore, new_key
from loadtest.fleet import ROOT, delete_queues, free_port, wait_ready
from tests.guests.build import python_guest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = f"leak-test-admin-{uuid.uuid4().hex}"
OLD_KEY, NEW_KEY = new_key("old"), new_key("new")


def secret(label: str) -> str:
    """A distinctive value nothing else could contain."""
    return f"{label}-{uuid.uuid4().hex}-value"


@dataclass
class Processes:
    """A dispatcher and a worker process of one prefix, restartable with other keys."""

    amqp_url: str
    redis_url: str
    aws_endpoint_url: str
    log_dir: Path
    prefix: str = field(default_factory=lambda: f"leak{uuid.uuid4().hex[:8]}")
    base_url: str = ""
    worker_port: int = 0
    generation: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, keys: str) -> dict[str, str]:
        """The processes' environment (and the CLI's)."""
        return {
            **os.environ, "FLOTILLA_AMQP_URL": self.amqp_url, "FLOTILLA_REDIS_URL": self.redis_url,
            "FLOTILLA_AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "FLOTILLA_ARTIFACT_BUCKET": self.prefix, "FLOTILLA_ARTIFACT_KEY": f"a-{self.prefix}",
            "FLOTILLA_QUEUE_PREFIX": self.prefix, "FLOTILLA_LOG_LEVEL": "DEBUG",
            "FLOTILLA_LOG_FORMAT": "json", "FLOTILLA_ADMIN_KEY": ADMIN,
            "FLOTILLA_SECRETS_KEY": keys, "FLOTILLA_URL": self.base_url,
            "FLOTILLA_API_KEY": ADMIN,
        }

    async def start(self, keys: str) -> None:
        """Start both processes with FLOTILLA_SECRETS_KEY=`keys`; wait until both are ready."""
        self.generation += 1
        api_port, self.worker_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{api_port}"
        dispatcher = self._spawn("dispatcher", keys, ["--listen", f"127.0.0.1:{api_port}"])
        worker = self._spawn("worker", keys, ["--metrics-port", str(self.worker_port),
                                              "--concurrency", "2", "--drain-timeout-s", "5"])
        await asyncio.gather(wait_ready(f"{self.base_url}/readyz", dispatcher, 60),
                             wait_ready(f"http://127.0.0.1:{self.worker_port}/readyz", worker, 60))

    def _spawn(self, role: str, keys: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{role}-{self.generation}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "flotilla", role, *args], cwd=ROOT,
                                env=self.env(keys), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    async def stop(self) -> None:
        """SIGTERM both processes and wait for them (queues, Redis and S3 stay)."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def cli(self, keys: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        """Run `flotilla <args>` against these processes."""
        return subprocess.run([sys.executable, "-m", "flotilla", *args], input=stdin.decode(),
                              env=self.env(keys), capture_output=True, text=True, timeout=60,
                              cwd=ROOT, check=False)


@dataclass
class Seen:
    """Everything a caller, an operator or a log reader of the run could see."""

    texts: list[str] = field(default_factory=list)

    async def response(self, response: httpx.Response) -> None:
        """httpx response hook: keep the status line, headers and body."""
        await response.aread()
        headers = "".join(f"{k}: {v}\n" for k, v in response.headers.items())
        self.texts.append(f"{response.status_code}\n{headers}\n{response.text}")

    def output(self, done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        """Keep a CLI run's stdout and stderr."""
        self.texts.append(done.stdout + done.stderr)
        return done


@pytest.fixture
async def fleet(amqp_url: str, redis_url: str, aws_endpoint_url: str,
                tmp_path: Path) -> AsyncIterator[Processes]:
    processes = Processes(amqp_url, redis_url, aws_endpoint_url, tmp_path)
    boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1"
                 ).create_bucket(Bucket=processes.prefix)
    await processes.start(OLD_KEY)
    try:
        yield processes
    finally:
        await processes.stop()
        await delete_queues(amqp_url, processes.prefix, redis_url)
        redis = aioredis.from_url(redis_url)
        keys = [k async for k in redis.scan_iter(f"{processes.prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def digest(value: str) -> str:
    """What the guest answers for a value."""
    return hashlib.sha256(value.encode()).hexdigest()


async def read(client: httpx.AsyncClient, function: str, name: str) -> dict[str, Any]:
    """Invoke the secret-digest guest deployed as `function` for secret `name`."""
    resp = await client.post(f"/v1/functions/{function}/invoke", content=name)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def deploy(client: httpx.AsyncClient, wasm: bytes, *names: str) -> None:
    """Deploy the secret-digest guest under each name."""
    for name in names:
        resp = await client.put(f"/v1/functions/{name}", files={"component": ("f.wasm", wasm)},
                                data={"config": json.dumps({"timeout_ms": 20_000})}, timeout=120)
        assert resp.status_code in (200, 201), resp.text


async def guests_read_their_own(client: httpx.AsyncClient, values: dict[str, str],
                                wasm: bytes) -> None:
    """Set before deploy; each function reads its own value, never the other's."""
    put = client.put
    resp = await put("/v1/functions/owner/secrets/API_TOKEN", content=values["owner"])
    assert resp.status_code == 201, resp.text  # before `owner` exists: allowed
    await deploy(client, wasm, "owner", "stranger")
    assert (await put("/v1/functions/stranger/secrets/API_TOKEN",
                      content=values["stranger"])).status_code == 201
    assert (await put("/v1/functions/owner/secrets/OWNER_ONLY",
                      content=values["owner_only"])).status_code == 201
    mine = await read(client, "owner", "API_TOKEN")
    assert mine == {"function": "owner", "secret": "API_TOKEN", "found": True,
                    "sha256": digest(values["owner"]), "length": len(values["owner"])}
    theirs = await read(client, "stranger", "API_TOKEN")
    assert theirs["sha256"] == digest(values["stranger"])
    assert (await read(client, "stranger", "OWNER_ONLY"))["found"] is False
    assert (await read(client, "stranger", "../owner/OWNER_ONLY"))["found"] is False
    resp = await put("/v1/functions/owner/secrets/API_TOKEN", content=values["replaced"])
    assert resp.status_code == 200  # replaced: the next call sees the new value
    assert (await read(client, "owner", "API_TOKEN"))["sha256"] == digest(values["replaced"])


async def jobs_see_only_the_digest(client: httpx.AsyncClient, values: dict[str, str]) -> None:
    """A job's record holds the guest's answer, which holds no value."""
    resp = await client.post("/v1/functions/owner/jobs", content="OWNER_ONLY")
    assert resp.status_code == 202, resp.text
    resp = await client.get(f"/v1/jobs/{resp.json()['job_id']}", params={"wait": 20})
    job = resp.json()
    assert job["status"] == "succeeded", job
    body = json.loads(base64.b64decode(job["response"]["body"]))
    assert body["sha256"] == digest(values["owner_only"])


async def every_route_and_error(client: httpx.AsyncClient, base_url: str) -> None:
    """List, delete, the 4xx answers, and the scope checks (with a fresh invoke-only key)."""
    resp = await client.get("/v1/functions/owner/secrets")
    assert [s["name"] for s in resp.json()["secrets"]] == ["API_TOKEN", "OWNER_ONLY"]
    url = "/v1/functions/owner/secrets"
    for path, content, status in ((f"{url}/9bad", "x", 422), (f"{url}/EMPTY", "", 422),
                                  (f"{url}/BIG", "x" * (64 * 1024 + 1), 413),
                                  (f"{url}/LATIN", b"\xe9t\xe9", 422)):
        assert (await client.put(path, content=content)).status_code == status, path
    assert (await client.delete(f"{url}/NOPE")).status_code == 404
    resp = await client.post("/v1/keys", json={"name": "caller", "scopes": ["invoke"]})
    invoke_key = resp.json()["key"]
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 event_hooks=client.event_hooks) as other:
        assert (await other.get(url)).status_code == 401
        headers = {"Authorization": f"Bearer {invoke_key}"}
        assert (await other.get(url, headers=headers)).status_code == 403
        assert (await other.put(f"{url}/API_TOKEN", content="hijack",
                                headers=headers)).status_code == 403


def cli_round_trip(fleet: Processes, seen: Seen, value: str) -> None:
    """`flotilla secrets set` (stdin and --value), `list`, `delete`."""
    done = seen.output(fleet.cli(OLD_KEY, "secrets", "set", "owner", "CLI_TOKEN",
                                 stdin=value.encode()))
    assert done.returncode == 0 and "created secret CLI_TOKEN of owner" in done.stdout, done
    done = seen.output(fleet.cli(OLD_KEY, "secrets", "set", "owner", "CLI_TOKEN",
                                 "--value", value))
    assert done.returncode == 0 and "replaced" in done.stdout and "warning" in done.stderr
    done = seen.output(fleet.cli(OLD_KEY, "secrets", "list", "owner"))
    assert done.returncode == 0 and "CLI_TOKEN" in done.stdout, done
    done = seen.output(fleet.cli(OLD_KEY, "secrets", "delete", "owner", "CLI_TOKEN"))
    assert done.returncode == 0, done
    done = seen.output(fleet.cli(OLD_KEY, "secrets", "delete", "owner", "CLI_TOKEN"))
    assert done.returncode == 1 and "Secret not found (404)" in done.stderr


async def rotate(fleet: Processes, seen: Seen, values: dict[str, str], redis_url: str) -> None:
    """The documented rotation: restart with new,old; rotate; restart with new alone."""
    both = f"{NEW_KEY},{OLD_KEY}"
    await fleet.stop()
    await fleet.start(both)
    async with client_for(fleet, seen) as client:
        # Old values still open; a new one is sealed under the new key at once.
        assert (await read(client, "owner", "API_TOKEN"))["sha256"] == digest(values["replaced"])
        await client.put("/v1/functions/stranger/secrets/LATER", content=values["later"])
    done = seen.output(fleet.cli(both, "secrets", "rotate"))
    assert done.returncode == 0, done
    assert "resealed 3 secret(s) under key 'new'; 1 already were" in done.stdout
    redis = aioredis.from_url(redis_url)
    try:
        new_only = SecretStore(redis, Keyring.parse(NEW_KEY), prefix=fleet.prefix)
        for function, name, key in (("owner", "API_TOKEN", "replaced"),
                                    ("owner", "OWNER_ONLY", "owner_only"),
                                    ("stranger", "API_TOKEN", "stranger"),
                                    ("stranger", "LATER", "later")):
            assert await new_only.get(function, name) == values[key]
        raw = [v for k in [k async for k in redis.scan_iter(f"{fleet.prefix}:secrets:*")]
               for v in (await redis.hgetall(k)).values()]
        assert len(raw) == 4 and all(b'"kid":"new"' in r for r in raw)
        assert not any(v.encode() in r for v in values.values() for r in raw)  # sealed at rest
    finally:
        await redis.aclose()
    await fleet.stop()
    await fleet.start(NEW_KEY)
    async with client_for(fleet, seen) as client:
        assert (await read(client, "stranger", "LATER"))["sha256"] == digest(values["later"])
        assert (await read(client, "owner", "OWNER_ONLY"))["sha256"] == digest(
            values["owner_only"])


def client_for(fleet: Processes, seen: Seen) -> httpx.AsyncClient:
    """An admin client of the current processes whose responses `seen` keeps."""
    return httpx.AsyncClient(base_url=fleet.base_url, timeout=60,
                             headers={"Authorization": f"Bearer {ADMIN}"},
                             event_hooks={"response": [seen.response]})


async def test_secret_values_never_leave_the_store(fleet: Processes, redis_url: str) -> None:
    wasm = python_guest("secret-digest").read_bytes()
    values = {label: secret(label) for label in
              ("owner", "stranger", "owner_only", "replaced", "cli", "later")}
    seen = Seen()
    async with client_for(fleet, seen) as client:
        await guests_read_their_own(client, values, wasm)
        await jobs_see_only_the_digest(client, values)
        await every_route_and_error(client, fleet.base_url)
        async with httpx.AsyncClient(event_hooks=client.event_hooks) as plain:
            await plain.get(f"{fleet.base_url}/metrics")
            await plain.get(f"http://127.0.0.1:{fleet.worker_port}/metrics")
    cli_round_trip(fleet, seen, values["cli"])
    await rotate(fleet, seen, values, redis_url)
    await fleet.stop()  # flush and close every log

    logs = {path.name: path.read_text(errors="replace") for path in fleet.log_dir.glob("*.log")}
    assert len(logs) == 6 and all(logs.values())
    assert any("secrets" in text for text in logs.values())  # the routes were logged
    needles = {**values, **{f"{k} (base64)": base64.b64encode(v.encode()).decode()
                            for k, v in values.items()}}
    for key in (OLD_KEY, NEW_KEY):
        needles[f"key {key.split(':')[0]}"] = key.split(":", 1)[1]
    hits = [(needle, where) for needle, text in needles.items()
            for where, haystack in [*logs.items(), *enumerate(seen.texts)]
            if text in haystack]
    assert hits == []
    assert len(seen.texts) >= 30
