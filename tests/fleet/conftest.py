"""Fixtures of the messaging tests: a unique topology per test, deleted afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest

from flotilla.topology import Topology
from tests.services import lane_functions


@pytest.fixture
async def topology(amqp_url: str, redis_url: str, unique: str) -> AsyncIterator[Topology]:
    """A topology under a unique prefix; its queues (job lanes included) and exchange are
    deleted after the test."""
    topo = Topology(unique, delivery_limit=2, max_length=1_000)
    yield topo
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": f"cleanup-{unique}"})
    async with connection:
        channel = await connection.channel()
        await topo.delete(channel, await lane_functions(redis_url, unique))
