"""Issue 12 §5 on a real fleet (RabbitMQ, Redis, a dispatcher and two worker processes, the
probe guest): with 2,000 jobs of one function queued, another function's synchronous calls
and its job all finish while most of that backlog is still queued.

Order, not timings: read from the broker (the backlog's job lane depth) and the workers'
own count. With one FIFO queue for every function (what Flotilla had before its lanes),
the other function's job would start only after every queued job ahead of it, and each
sync call after whatever was queued when it was made: the lane would be empty, or nearly,
when they finished. The timings of the same run are printed for the record;
`python -m loadtest fairness` prints them as its result (docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import fairness
from loadtest.fleet import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


async def test_a_backlog_of_one_function_delays_no_other_function(
    amqp_url: str, redis_url: str, aws_endpoint_url: str, probe_wasm: Path,
    tmp_path: Path,
) -> None:
    plan = fairness.FairnessPlan(backlog=2_000, job_ms=20, calls=50)
    async with Fleet(workers=1, processes=2, concurrency=2, amqp_url=amqp_url,
                     redis_url=redis_url, aws_endpoint_url=aws_endpoint_url,
                     log_dir=tmp_path) as fleet:
        result = await fairness.measure(fleet, probe_wasm.read_bytes(), plan)
    print(json.dumps(result.to_dict()))
    # The backlog was queued when the other function's work began ...
    assert result.backlog_queued_before > plan.backlog // 2
    # ... and most of it still was once its 50 sync calls and its job had all finished
    # (measure() returns only then): they did not wait for the backlog ahead of them.
    assert result.backlog_queued_after > result.backlog_queued_before // 2
    assert result.backlog_finished_after < plan.backlog // 2
    # A function deployed while the workers ran had its job lane consumed without a restart
    # (measure() raises when its first job does not finish within a minute).
    assert result.fresh_job_start_ms > 0
