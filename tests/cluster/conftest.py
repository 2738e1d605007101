"""Fixtures of the cluster tests: a unique topology per test (deleted afterwards)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest

from flotilla.topology import Topology
from tests.services import TEST_FUNCTIONS


@pytest.fixture
async def topology(amqp_url: str, unique: str) -> AsyncIterator[Topology]:
    """A topology under a unique prefix on the machine's broker; deleted after the test."""
    topo = Topology(unique, delivery_limit=2, max_length=1_000)
    yield topo
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await topo.delete(await connection.channel(), TEST_FUNCTIONS)
