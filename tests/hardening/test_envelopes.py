"""Poison envelopes on a real queue, consumed by a real worker (real sandbox, registry, S3).

tests/fleet covers each path alone with a fake runner (test_consumer: malformed -> DLQ,
unknown digest -> not_found, expired -> expired; test_envelope: every decode error). This
test sends them all, back to back, to one real `WorkerService` and checks the sum: every
malformed message is dead-lettered, every well-formed but unrunnable one is answered with an
error, the worker never dies, and the valid envelopes queued behind them all are answered.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aio_pika
import boto3
import msgpack
import pytest
import redis.asyncio as aioredis

from dispatcher.service import compile_step
from flotilla.artifacts import ArtifactStore, S3Backend
from flotilla.config import FunctionConfig
from flotilla.envelope import Envelope, Reply, now_ms
from flotilla.registry import Deployer, FunctionVersion, Registry
from flotilla.settings import WorkerSettings
from flotilla.topology import Topology
from tests.guests.wat import WAT_DIR, build_wat_text
from tests.services import lane_functions
from worker.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ECHO_CORE = (WAT_DIR.parents[2] / "flotilla" / "sandbox" / "wat" / "echo.wat").read_text()
ARTIFACT_KEY = "envelopes-key"


@dataclass
class Fleet:
    prefix: str
    topology: Topology
    echo: FunctionVersion
    worker: WorkerService
    worker_task: asyncio.Task[None]


@pytest.fixture
async def fleet(redis_url: str, amqp_url: str, aws_endpoint_url: str, unique: str,
                tmp_path: Path) -> AsyncIterator[Fleet]:
    redis = aioredis.from_url(redis_url)
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    sandbox, compile = compile_step(str(tmp_path / "dispatcher-cache"))
    registry = Registry(redis, prefix=unique)
    deployer = Deployer(registry, ArtifactStore(S3Backend(s3, unique), ARTIFACT_KEY),
                        compile=compile, engine_fingerprint=sandbox.engine_fingerprint)
    echo, _ = await deployer.deploy(FunctionConfig.from_dict({}, name="echo"),
                                    build_wat_text(ECHO_CORE))
    sandbox.close()
    worker = WorkerService(WorkerSettings(
        amqp_url=amqp_url, redis_url=redis_url, aws_endpoint_url=aws_endpoint_url,
        artifact_bucket=unique, artifact_key=ARTIFACT_KEY, queue_prefix=unique,
        cache_dir=str(tmp_path / "worker-cache"), concurrency=2, drain_timeout_s=5,
    ))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 30)
    topology = Topology(prefix=unique)
    try:
        yield Fleet(unique, topology, echo, worker, task)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await topology.delete(
                await connection.channel(), await lane_functions(redis_url, unique))
        keys = [k async for k in redis.scan_iter(f"{unique}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def valid(fleet: Fleet, reply_to: str, body: bytes = b"hi") -> Envelope:
    iid = uuid.uuid4().hex
    return Envelope(
        invocation_id=iid, correlation_id=iid, function="echo", digest=fleet.echo.digest,
        headers=(), body=body, deadline_ms=now_ms() + 30_000, reply_to=reply_to,
    )


def raw(envelope: Envelope, **changes: object) -> bytes:
    """The envelope's msgpack map with some keys changed (None: removed)."""
    m = msgpack.unpackb(envelope.encode(), raw=False)
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return bytes(msgpack.packb(m, use_bin_type=True))


async def test_poison_envelopes_never_stop_a_real_worker(amqp_url: str, fleet: Fleet) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        rt = replies_queue.name
        template = valid(fleet, rt)
        malformed = {
            "random bytes": os.urandom(256),
            "truncated msgpack": template.encode()[:25],
            "wrong version": raw(template, v=99),
            "missing fields": raw(template, dg=None, dl=None),
            "wrongly typed field": raw(template, dl="tomorrow"),
            "not a map": bytes(msgpack.packb([1, 2, 3])),
            "empty": b"",
        }
        expired = replace(valid(fleet, rt), deadline_ms=now_ms() - 60_000)
        unknown_digest = replace(valid(fleet, rt), digest="f" * 64)
        unknown_function = replace(valid(fleet, rt), function="ghost")
        good = [valid(fleet, rt, f"valid {i}".encode()) for i in range(5)]
        # Poison first, the valid envelopes behind it (one of them in the middle).
        bodies = [*malformed.values(), expired.encode(), good[0].encode(),
                  unknown_digest.encode(), unknown_function.encode(),
                  *(g.encode() for g in good[1:])]
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, reply_to=rt), routing_key=fleet.topology.sync
            )

        expected = {
            expired.correlation_id: "expired",
            unknown_digest.correlation_id: "not_found",
            unknown_function.correlation_id: "not_found",
            **{g.correlation_id: "ok" for g in good},
        }
        replies: dict[str, Reply] = {}
        async with replies_queue.iterator() as it:
            async def collect() -> None:
                async for message in it:
                    await message.ack()
                    reply = Reply.decode(message.body)
                    replies[reply.correlation_id] = reply
                    if len(replies) == len(expected):
                        return
            await asyncio.wait_for(collect(), 60)
        assert {cid: r.outcome for cid, r in replies.items()} == expected
        assert sorted(replies[g.correlation_id].body for g in good) == [
            f"valid {i}".encode() for i in range(5)
        ]

        # Every malformed delivery, and only those, is in the dead-letter queue.
        dlq = await channel.get_queue(fleet.topology.dead_letters)
        dead: list[bytes] = []
        async with dlq.iterator() as it:
            async def drain() -> None:
                async for message in it:
                    await message.ack()
                    dead.append(message.body)
                    if len(dead) == len(malformed):
                        return
            await asyncio.wait_for(drain(), 30)
        assert sorted(dead) == sorted(malformed.values())
        assert await dlq.get(fail=False) is None

    # The worker is still up and still serving.
    assert not fleet.worker_task.done()
    assert fleet.worker.ready.is_set()
