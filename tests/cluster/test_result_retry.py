"""A job result the broker refuses (nack, e.g. during a quorum queue's leader election) is
published again instead of the delivery being requeued and the job run again (unit tests)."""

from __future__ import annotations

from typing import Any

import aiormq
import pytest
from pamqp import commands as spec

from worker.consumer import publish_result

PROPS = spec.Basic.Properties(message_id="job-1", delivery_mode=2)


class NackingChannel:
    """Refuses the first `refusals` publishes with a nack, then confirms."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.published: list[tuple[bytes, str, bool]] = []

    async def basic_publish(self, body: bytes, *, routing_key: str, properties: Any,
                            wait: bool) -> None:
        self.published.append((body, routing_key, wait))
        if len(self.published) <= self.refusals:
            raise aiormq.exceptions.DeliveryError(None, spec.Basic.Nack(delivery_tag=1))


async def test_a_refused_result_is_published_again_until_confirmed() -> None:
    channel = NackingChannel(refusals=2)
    await publish_result(channel, b"result", "p.job-results", PROPS,  # type: ignore[arg-type]
                         delays=(0, 0, 0))
    assert channel.published == [(b"result", "p.job-results", True)] * 3


async def test_a_result_refused_every_time_fails_after_the_last_delay() -> None:
    channel = NackingChannel(refusals=10)
    with pytest.raises(aiormq.exceptions.DeliveryError):
        await publish_result(channel, b"r", "q", PROPS, delays=(0, 0))  # type: ignore[arg-type]
    assert len(channel.published) == 3  # the first try and one per delay
