"""Figures of the job flow on this machine's RabbitMQ and Redis, each beside its baseline
measured in the same run: `PYTHONPATH=. .venv/bin/python tests/jobs/bench_flow.py`.

- `delay`: how late delayed publishes (random delays of 0.1-3 s through
  `AmqpTransport.submit(delay_ms=...)`) reach the queue, against how long an undelayed
  publish takes to reach it (the baseline: what any hop costs now).
- `max_concurrency`: the makespan of 20 jobs of 200 ms (the probe guest's busy sleep) on
  two worker processes of 4 threads, limited to 2 at once, against the ideal 20 x 0.2 / 2
  = 2.0 s and against the same jobs without a limit (the baseline). Jobs over the limit
  are deferred into the delay chain for 250-750 ms, so a freed slot waits for the next
  deferred job to come back: that gap is what the ratio to the ideal shows.

Prints one JSON document; `uptime` beside it says what else was running.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
import uuid
from typing import Any

import aio_pika
import httpx

from flotilla.envelope import Envelope
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from loadtest.soak import Fleet
from tests import services
from tests.guests.build import python_guest

AMQP = os.environ.get("FLOTILLA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS = os.environ.get("FLOTILLA_REDIS_URL", "redis://127.0.0.1:6379/0")


async def delay_lateness(n: int = 40) -> dict[str, Any]:
    """Lateness of delayed publishes and the latency of undelayed ones, in ms."""
    topology = Topology(f"bench{uuid.uuid4().hex[:8]}")
    late: list[float] = []
    direct: list[float] = []
    async with AmqpTransport(AMQP, topology, connection_name="bench-delays") as transport:
        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(topology.invocations)
            sent: dict[str, tuple[float, int]] = {}
            done = asyncio.Event()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                job_id = Envelope.decode(message.body).invocation_id
                at, delay_ms = sent[job_id]
                waited = (time.monotonic() - at) * 1000
                (late if delay_ms else direct).append(waited - delay_ms)
                await message.ack()
                if len(late) + len(direct) == 2 * n:
                    done.set()

            tag = await queue.consume(on_message)
            for _ in range(n):
                for delay_ms in (random.randint(100, 3000), 0):
                    env = Envelope.for_job(uuid.uuid4().hex, "f", "d", (), b"x", ttl_s=60)
                    sent[env.invocation_id] = (time.monotonic(), delay_ms)
                    await transport.submit(env, delay_ms=delay_ms)
                await asyncio.sleep(0.02)
            await asyncio.wait_for(done.wait(), 60)
            await queue.cancel(tag)
            await topology.delete(channel)
    return {
        "delayed_late_ms_p50": round(statistics.median(late), 1),
        "delayed_late_ms_p90": round(statistics.quantiles(late, n=10)[-1], 1),
        "delayed_late_ms_max": round(max(late), 1),
        "delayed_early": sum(1 for x in late if x < 0),
        "undelayed_latency_ms_p50": round(statistics.median(direct), 1),
        "undelayed_latency_ms_max": round(max(direct), 1),
    }


async def makespan(api: httpx.AsyncClient, function: str, jobs: int) -> float:
    """Seconds from the first submit to the last job finished."""
    body = json.dumps({"op": "sleep", "ms": 200}).encode()
    began = time.monotonic()
    ids = [(await api.post(f"/v1/functions/{function}/jobs", content=body)).json()["job_id"]
           for _ in range(jobs)]
    for job_id in ids:
        while True:
            doc = (await api.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
            if doc["status"] in ("succeeded", "failed"):
                assert doc["status"] == "succeeded", doc
                break
    return time.monotonic() - began


async def concurrency(fleet: Fleet) -> dict[str, Any]:
    probe = python_guest("probe").read_bytes()
    async with httpx.AsyncClient(base_url=fleet.api, timeout=60) as api:
        for name, limit in (("unlimited", 0), ("limited", 2)):
            resp = await api.put(f"/v1/functions/{name}", files={"component": ("p.wasm", probe)},
                                 data={"config": json.dumps({"max_concurrency": limit})})
            assert resp.status_code in (200, 201), resp.text
        await makespan(api, "unlimited", 8)  # warm both workers up (artifacts loaded)
        await makespan(api, "limited", 2)
        base = await makespan(api, "unlimited", 20)
        limited = await makespan(api, "limited", 20)
    return {"jobs": 20, "job_ms": 200, "max_concurrency": 2,
            "makespan_s": round(limited, 2), "ideal_s": 2.0,
            "ratio_to_ideal": round(limited / 2.0, 2),
            "unlimited_makespan_s": round(base, 2)}


def main() -> None:
    figures: dict[str, Any] = {"load_before": os.getloadavg()}
    figures["delay"] = asyncio.run(delay_lateness())
    with services.moto_server() as aws:
        fleet = Fleet(AMQP, REDIS, aws_endpoint_url=aws)
        try:
            fleet.start_dispatcher()
            for name in ("worker-0", "worker-1"):
                fleet.start_worker(name, concurrency=4, processes=1)
            figures["max_concurrency"] = asyncio.run(concurrency(fleet))
        finally:
            fleet.stop()
    figures["load_after"] = os.getloadavg()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
