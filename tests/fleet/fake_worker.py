"""A real worker (`Supervisor` and `WorkerService`, signals and all) whose runner is a fake.

    python -m tests.fleet.fake_worker <delivery_limit> [<max_length>]

runs a supervisor of FLOTILLA_WORKER_PROCESSES children, each this module again with the
supervisor's `--child-link FD` appended. Settings come from FLOTILLA_* variables. The
supervisor prints `ready <metrics port>` once every child consumes and `stopping` when told
to stop; each child prints `started <invocation id> <pid>` when an invocation starts, so
tests can await those lines. Functions: `echo` (adds an `x-worker: <pid>` header), `sleep`
(body: milliseconds), `crash` (the process dies at once, like a segfaulting guest would kill
it). With FAKE_WORKER_FAIL_AT_START set, children exit with status 2 before consuming.
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
from worker.supervisor import LINK_FLAG, Supervisor, serve_link

_say_lock = threading.Lock()


def say(line: str) -> None:
    """One whole line on stdout (invocation threads and the loop both print)."""
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class ProcessRunner:
    """Announces each start on stdout, then behaves by function name."""

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        say(f"started {envelope.invocation_id} {os.getpid()}")
        if envelope.function == "crash":
            os._exit(3)
        if envelope.function == "sleep":
            time.sleep(int(envelope.body or b"0") / 1000)
        headers = (("x-worker", str(os.getpid())),)
        return Reply(
            envelope.invocation_id, envelope.correlation_id, Outcome.OK, 200, headers, envelope.body
        )


async def supervise(delivery_limit: int, max_length: int) -> int:
    """The supervisor of fake children: `ready <port>`, then `stopping` on the first signal."""
    settings = WorkerSettings.from_env()
    command = [sys.executable, "-m", "tests.fleet.fake_worker", str(delivery_limit),
               str(max_length)]
    supervisor = Supervisor(settings, command)
    supervisor.install_signal_handlers(asyncio.get_running_loop())
    task = asyncio.create_task(supervisor.run())
    ready = asyncio.create_task(supervisor.all_consuming.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        say(f"ready {supervisor.probes.port if supervisor.probes else 0}")

    async def announce_stop() -> None:
        await supervisor.stop_requested.wait()
        say("stopping")

    announcer = asyncio.create_task(announce_stop())
    status = await task
    announcer.cancel()
    return status


async def child(delivery_limit: int, max_length: int, link_fd: int) -> int:
    """One supervised worker process with the fake runner."""
    if os.environ.get("FAKE_WORKER_FAIL_AT_START"):
        return 2
    settings = WorkerSettings.from_env()
    service = WorkerService(
        settings,
        runtime_factory=lambda s, loop, metrics: Runtime(ProcessRunner()),
        topology=Topology(
            settings.queue_prefix, delivery_limit=delivery_limit, max_length=max_length
        ),
        serve_probes=False,
    )
    service.install_signal_handlers(asyncio.get_running_loop())
    link = asyncio.create_task(serve_link(link_fd, service))
    status = await service.run()
    link.cancel()
    if service.forced:
        exit_now(status)
    return status


def main(argv: list[str]) -> int:
    """Parse `<delivery_limit> [<max_length>] [--child-link FD]` and run."""
    link_fd = None
    if LINK_FLAG in argv:
        at = argv.index(LINK_FLAG)
        link_fd = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    delivery_limit, max_length = (int(a) for a in [*argv, "1000"][:2])
    if link_fd is None:
        return asyncio.run(supervise(delivery_limit, max_length))
    return asyncio.run(child(delivery_limit, max_length, link_fd))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(main(sys.argv[1:]))
