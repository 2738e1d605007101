"""What a load run calls: the HTTP API (real dispatcher or dev app) or the Python client.

A target turns a scenario into one async `call()` that raises on anything but success, so
the runners count errors by type (`http_503`, `job_failed`, `Unavailable`, ...).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx

from loadtest.runner import Call
from loadtest.scenarios import Scenario

JOB_WAIT_S = 30


class CallFailed(Exception):
    """A call that returned, but not a success; `problem_type` names it for the error table."""

    def __init__(self, problem_type: str, detail: str = "") -> None:
        super().__init__(f"{problem_type}: {detail}" if detail else problem_type)
        self.problem_type = problem_type


def _every(share: float) -> itertools.cycle[bool]:
    """A deterministic pattern with `share` of True (to the nearest tenth)."""
    n = round(share * 10)
    return itertools.cycle([True] * n + [False] * (10 - n))


class RawPoster:
    """Keep-alive HTTP/1.1 POSTs of one body to one path, a connection per concurrent caller.

    httpx costs milliseconds of the load generator's CPU per request at concurrency 64 (its
    pool dominated the figures, as loadtest/e2e.py found too); this measures the dispatcher.
    """

    def __init__(self, base_url: str, path: str, body: bytes) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 80
        self.request = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/octet-stream\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def post(self) -> tuple[int, bytes]:
        """(status, body) of one POST."""
        if self._idle:
            reader, writer = self._idle.pop()
            writer.write(self.request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()  # the server closed an idle connection: open another
                reader, writer = await self._connect()
                head = await reader.readuntil(b"\r\n\r\n")
        else:
            reader, writer = await self._connect()
            head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await reader.readexactly(length) if length else b""
        self._idle.append((reader, writer))
        return int(head[9:12]), body

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        self._all.append(writer)
        writer.write(self.request)
        return reader, writer

    def close(self) -> None:
        """Close every connection."""
        for writer in self._all:
            writer.close()


class HttpTarget:
    """POST /v1/functions/{f}/invoke, or /jobs then GET /v1/jobs/{id}?wait=...

    Over TCP, sync invokes go through `RawPoster`; jobs (and the in-process dev app, through
    an ASGI transport) use httpx.
    """

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 connections: int = 100) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=base_url, transport=transport, limits=limits,
                                        timeout=JOB_WAIT_S + 10)
        self.base_url = base_url
        self.raw = transport is None
        self._posters: list[RawPoster] = []

    def call(self, scenario: Scenario) -> Call:
        """The scenario's call over HTTP."""
        client = self.client
        jobs = _every(scenario.async_share)
        invoke_url = f"/v1/functions/{scenario.function}/invoke"
        jobs_url = f"/v1/functions/{scenario.function}/jobs"
        body = scenario.body
        poster = RawPoster(self.base_url, invoke_url, body) if self.raw else None
        if poster is not None:
            self._posters.append(poster)

        async def call() -> Any:
            if next(jobs):
                resp = await client.post(jobs_url, content=body)
                if resp.status_code != 202:
                    raise CallFailed(f"http_{resp.status_code}")
                job = await client.get(resp.headers["location"], params={"wait": JOB_WAIT_S})
                if job.status_code != 200 or job.json()["status"] != "succeeded":
                    raise CallFailed("job_failed", job.text[:200])
                return job
            if poster is not None:
                status, _ = await poster.post()
                if status != 200:
                    raise CallFailed(f"http_{status}")
                return status
            resp = await client.post(invoke_url, content=body)
            if resp.status_code != 200:
                raise CallFailed(f"http_{resp.status_code}")
            return resp

        return call

    async def close(self) -> None:
        """Close the HTTP clients."""
        for poster in self._posters:
            poster.close()
        await self.client.aclose()


class ClientTarget:
    """The Python client (`flotilla.client.Client`) straight to RabbitMQ."""

    def __init__(self, amqp_url: str, redis_url: str, prefix: str) -> None:
        from flotilla.client import Client

        self.client = Client(amqp_url, queue_prefix=prefix, redis_url=redis_url)

    async def start(self) -> None:
        """Connect."""
        await self.client.start()

    def call(self, scenario: Scenario) -> Call:
        """The scenario's call through the client."""
        client = self.client
        jobs = _every(scenario.async_share)

        async def call() -> Any:
            if next(jobs):
                job_id = await client.submit(scenario.function, scenario.body)
                status = await client.result(job_id, wait=JOB_WAIT_S)
                if status.status != "succeeded":
                    raise CallFailed("job_failed", status.status)
                return status
            return await client.invoke(scenario.function, scenario.body)

        return call

    async def close(self) -> None:
        """Close the client."""
        await self.client.close()
