"""The chaos bench, bounded (`flotilla bench chaos` is the full run): a three-node cluster of
extra RabbitMQ nodes, a private Redis, two dispatchers and two workers; the node leading the
sync lane and the job lanes is killed, a follower stopped, Redis restarted, a dispatcher and
a worker killed, under load (calls, jobs, jobs retried after a failed first attempt and
delayed jobs, both through the delay chain). Fails on any lost job or wrong reply. The
machine's own broker and Redis are not touched.
"""

from __future__ import annotations

import json

import aio_pika
import pytest

from loadtest.chaos import FAULTS, Plan, run_chaos, verdict
from loadtest.cluster import ClusterError, package_bin
from tests import services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


async def test_faults_under_load_lose_nothing(amqp_url: str) -> None:
    try:
        package_bin()
    except ClusterError as exc:
        services.unavailable(str(exc))
    machine = await aio_pika.connect(amqp_url)  # open all along: the machine's broker stays up
    try:
        plan = Plan(steady_s=3.0, outage_s=3.0, min_jobs=150, min_sync=150, max_extra_s=30,
                    drain_s=60)
        result = await run_chaos(plan)
        assert not machine.is_closed
    finally:
        await machine.close()
    print(json.dumps(result, indent=1, sort_keys=True))
    assert verdict(result) == [], result
    assert result["accepted_jobs"] >= 150 and result["sync_calls"] >= 150
    # Retried jobs (a first attempt that fails) and delayed ones crossed the faults too: the
    # delay chain carries both, and none of them is lost (counted in lost_jobs above).
    assert result["accepted_by_kind"].get("retried", 0) > 0, result["accepted_by_kind"]
    assert result["accepted_by_kind"].get("delayed", 0) > 0, result["accepted_by_kind"]
    # The leader kill took the queues the load goes through, the sync lane first.
    assert "sync" in result["faults"]["leader-kill"], result["faults"]
    # Each fault happened, and the fleet served again after each.
    assert set(result["recovery_s"]) == set(FAULTS)
    assert all(seconds is not None for seconds in result["recovery_s"].values()), result
