"""`flotilla worker`: a supervisor running N worker processes, one pod's worth of workers.

Invocations of a CPU-bound guest do not scale over threads of one process (page faults and
the pooling allocator's memory resets contend in one address space, docs/performance.md),
so a worker pod runs several processes, each today's whole worker (`run_process`: its own
engine, sandbox threads, AMQP connection), under this supervisor:

- **Children are new interpreters** (`subprocess`: `python -m flotilla worker --child-link
  FD`, the supervisor's own flags passed on, the environment inherited), never forks: a
  fork of a process that already built a wasmtime engine, its threads and an event loop
  inherits locks held by threads that do not exist in the child. `multiprocessing`'s spawn
  would do the same with pickling on top; a plain command is what an operator can read in
  `ps`. The supervisor never imports wasmtime, aio-pika or the sandbox: it stays small.
- **The link**: one socketpair per child (its end passed as FD, in its own process group so
  a terminal's Ctrl-C reaches only the supervisor). The child writes `consuming` once it
  consumes and answers `ready? N` with `ready N 1|0` (its /readyz answer); when the link
  reaches EOF, the supervisor is gone (even SIGKILLed) and the child drains and exits, so
  no orphan keeps consuming.
- **Restarts**: a child that dies is started again after `restart_delay(deaths)` (0.5 s,
  doubling up to 30 s; a child that stayed up `HEALTHY_AFTER_S` starts the count afresh),
  counted in `flotilla_worker_restarts_total`. A child that dies before it consumes failed
  to start; `START_FAILURES` of those in a row for one process (bad settings, broker
  unreachable, unwritable cache) make the supervisor stop the others and exit 1, saying why.
- **Signals**: SIGTERM (or SIGINT) is forwarded to every child, which drains as a single
  worker does; a second one is forwarded again and the children exit at once. A child
  still running `KILL_GRACE_S` after its drain deadline is killed.
- **Probes and metrics** on `FLOTILLA_METRICS_PORT`, once for all children: `/healthz` is
  the supervisor's loop; `/readyz` is 200 when every child consumes and answers ready (a
  pod at full strength: a rollout waits for it); `/metrics` sums the children's multiprocess
  files (flotilla/metrics.py) plus the supervisor's own metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.multiprocess import mark_process_dead

from flotilla.metrics import SupervisorMetrics
from flotilla.settings import WorkerSettings
from worker.probes import ProbeServer

if TYPE_CHECKING:  # the children's side; the supervisor itself never imports the service
    from worker.service import WorkerService

log = logging.getLogger(__name__)

LINK_FLAG = "--child-link"
# The children's prometheus-client files: <tmp>/flotilla-metrics-<supervisor pid>-<random>.
METRICS_DIR_PREFIX = "flotilla-metrics-"
RESTART_BASE_S = 0.5
RESTART_MAX_S = 30.0
# A child up this long (after it consumed) has died of something new: backoff starts over.
HEALTHY_AFTER_S = 60.0
# Consecutive children of one slot that die before consuming: then the supervisor gives up.
START_FAILURES = 5
# After the drain deadline, how long children get to close connections before SIGKILL.
KILL_GRACE_S = 5.0
# How long a child may take to answer `ready?` (its Redis PING alone may take 1 s).
LINK_TIMEOUT_S = 2.0


def restart_delay(deaths: int) -> float:
    """Seconds before starting a process again after its slot's `deaths`-th death in a row."""
    return min(RESTART_MAX_S, RESTART_BASE_S * 2 ** max(0, deaths - 1))


def worker_command(flags: Sequence[str]) -> list[str]:
    """The command of a child `flotilla worker` with the supervisor's own flags."""
    return [sys.executable, "-m", "flotilla", "worker", *flags]


class Child:
    """One running worker process and the supervisor's end of its link."""

    def __init__(
        self,
        slot: int,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_consuming: Callable[[Child], None],
    ) -> None:
        self.slot = slot
        self._on_consuming = on_consuming
        self.process = process
        self.started = time.monotonic()
        self.consuming_since: float | None = None
        self.consuming = asyncio.Event()
        self._reader = reader
        self._writer = writer
        self._questions = itertools.count()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self._listener = asyncio.create_task(self._listen())

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    async def _listen(self) -> None:
        async for line in self._reader:
            words = line.split()
            if words == [b"consuming"]:
                self.consuming_since = time.monotonic()
                self.consuming.set()
                self._on_consuming(self)
            elif len(words) == 3 and words[0] == b"ready":
                future = self._pending.pop(words[1], None)
                if future is not None and not future.done():
                    future.set_result(words[2] == b"1")

    async def ready(self) -> bool:
        """The child's own readiness (consuming, Redis answers); False when it is slow."""
        if not self.consuming.is_set() or self.process.returncode is not None:
            return False
        question = str(next(self._questions)).encode()
        future = self._pending[question] = asyncio.get_running_loop().create_future()
        try:
            self._writer.write(b"ready? " + question + b"\n")
            return await asyncio.wait_for(future, LINK_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            return False
        finally:
            self._pending.pop(question, None)

    def signal(self, sig: int) -> None:
        """Send `sig` unless the child has exited."""
        if self.process.returncode is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Drop the link (the child is gone)."""
        self._listener.cancel()
        self._writer.close()


@dataclass
class Slot:
    """One of the supervisor's N places for a worker process, and how its children died."""

    index: int
    deaths: int = 0  # in a row: the restart delay grows with them
    failures: int = 0  # children in a row that died before consuming

    def died(self, child: Child) -> None:
        """Count `child`'s death (a child that consumed a long time first starts afresh)."""
        if child.consuming_since is None:
            self.failures += 1
        else:
            self.failures = 0
            if time.monotonic() - child.consuming_since >= HEALTHY_AFTER_S:
                self.deaths = 0
        self.deaths += 1


class Supervisor:
    """Runs `settings.effective_processes()` children of `command`; `run()` returns the status."""

    def __init__(
        self,
        settings: WorkerSettings,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.processes = settings.effective_processes()
        self._command = list(command)
        self._env = dict(os.environ if env is None else env)
        self.children: dict[int, Child] = {}
        self.stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        self.all_consuming = asyncio.Event()
        self._first_up = asyncio.Event()  # the first process consumes (or gave up trying)
        self.metrics = SupervisorMetrics()  # run() adds its children's directory
        self.probes: ProbeServer | None = None
        self._gave_up: str | None = None
        self._failed = False  # a child exited non-zero after the stop

    @property
    def forced(self) -> bool:
        """True once a second stop request asked the children to skip their drain."""
        return self._force.is_set()

    def stop(self) -> None:
        """Forward a stop to every child; called a second time, the children exit at once."""
        if self.stop_requested.is_set():
            self._force.set()
            log.warning("stopping at once: %d worker processes told to exit", len(self.children))
        else:
            log.info("stopping: %d worker processes told to drain", len(self.children))
        self.stop_requested.set()
        self._first_up.set()  # slots still waiting for it see the stop
        for child in self.children.values():
            child.signal(signal.SIGTERM)

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM and SIGINT call `stop()` (and do nothing else)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> int:
        """Start the children, keep them running until stopped, then wait for their drain."""
        remove_stale_metrics_dirs()
        directory = tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")
        self._env["PROMETHEUS_MULTIPROC_DIR"] = directory
        self.metrics = SupervisorMetrics(directory)
        log.info("starting %d worker processes, %d invocations at once each",
                 self.processes, self.settings.effective_concurrency())
        try:
            await self._start_probes()
            slots = [asyncio.create_task(self._keep(slot, directory))
                     for slot in range(self.processes)]
            deadline = asyncio.create_task(self._kill_after_drain_deadline())
            await asyncio.gather(*slots)
            deadline.cancel()
        finally:
            for child in self.children.values():  # only on an error of the supervisor itself
                child.signal(signal.SIGKILL)
            if self.probes is not None:
                await self.probes.close()
            shutil.rmtree(directory, ignore_errors=True)
        return 1 if self._gave_up or self._failed or self.forced else 0

    async def readiness(self) -> bool:
        """The pod's /readyz: every process runs, consumes and answers ready."""
        if self.stop_requested.is_set() or len(self.children) < self.processes:
            return False
        answers = await asyncio.gather(*(c.ready() for c in self.children.values()))
        return all(answers)

    async def _keep(self, index: int, directory: str) -> None:
        """Run slot `index`'s child until the stop, starting it again each time it dies."""
        slot = Slot(index)
        if index > 0:
            # The first process declares the queues alone: RabbitMQ answers two connections
            # declaring and consuming a new quorum queue at once with INTERNAL_ERROR.
            await self._first_up.wait()
        while not self.stop_requested.is_set():
            child = await self._start(index)
            status = await child.process.wait()
            self._first_up.set()  # gone before it consumed: the others need not wait longer
            del self.children[index]
            child.close()
            self.metrics.processes.dec()
            mark_process_dead(child.pid, directory)  # its live gauges leave the sums
            if self.stop_requested.is_set():
                # A process stopped before it consumed (its signal handler not yet in place)
                # had nothing to drain: that is a clean stop too.
                if status != 0 and not (status == -signal.SIGTERM and
                                        child.consuming_since is None):
                    log.warning("worker process %d (pid %d) exited with %s",
                                index, child.pid, _describe(status))
                    self._failed = True
                return
            slot.died(child)
            if slot.failures >= START_FAILURES:
                self._gave_up = (f"worker process {index} died before consuming "
                                 f"{slot.failures} times in a row (last: {_describe(status)})")
                log.error("giving up: %s; see its log lines above", self._gave_up)
                self.stop()
                return
            delay = restart_delay(slot.deaths)
            log.warning("worker process %d (pid %d) %s (%s) after %.1f s; starting it again "
                        "in %.1f s", index, child.pid,
                        "died" if child.consuming_since else "failed to start",
                        _describe(status), time.monotonic() - child.started, delay)
            try:
                await asyncio.wait_for(self.stop_requested.wait(), delay)
                return
            except TimeoutError:
                self.metrics.restarts.inc()

    async def _start(self, slot: int) -> Child:
        """Start slot `slot`'s child with a fresh link."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command, LINK_FLAG, str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), env=self._env, process_group=0,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child's copy is the only one: its EOF is ours
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        child = self.children[slot] = Child(slot, process, reader, writer, self._consuming)
        self.metrics.processes.inc()
        log.info("worker process %d started: pid %d", slot, child.pid)
        if self.stop_requested.is_set():  # the stop came while it was starting
            child.signal(signal.SIGTERM)
            if self.forced:
                child.signal(signal.SIGTERM)
        return child

    def _consuming(self, child: Child) -> None:
        """A child consumes: log it, and once when every process consumed for the first time."""
        log.info("worker process %d (pid %d) consuming", child.slot, child.pid)
        self._first_up.set()
        if not self.all_consuming.is_set() and len(self.children) == self.processes and all(
            c.consuming.is_set() for c in self.children.values()
        ):
            self.all_consuming.set()
            log.info("all %d worker processes consuming", self.processes)

    async def _kill_after_drain_deadline(self) -> None:
        """SIGKILL children still running well after their drain deadline."""
        await self.stop_requested.wait()
        await asyncio.sleep(self.settings.drain_timeout_s + KILL_GRACE_S)
        for child in self.children.values():
            log.error("worker process %d (pid %d) still running after its drain deadline: "
                      "killing it", child.slot, child.pid)
            child.signal(signal.SIGKILL)

    async def _start_probes(self) -> None:
        probes = ProbeServer(self.metrics.registry, self.readiness,
                             port=self.settings.metrics_port)
        try:
            await probes.start()
        except OSError as exc:
            # Probes are for the orchestrator; a busy port must not stop the workers working.
            log.warning("cannot serve /metrics on port %s: %s", self.settings.metrics_port, exc)
            return
        self.probes = probes
        log.info("serving /metrics, /healthz, /readyz on port %d", probes.port)


def remove_stale_metrics_dirs(root: str | None = None) -> None:
    """Remove the metrics directories of supervisors that died without removing their own
    (SIGKILL, OOM): the pid in the name is gone. A live pid, even a reused one, is kept."""
    base = Path(root or tempfile.gettempdir())
    for path in base.glob(f"{METRICS_DIR_PREFIX}*"):
        pid = path.name[len(METRICS_DIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _describe(status: int) -> str:
    """An exit status as words: "exit status 3", "signal SIGKILL"."""
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


def run_supervisor(
    settings: WorkerSettings, command: Sequence[str], env: Mapping[str, str] | None = None
) -> int:
    """Supervise worker processes until SIGTERM/SIGINT; returns the exit status."""

    async def main() -> int:
        supervisor = Supervisor(settings, command, env=env)
        supervisor.install_signal_handlers(asyncio.get_running_loop())
        return await supervisor.run()

    return asyncio.run(main())


async def serve_link(fd: int, service: WorkerService) -> None:
    """The child's end of the link: say when consuming, answer `ready?`, stop on EOF."""
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))

    async def announce() -> None:
        await service.ready.wait()
        writer.write(b"consuming\n")

    announcer = asyncio.create_task(announce())
    try:
        async for line in reader:
            words = line.split()
            if len(words) == 2 and words[0] == b"ready?":
                ready = await service.readiness()
                writer.write(b"ready %s %d\n" % (words[1], ready))
        if not service.stop_requested.is_set():
            log.warning("the supervisor is gone: stopping")
            service.stop()
    finally:
        announcer.cancel()
        writer.close()
