"""Fixtures of the operations tests: one real fleet (dispatcher + worker processes) per session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from loadtest.fleet import Fleet
from tests.guests.build import echo_wasm, probe_wasm  # noqa: F401 - fixtures


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fleet(
    amqp_url: str, redis_url: str, aws_endpoint_url: str, probe_wasm: Path,  # noqa: F811
    echo_wasm: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Fleet]:
    """`flotilla dispatcher` and one `flotilla worker` of two processes (DEBUG JSON logs to
    files), shared by the tests/ops modules, with the probe and echo guests deployed; queues
    deleted afterwards."""
    fleet = Fleet(
        workers=1, processes=2, concurrency=2, amqp_url=amqp_url, redis_url=redis_url,
        aws_endpoint_url=aws_endpoint_url, log_dir=tmp_path_factory.mktemp("fleet-logs"),
        log_level="DEBUG",
    )
    await fleet.start()
    try:
        await fleet.deploy({"probe": probe_wasm.read_bytes(), "echo": echo_wasm.read_bytes()})
        yield fleet
    finally:
        await fleet.stop()
