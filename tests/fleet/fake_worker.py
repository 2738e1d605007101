"""A real worker process (`WorkerService`, signals and all) whose runner is a fake.

    python -m tests.fleet.fake_worker <delivery_limit> [<max_length>]

Settings come from FLOTILLA_* variables. It prints `ready` once consuming and
`started <invocation id>` when an invocation starts, so tests can await those lines.
Functions: `echo` (adds an `x-worker: <pid>` header), `sleep` (body: milliseconds),
`crash` (the process dies at once, like a segfaulting guest would kill it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time

from flotilla.envelope import Envelope, Reply
from flotilla.outcomes import Outcome
from flotilla.settings import WorkerSettings
from flotilla.topology import Topology
from worker.service import Runtime, WorkerService, exit_now

_say_lock = threading.Lock()


def say(line: str) -> None:
    """One whole line on stdout (invocation threads and the loop both print)."""
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class ProcessRunner:
    """Announces each start on stdout, then behaves by function name."""

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        say(f"started {envelope.invocation_id}")
        if envelope.function == "crash":
            os._exit(3)
        if envelope.function == "sleep":
            time.sleep(int(envelope.body or b"0") / 1000)
        headers = (("x-worker", str(os.getpid())),)
        return Reply(
            envelope.invocation_id, envelope.correlation_id, Outcome.OK, 200, headers, envelope.body
        )


async def main(delivery_limit: int, max_length: int = 1_000) -> int:
    settings = WorkerSettings.from_env()
    service = WorkerService(
        settings,
        runtime_factory=lambda s, loop, metrics: Runtime(ProcessRunner()),
        topology=Topology(
            settings.queue_prefix, delivery_limit=delivery_limit, max_length=max_length
        ),
    )
    service.install_signal_handlers(asyncio.get_running_loop())
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        say("ready")

    async def announce_stop() -> None:
        await service.stop_requested.wait()
        say("stopping")

    announcer = asyncio.create_task(announce_stop())
    status = await task
    announcer.cancel()
    if service.forced:
        exit_now(status)
    return status


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(asyncio.run(main(*(int(a) for a in sys.argv[1:]))))
