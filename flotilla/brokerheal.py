"""Restart RabbitMQ's at-least-once dead-letter workers that stopped forwarding.

A quorum queue with `x-dead-letter-strategy: at-least-once` keeps each message it
dead-letters until its dead-letter worker (a process beside the queue's leader) has the
target queue's confirm. On RabbitMQ 3.10.8 that worker stops forwarding when the leader of
its target queue dies while it publishes: the quorum-queue client it publishes with sent the
message to the dead leader and never hears of the new one. The messages then wait in the
source queue, counted in `messages` but neither ready nor unacknowledged, until the source's
leadership moves and a new worker starts. Flotilla's delay chain (flotilla/delays.py) is a
chain of such queues, so a stopped level holds delayed jobs and retries (nothing is lost:
they wait). docs/reliability.md has the experiment.

`DeadLetterDoctor.sweep()` lists the quorum queues under a prefix that hold messages that
way, looks again `settle_s` later (a working worker forwards in milliseconds), and moves
the leadership of each queue that holds as many or more to another running member (a Raft
leadership transfer, what `rabbitmq-queues rebalance` does per queue): its new leader
starts a new worker, which forwards them. A queue moved less than `cooldown_s` ago is left
alone (a broken dead-letter topology, e.g. a deleted exchange, holds messages too, and
moving it again would not help: the log says so). `watch()` sweeps every `interval_s`
until stopped.

It speaks to the broker through `rabbitmqctl` (`RabbitmqCtl`; any command that runs it
will do, e.g. `kubectl exec -n rabbitmq my-rabbit-server-0 -- rabbitmqctl`): 3.10 has no
HTTP API for moving one queue's leadership.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Names quoted into an Erlang expression: anything else is refused, not escaped.
SAFE_NAME = re.compile(r"[\w.:/@-]+")


class BrokerCtlError(RuntimeError):
    """rabbitmqctl failed, timed out or answered something unreadable."""


class Ctl(Protocol):
    """Runs rabbitmqctl with these arguments; its stdout, or BrokerCtlError."""

    def __call__(self, *args: str) -> str: ...


class RabbitmqCtl:
    """`rabbitmqctl` (or `command`, e.g. `kubectl exec ... -- rabbitmqctl`) asked of each
    of `nodes` in turn (`-n <node>`) until one answers; without nodes, its default node."""

    def __init__(self, command: Sequence[str] = ("rabbitmqctl",), nodes: Sequence[str] = (),
                 *, timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        if not command:
            raise ValueError("the rabbitmqctl command is empty")
        self.command = list(command)
        self.nodes = list(nodes)
        self.timeout = timeout
        self.env = env

    def __call__(self, *args: str) -> str:
        failures = []
        nodes: list[str | None] = list(self.nodes) or [None]
        for node in nodes:
            cmd = [*self.command, *(["-n", node] if node else []), *args]
            try:
                done = subprocess.run(cmd, capture_output=True, timeout=self.timeout,
                                      check=False, stdin=subprocess.DEVNULL, env=self.env)
            except subprocess.TimeoutExpired:
                failures.append(f"{node or 'default node'}: no answer in {self.timeout:g} s")
                continue
            except OSError as exc:
                raise BrokerCtlError(f"cannot run {self.command[0]}: {exc}") from exc
            if done.returncode == 0:
                return done.stdout.decode(errors="replace")
            out = (done.stdout + done.stderr).decode(errors="replace").strip()[-400:]
            failures.append(f"{node or 'default node'}: exit {done.returncode}: {out}")
        raise BrokerCtlError(f"{' '.join(self.command)} {' '.join(args)}: "
                             + "; ".join(failures))


@dataclass(frozen=True)
class QueueState:
    """One quorum queue as `rabbitmqctl list_queues` sees it."""

    name: str
    leader: str
    members: tuple[str, ...]
    messages: int
    ready: int
    unacked: int

    @property
    def held(self) -> int:
        """Messages dead-lettered and not yet forwarded (neither ready nor unacknowledged)."""
        return max(0, self.messages - self.ready - self.unacked)


@dataclass(frozen=True)
class Move:
    """What a sweep did with one queue that held dead-lettered messages."""

    queue: str
    held: int
    leader: str
    to: str | None  # the new leader; None when it was not moved
    reason: str = ""  # why not, or the broker's refusal
    at: float = 0.0  # when (the doctor's clock: time.monotonic by default)

    @property
    def moved(self) -> bool:
        return self.to is not None and not self.reason

    def to_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "held": self.held, "leader": self.leader, "to": self.to,
                "moved": self.moved, "reason": self.reason}


class DeadLetterDoctor:
    """Finds the quorum queues under `prefix` whose dead-letter worker stopped and restarts
    it by moving the queue's leadership (module docstring)."""

    def __init__(self, ctl: Ctl, *, prefix: str, vhost: str = "/", settle_s: float = 2.0,
                 cooldown_s: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctl = ctl
        self.prefix = prefix
        self.vhost = vhost
        self.settle_s = settle_s
        self.cooldown_s = cooldown_s
        self._sleep = sleep
        self._clock = clock
        self._moved_at: dict[str, float] = {}
        self.moves: list[Move] = []  # every move a sweep made or refused, oldest first

    def queues(self) -> dict[str, QueueState]:
        """The quorum queues under the prefix, by name."""
        out = self.ctl("list_queues", "-p", self.vhost, "name", "type", "leader", "members",
                       "messages", "messages_ready", "messages_unacknowledged",
                       "--formatter", "json", "-q")
        try:
            rows = json.loads(out or "[]")
        except ValueError as exc:
            raise BrokerCtlError(f"list_queues answered no JSON: {out[:200]!r}") from exc
        found = {}
        for row in rows:
            name = str(row.get("name", ""))
            if row.get("type") != "quorum" or not name.startswith(self.prefix):
                continue
            members = row.get("members") or []
            found[name] = QueueState(
                name=name, leader=str(row.get("leader") or ""),
                members=tuple(str(m) for m in (members if isinstance(members, list) else [])),
                messages=_count(row.get("messages")), ready=_count(row.get("messages_ready")),
                unacked=_count(row.get("messages_unacknowledged")))
        return found

    def holding(self) -> dict[str, QueueState]:
        """The queues holding dead-lettered messages right now."""
        return {name: q for name, q in self.queues().items() if q.held > 0}

    def running_nodes(self) -> list[str]:
        """The nodes the cluster says are running."""
        out = self.ctl("cluster_status", "--formatter", "json")
        try:
            return [str(n) for n in json.loads(out).get("running_nodes", [])]
        except (ValueError, AttributeError) as exc:
            raise BrokerCtlError(f"cluster_status answered no JSON: {out[:200]!r}") from exc

    def sweep(self) -> list[Move]:
        """Look twice, `settle_s` apart; move the leadership of every queue that held
        dead-lettered messages both times, no fewer the second; what it did."""
        first = self.holding()
        if not first:
            return []
        self._sleep(self.settle_s)
        second = self.queues()
        stuck = [q for name, q in sorted(second.items())
                 if name in first and q.held >= first[name].held > 0]
        if not stuck:
            return []
        running = self.running_nodes()
        led: dict[str, int] = {}
        for q in second.values():
            led[q.leader] = led.get(q.leader, 0) + 1
        moves = []
        for q in stuck:
            move = self._move(q, running, led)
            if move.moved:
                led[q.leader] = led.get(q.leader, 1) - 1
                led[move.to or ""] = led.get(move.to or "", 0) + 1
            moves.append(move)
        self.moves.extend(moves)
        return moves

    def _move(self, q: QueueState, running: list[str], led: dict[str, int]) -> Move:
        now = self._clock()
        last = self._moved_at.get(q.name)
        if last is not None and now - last < self.cooldown_s:
            log.warning("%s still holds %d dead-lettered messages %.0f s after its leadership "
                        "moved: check its dead-letter exchange and routing key", q.name,
                        q.held, now - last)
            return Move(q.name, q.held, q.leader, None, "moved recently", at=now)
        candidates = [n for n in (q.members or tuple(running))
                      if n in running and n != q.leader]
        if not candidates:
            return Move(q.name, q.held, q.leader, None, "no other running member", at=now)
        if not (SAFE_NAME.fullmatch(q.name) and SAFE_NAME.fullmatch(self.vhost)):
            return Move(q.name, q.held, q.leader, None, "name not quotable into an eval",
                        at=now)
        to = min(candidates, key=lambda n: (led.get(n, 0), n))
        try:
            transfer_leadership(self.ctl, q.name, to, self.vhost)
        except BrokerCtlError as exc:
            log.warning("moving %s to %s failed: %s", q.name, to, exc)
            return Move(q.name, q.held, q.leader, to, str(exc)[:300], at=now)
        self._moved_at[q.name] = now
        log.warning("%s held %d dead-lettered messages that its dead-letter worker did not "
                    "forward: its leadership moved from %s to %s", q.name, q.held, q.leader, to)
        return Move(q.name, q.held, q.leader, to, at=now)

    def watch(self, interval_s: float = 10.0, stop: threading.Event | None = None) -> None:
        """Sweep every `interval_s` until `stop` is set; a broker that does not answer is
        logged and asked again next time."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.sweep()
            except BrokerCtlError as exc:
                log.warning("dead-letter sweep failed: %s", exc)
            stop.wait(interval_s)


def transfer_leadership(ctl: Ctl, queue: str, to: str, vhost: str = "/") -> str:
    """Make node `to` the leader of quorum queue `queue` (a Raft leadership transfer, what
    `rabbitmq-queues rebalance` does per queue); the node leading it after. BrokerCtlError
    when a name cannot be quoted, the queue is unknown or the transfer is refused."""
    for text in (queue, vhost, to):
        if not SAFE_NAME.fullmatch(text):
            raise BrokerCtlError(f"refusing to quote {text!r} into an Erlang expression")
    expr = (f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"{vhost}">>, queue, '
            f'<<"{queue}">>)), rabbit_quorum_queue:transfer_leadership(Q, \'{to}\').')
    out = ctl("eval", expr).strip()
    migrated = re.match(r"\{migrated,\s*'?([^'}]+)'?\}", out)
    if migrated is None:
        raise BrokerCtlError(f"{queue}: leadership not moved to {to}: {out[:200]}")
    return migrated.group(1)


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
