"""Deferred teardown (`teardowns_after`): inside the block an invocation returns with its store
still alive, and the stores go when the block tears down, on both call paths. A pool of 3
instance slots makes it visible: the fourth invocation of a block finds no free slot until
the first three stores are deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flotilla.sandbox import Outcome, Sandbox
from flotilla.sandbox.engine import EngineSettings
from flotilla.sandbox.sandbox import teardowns_after
from tests.guests.wat import build_wat
from tests.sandbox.conftest import FakeHosts, config, persistent_cache_dir, req

SLOTS = 3


@pytest.fixture(scope="module", params=["c-extension", "ctypes"])
def small(request: pytest.FixtureRequest, fake_hosts: FakeHosts) -> Iterator[Sandbox]:
    """A sandbox whose pooling allocator has room for 3 component instances."""
    settings = EngineSettings(total_component_instances=SLOTS)
    sb = Sandbox(fake_hosts, cache_dir=persistent_cache_dir(), engine_settings=settings,
                 accelerate=request.param == "c-extension")
    if sb.call_path != request.param:
        sb.close()
        pytest.skip(f"{request.param} path not available here")
    yield sb
    sb.close()


def test_stores_live_until_the_block_tears_down(small: Sandbox) -> None:
    echo = small.load(build_wat("echo"))
    with teardowns_after() as tear_down:
        answers = [small.invoke(echo, config(), req(f"r{i}".encode())) for i in range(SLOTS)]
        assert [a.response.body for a in answers if a.response] == [b"r0", b"r1", b"r2"]
        full = small.invoke(echo, config(), req(b"r3"))
        # Every slot still holds a store.
        assert "concurrent limit of 3 for component instances" in full.error
        tear_down()
        again = small.invoke(echo, config(), req(b"r4"))
        assert (again.outcome, again.response.body if again.response else None) == (
            Outcome.OK, b"r4")
    # Leaving the block deleted the last one; outside it each store goes at once.
    after = [small.invoke(echo, config(), req(b"x")).outcome for _ in range(SLOTS + 2)]
    assert after == [Outcome.OK] * (SLOTS + 2)


def test_outside_a_block_nothing_waits(small: Sandbox) -> None:
    echo = small.load(build_wat("echo"))
    assert all(small.invoke(echo, config(), req(b"y")).outcome is Outcome.OK
               for _ in range(2 * SLOTS))
