"""What a load run calls: the HTTP API (real dispatcher or dev app) or the Python client.

A target turns a scenario into one async `call()` that raises on anything but success, so
the runners count errors by type (`http_503`, `job_failed`, `Unavailable`, ...).
"""

from __future__ import annotations

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


class HttpTarget:
    """POST /v1/functions/{f}/invoke, or /jobs then GET /v1/jobs/{id}?wait=..."""

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 connections: int = 100) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=base_url, transport=transport, limits=limits,
                                        timeout=JOB_WAIT_S + 10)

    def call(self, scenario: Scenario) -> Call:
        """The scenario's call over HTTP."""
        client = self.client
        jobs = _every(scenario.async_share)
        invoke_url = f"/v1/functions/{scenario.function}/invoke"
        jobs_url = f"/v1/functions/{scenario.function}/jobs"
        body = scenario.body

        async def call() -> Any:
            if next(jobs):
                resp = await client.post(jobs_url, content=body)
                if resp.status_code != 202:
                    raise CallFailed(f"http_{resp.status_code}")
                job = await client.get(resp.headers["location"], params={"wait": JOB_WAIT_S})
                if job.status_code != 200 or job.json()["status"] != "succeeded":
                    raise CallFailed("job_failed", job.text[:200])
                return job
            resp = await client.post(invoke_url, content=body)
            if resp.status_code != 200:
                raise CallFailed(f"http_{resp.status_code}")
            return resp

        return call

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


class ClientTarget:
    """The Python client (`dispatcher.client.Client`) straight to RabbitMQ."""

    def __init__(self, amqp_url: str, redis_url: str, prefix: str) -> None:
        from dispatcher.client import Client

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
