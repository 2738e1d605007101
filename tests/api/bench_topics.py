"""What `topics.publish` costs its invocation: `python -m tests.api.bench_topics [N]`
(RabbitMQ on FLOTILLA_AMQP_URL, default the local one).

In one run, N publishes of 100 bytes each way: the worker's `BusPublisher` from a thread
(the invocation thread's path: hop onto the loop, aio-pika publish, wait for the broker's
confirm), the same publish awaited on the loop (no hop: the confirm's round trip alone), and
`BusPublisher` over the in-memory bus (the thread hop alone). Prints median and p99.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

import aio_pika

from flotilla.config import FunctionConfig
from flotilla.hosts.base import InvocationContext
from flotilla.hosts.topics import BusPublisher
from flotilla.topics import AmqpTopics, MemoryTopics

MESSAGE = b"x" * 100


def figures(seconds: list[float]) -> str:
    """Median and p99 in microseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1e6:8.1f} us   p99 {p99 * 1e6:8.1f} us"


def timed(n: int, publish: Callable[[], None]) -> list[float]:
    """Seconds of each of `n` calls."""
    out = []
    for _ in range(n):
        began = time.perf_counter()
        publish()
        out.append(time.perf_counter() - began)
    return out


async def main(n: int) -> None:
    """Run the three measurements and print them."""
    url = os.environ.get("FLOTILLA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    exchange = f"bench{uuid.uuid4().hex[:8]}.topics"
    loop = asyncio.get_running_loop()
    bus = AmqpTopics(url, exchange)
    await bus.start()
    subscriber = await bus.subscribe("bench.t", max_messages=10 * n, max_bytes=1 << 30)
    ctx = InvocationContext(FunctionConfig(name="bench", publish_topics=("bench.*",)), "i",
                            time.monotonic() + 3600)
    try:
        on_loop = []
        for _ in range(n):
            began = time.perf_counter()
            await bus.publish("bench.t", MESSAGE)
            on_loop.append(time.perf_counter() - began)
        amqp = BusPublisher(bus, loop)
        threaded = await asyncio.to_thread(
            timed, n, lambda: amqp.publish(ctx, "bench.t", MESSAGE))
        memory = BusPublisher(MemoryTopics(), loop)
        hop = await asyncio.to_thread(timed, n, lambda: memory.publish(ctx, "bench.t", MESSAGE))
    finally:
        await subscriber.close()
        await bus.close()
        connection = await aio_pika.connect(url)
        async with connection:
            await (await connection.channel()).exchange_delete(exchange)
    print(f"{n} publishes of {len(MESSAGE)} bytes, one subscriber bound")
    print(f"  BusPublisher from a thread (RabbitMQ) {figures(threaded)}")
    print(f"  publish + confirm on the loop         {figures(on_loop)}")
    print(f"  BusPublisher from a thread (memory)   {figures(hop)}")
    print(f"  load average {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
