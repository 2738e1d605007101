"""The Celery baseline: a trivial echo task, RabbitMQ broker, `rpc://` result backend.

`loadtest.compare` and `loadtest.e2e` (`flotilla bench e2e`) start the worker with
`worker_argv(queue, concurrency)` and `worker_env(amqp_url, queue)`: Celery's own defaults
(the prefork pool, one process per CPU) with gossip, mingle and heartbeats off, since the
benchmark has one worker. Callers use `CeleryCaller`, which runs the (blocking) Celery
client calls in a thread pool as wide as the concurrency under test.

This module imports Celery, which comes with the `loadtest` extra: check
`celery_missing()` (in `loadtest.e2e`) before importing it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

QUEUE = os.environ.get("LOADTEST_CELERY_QUEUE", "loadtest-celery")

app = Celery(
    "loadtest",
    broker=os.environ.get("FLOTILLA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    backend="rpc://",
)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="loadtest.echo")  # type: ignore[untyped-decorator]
def echo(body: str) -> str:
    """Return the body (the trivial task)."""
    return body


# The worker's readiness line (`celery@host ready.` on its log).
READY = "ready."


def worker_argv(queue: str, concurrency: int) -> list[str]:
    """The command that runs the Celery worker of `queue` with `concurrency` processes.

    The node is named after the queue: two workers with Celery's default name (`celery@host`)
    on one broker collide on the exclusive remote-control queue `celery@host.celery.pidbox`,
    and the second exits with RESOURCE_LOCKED (two benchmarks running at once)."""
    return [
        sys.executable, "-m", "celery", "-A", "loadtest.celery_echo", "worker", "-Q", queue,
        "-n", f"{queue}@%h", "-c", str(concurrency), "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-l", "INFO",
    ]


def worker_env(amqp_url: str, queue: str) -> dict[str, str]:
    """The environment entries that point the worker at `amqp_url` and `queue`."""
    return {"FLOTILLA_AMQP_URL": amqp_url, "LOADTEST_CELERY_QUEUE": queue}


class CeleryCaller:
    """`await call(body)`: `echo.delay(body).get()` on one of `threads` client threads.

    Celery's app.backend is thread-local, so each thread consumes its own rpc reply queue.
    `broker_url`, when given, replaces the URL read from `FLOTILLA_AMQP_URL` at import.
    """

    def __init__(self, threads: int, queue: str = QUEUE, broker_url: str | None = None) -> None:
        if broker_url is not None:
            app.conf.broker_url = broker_url
        self._pool = ThreadPoolExecutor(threads, "celery-client")
        self._queue = queue

    async def call(self, body: str = "hello") -> str:
        """One round trip through the Celery worker."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _roundtrip, body, self._queue)

    def close(self) -> None:
        """Stop the client threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _roundtrip(body: str, queue: str) -> str:
    result: str = echo.apply_async((body,), queue=queue).get(timeout=30)
    return result
