"""Fixtures of the job-flow tests: a unique topology per test, deleted afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from flotilla.topology import Topology
from tests.guests.build import probe_wasm, python_guest  # noqa: F401 - fixtures
from tests.services import lane_functions


@pytest.fixture
async def topology(amqp_url: str, redis_url: str, unique: str) -> AsyncIterator[Topology]:
    """A topology under a unique prefix; its queues (job lanes included) and exchanges are
    deleted afterwards."""
    topo = Topology(unique, max_length=1_000)
    yield topo
    connection = await aio_pika.connect(
        amqp_url, client_properties={"connection_name": f"cleanup-{unique}"}
    )
    async with connection:
        await topo.delete(await connection.channel(), await lane_functions(redis_url, unique))


@pytest.fixture(scope="session")
def flaky_wasm() -> Path:
    """tests/guests/python/flaky: fails until a cache counter reaches a number."""
    return python_guest("flaky")
