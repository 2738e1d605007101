"""A few seconds of `flotilla bench soak` in the suite: the fleet starts, every kind of call
behaves as expected, no job is lost (the 10-minute run is a command: docs/reliability.md)."""

from __future__ import annotations

import pytest

from loadtest.soak import KINDS, Plan, run_soak

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_short_soak_has_no_unexpected_errors_and_loses_no_job(
    amqp_url: str, redis_url: str, aws_endpoint_url: str
) -> None:
    # RSS growth is not judged here: a few seconds are all warm-up.
    plan = Plan(
        4,
        concurrency=6,
        max_growth=float("inf"),
        amqp_url=amqp_url,
        redis_url=redis_url,
        aws_endpoint_url=aws_endpoint_url,
    )
    report = run_soak(plan)
    print(report.format())
    assert not report.unexpected, report.format()
    assert report.jobs_lost == 0 and report.jobs_done == report.jobs_accepted
    assert sum(report.calls.values()) > 30
    assert report.expected["sync"] > 0 and report.expected["job"] > 0
    assert set(report.rss_kib) >= {"dispatcher", "worker-0", "worker-1"}
    assert all(len(v) == 3 and v[2] > 0 for v in report.rss_kib.values())
    assert {k.name for k in KINDS} >= set(report.calls)
