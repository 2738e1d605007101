"""The Celery baseline: a trivial echo task, RabbitMQ broker, `rpc://` result backend.

The worker is started by `loadtest.compare` as
`celery -A loadtest.celery_echo worker -Q $LOADTEST_CELERY_QUEUE`; the broker URL comes
from `FLOTILLA_AMQP_URL`. Callers use `CeleryCaller`, which runs the (blocking) Celery
client calls in a thread pool as wide as the concurrency under test.
"""

from __future__ import annotations

import asyncio
import os
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


class CeleryCaller:
    """`await call(body)`: `echo.delay(body).get()` on one of `threads` client threads.

    Celery's app.backend is thread-local, so each thread consumes its own rpc reply queue.
    """

    def __init__(self, threads: int, queue: str = QUEUE) -> None:
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
