"""`python -m loadtest lanes-rtt`: what a synchronous lane's type costs a round trip.

A bare aio-pika RPC echo (loadtest/bare_echo.py's shape: the echo server in a process of its
own) over one lane per variant, interleaved in one run so the ratios hold on a noisy
machine. The variants are what a sync lane could be (issue 10 §3):

- `quorum_confirmed`: quorum queue, persistent, the caller waits for the publisher confirm
  before waiting for the reply (how jobs are submitted);
- `quorum`: the same, the confirm not awaited (Flotilla's sync call with
  FLOTILLA_SYNC_LANE=quorum: a refusal still settles the call);
- `quorum_direct`: that, with replies over `amq.rabbitmq.reply-to` (direct reply-to);
- `classic`: classic queue, transient messages, confirms on and not awaited
  (FLOTILLA_SYNC_LANE=classic);
- `classic_direct`: that, with direct reply-to;
- `bare`: classic, transient, no confirms, a server-named reply queue: the baseline of
  `flotilla bench e2e`.

Per variant: the p50 of `--calls` calls one at a time (median over rounds) and calls/s with
64 in flight, each beside `bare`'s. Queues are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

DIRECT = "amq.rabbitmq.reply-to"


@dataclass(frozen=True)
class Variant:
    """One way of running a sync lane (module docstring)."""

    name: str
    quorum: bool
    confirms: bool
    await_confirm: bool
    direct: bool


VARIANTS = (
    Variant("quorum_confirmed", True, True, True, False),
    Variant("quorum", True, True, False, False),
    Variant("quorum_direct", True, True, False, True),
    Variant("classic", False, True, False, False),
    Variant("classic_direct", False, True, False, True),
    Variant("bare", False, False, False, False),
)


def queue_arguments(v: Variant) -> dict[str, Any]:
    """The lane's arguments."""
    return {"x-queue-type": "quorum" if v.quorum else "classic"}


async def serve(amqp_url: str, prefix: str) -> None:
    """Echo every variant's lane to its reply_to until killed (the worker's side)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=128)
        for v in VARIANTS:
            queue = await channel.declare_queue(f"{prefix}.{v.name}", durable=True,
                                                arguments=queue_arguments(v))

            async def on_message(message: AbstractIncomingMessage) -> None:
                await channel.default_exchange.publish(
                    aio_pika.Message(message.body, correlation_id=message.correlation_id),
                    routing_key=message.reply_to or "",
                )
                await message.ack()

            await queue.consume(on_message)
        print("ready", flush=True)
        await asyncio.Future()


class Caller:
    """One variant's caller: its own connection, channel and reply queue."""

    def __init__(self, amqp_url: str, prefix: str, v: Variant) -> None:
        self.url, self.v, self.queue = amqp_url, v, f"{prefix}.{v.name}"
        self.futures: dict[str, asyncio.Future[bytes]] = {}
        self.pending: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        """Connect and consume replies."""
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=self.v.confirms)
        if self.v.direct:
            # Direct reply-to: consumed no-ack on the channel that publishes.
            queue = await self.channel.get_queue(DIRECT, ensure=False)
            await queue.consume(self._on_reply, no_ack=True)
            self.reply_to = DIRECT
        else:
            queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.consume(self._on_reply, no_ack=True)
            self.reply_to = queue.name

    async def close(self) -> None:
        """Close the connection."""
        await self.connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self.futures.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self) -> None:
        """One round trip."""
        cid = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.futures[cid] = future
        message = aio_pika.Message(
            b"ping", correlation_id=cid, reply_to=self.reply_to,
            delivery_mode=(aio_pika.DeliveryMode.PERSISTENT if self.v.quorum
                           else aio_pika.DeliveryMode.NOT_PERSISTENT))
        publish = self.channel.default_exchange.publish(message, routing_key=self.queue)
        if self.v.await_confirm or not self.v.confirms:
            await publish
        else:
            task = asyncio.ensure_future(publish)
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        await asyncio.wait_for(future, 10)


async def _c1_p50(caller: Caller, n: int) -> float:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await caller.call()
        out.append((time.perf_counter() - started) * 1000)
    return statistics.median(out)


async def _c64_rps(caller: Caller, n: int) -> float:
    started = time.perf_counter()
    left = n

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await caller.call()

    await asyncio.gather(*(loop() for _ in range(64)))
    return n / (time.perf_counter() - started)


async def run(amqp_url: str, *, calls: int = 500, c64_calls: int = 3000,
              rounds: int = 3) -> dict[str, Any]:
    """Start the echo server, measure every variant interleaved, delete the lanes."""
    from loadtest import report

    prefix = f"rtt{uuid.uuid4().hex[:8]}"
    server = subprocess.Popen(  # noqa: ASYNC220 - Popen starts it, never waits
        [sys.executable, "-m", "loadtest.lanes_rtt", "serve", amqp_url, prefix],
        stdout=subprocess.PIPE,
    )
    load_before = report.machine()["loadavg"]
    callers = [Caller(amqp_url, prefix, v) for v in VARIANTS]
    try:
        assert server.stdout is not None
        line = await asyncio.to_thread(server.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError("the echo server did not start")
        for c in callers:
            await c.start()
            await _c1_p50(c, 50)  # warm-up
        p50: dict[str, list[float]] = {c.v.name: [] for c in callers}
        rps: dict[str, list[float]] = {c.v.name: [] for c in callers}
        for _ in range(rounds):
            for c in callers:
                p50[c.v.name].append(await _c1_p50(c, calls))
            for c in callers:
                rps[c.v.name].append(await _c64_rps(c, c64_calls))
    finally:
        for c in callers:
            await c.close()
        server.kill()
        server.wait(10)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for v in VARIANTS:
                await channel.queue_delete(f"{prefix}.{v.name}")
    bare_p50 = statistics.median(p50["bare"])
    bare_rps = statistics.median(rps["bare"])
    figures = {
        v.name: {
            "c1_p50_ms": round(statistics.median(p50[v.name]), 3),
            "c1_p50_vs_bare": round(statistics.median(p50[v.name]) / bare_p50, 2),
            "c64_rps": round(statistics.median(rps[v.name])),
            "c64_rps_vs_bare": round(statistics.median(rps[v.name]) / bare_rps, 2),
        }
        for v in VARIANTS
    }
    return {"variants": figures, "calls": calls, "c64_calls": c64_calls, "rounds": rounds,
            "loadavg_before": load_before, "machine": report.machine()}


def main(argv: list[str]) -> int:
    """`serve AMQP_URL PREFIX` (the echo server) or `[AMQP_URL]` (measure, print JSON)."""
    if argv[:1] == ["serve"]:
        asyncio.run(serve(argv[1], argv[2]))
        return 0
    url = argv[0] if argv else "amqp://guest:guest@127.0.0.1:5672/"
    print(json.dumps(asyncio.run(run(url)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
