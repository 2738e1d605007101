"""The dead-letter doctor's decisions (flotilla/brokerheal.py), against an in-memory broker
that answers rabbitmqctl's JSON; tests/cluster/test_brokerheal.py runs it on real nodes."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import pytest

from flotilla.brokerheal import BrokerCtlError, DeadLetterDoctor, RabbitmqCtl
from flotilla.cli import main

NODES = ["rabbit@a", "rabbit@b", "rabbit@c"]


class FakeBroker:
    """rabbitmqctl's answers: `looks` is the list_queues rows per look (the last repeats);
    eval records transfers, answering {migrated, Node} or what `refuse` says."""

    def __init__(self, looks: list[list[dict[str, Any]]], running: list[str] | None = None,
                 refuse: str | None = None) -> None:
        self.looks, self.running, self.refuse = looks, running or NODES, refuse
        self.listed = 0
        self.evals: list[str] = []

    def __call__(self, *args: str) -> str:
        if args[0] == "list_queues":
            rows = self.looks[min(self.listed, len(self.looks) - 1)]
            self.listed += 1
            return json.dumps(rows)
        if args[0] == "cluster_status":
            return json.dumps({"running_nodes": self.running})
        if args[0] == "eval":
            self.evals.append(args[1])
            if self.refuse:
                return self.refuse
            node = args[1].rsplit("'", 2)[1]
            return "{migrated,'" + node + "'}"
        raise AssertionError(args)


def row(name: str, held: int = 0, *, leader: str = "rabbit@a", ready: int = 0,
        kind: str = "quorum", members: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "type": kind, "leader": leader, "members": members or NODES,
            "messages": held + ready, "messages_ready": ready, "messages_unacknowledged": 0}


def doctor(broker: FakeBroker, **options: Any) -> DeadLetterDoctor:
    return DeadLetterDoctor(broker, prefix="flt", sleep=lambda s: None, **options)


def test_a_queue_holding_as_many_twice_moves_to_the_least_loaded_other_member() -> None:
    look = [row("flt.delay.1", 3), row("flt.sync", ready=9, leader="rabbit@b"),
            row("flt.jobs.echo", leader="rabbit@b")]
    broker = FakeBroker([look])
    moves = doctor(broker).sweep()
    assert [(m.queue, m.held, m.leader, m.to, m.moved) for m in moves] == [
        ("flt.delay.1", 3, "rabbit@a", "rabbit@c", True)]
    assert len(broker.evals) == 1
    assert '<<"flt.delay.1">>' in broker.evals[0] and "'rabbit@c'" in broker.evals[0]


def test_held_messages_that_drain_between_the_looks_are_left_alone() -> None:
    broker = FakeBroker([[row("flt.delay.1", 5), row("flt.delay.2", 2)],
                         [row("flt.delay.1", 4), row("flt.delay.2", 0)]])
    assert doctor(broker).sweep() == []
    assert broker.evals == []


def test_ready_messages_classic_queues_and_other_prefixes_are_not_held() -> None:
    look = [row("flt.delay.1", ready=7), row("flt.dead", 2, kind="classic"),
            row("other.delay.1", 4)]
    broker = FakeBroker([look])
    assert doctor(broker).sweep() == []
    assert broker.listed == 1  # nothing held: no second look


def test_only_running_members_other_than_the_leader_are_candidates() -> None:
    broker = FakeBroker([[row("flt.delay.1", 1, members=["rabbit@a", "rabbit@b"])]],
                        running=["rabbit@a", "rabbit@c"])
    (move,) = doctor(broker).sweep()
    assert not move.moved and move.reason == "no other running member"
    assert broker.evals == []


def test_a_refused_transfer_is_reported_not_raised() -> None:
    broker = FakeBroker([[row("flt.delay.1", 1)]], refuse="{not_migrated,timeout}")
    (move,) = doctor(broker).sweep()
    assert not move.moved and "not_migrated" in move.reason


def test_a_queue_moved_recently_is_not_moved_again() -> None:
    now = [100.0]
    broker = FakeBroker([[row("flt.delay.1", 1)]])
    d = doctor(broker, cooldown_s=60, clock=lambda: now[0])
    assert d.sweep()[0].moved
    now[0] += 30
    (again,) = d.sweep()
    assert not again.moved and again.reason == "moved recently"
    now[0] += 31
    assert d.sweep()[0].moved
    assert len(broker.evals) == 2 and len(d.moves) == 3


def test_names_that_cannot_be_quoted_into_erlang_are_refused() -> None:
    broker = FakeBroker([[row('flt.x">>,evil', 1)]])
    (move,) = doctor(broker).sweep()
    assert not move.moved and "quotable" in move.reason
    assert broker.evals == []


def test_unreadable_answers_are_broker_errors() -> None:
    d = doctor(lambda *args: "Error: not JSON")  # type: ignore[arg-type]
    with pytest.raises(BrokerCtlError, match="no JSON"):
        d.sweep()


def test_watch_keeps_sweeping_after_a_failure_until_stopped() -> None:
    stop = threading.Event()
    calls = []

    def ctl(*args: str) -> str:
        calls.append(args[0])
        if len(calls) == 1:
            raise BrokerCtlError("node down")
        stop.set()
        return "[]"

    doctor(ctl).watch(0.0, stop)  # type: ignore[arg-type]
    assert calls == ["list_queues", "list_queues"]


def test_rabbitmqctl_asks_each_node_in_turn() -> None:
    script = ("import sys; a = sys.argv[1:]; "
              "sys.exit(3) if a[1] == 'rabbit@down' else print(' '.join(a))")
    ctl = RabbitmqCtl([sys.executable, "-c", script], ["rabbit@down", "rabbit@up"])
    assert ctl("list_queues", "name").strip() == "-n rabbit@up list_queues name"
    with pytest.raises(BrokerCtlError, match="rabbit@down: exit 3"):
        RabbitmqCtl([sys.executable, "-c", script], ["rabbit@down"])("status")
    with pytest.raises(BrokerCtlError, match="cannot run"):
        RabbitmqCtl(["/nonexistent/rabbitmqctl"])("status")


def test_command_reports_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["broker", "heal", "--ctl", "/nonexistent/rabbitmqctl"]) == 1
    assert "cannot run /nonexistent/rabbitmqctl" in capsys.readouterr().err


def test_command_refuses_bad_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["broker", "heal", "--settle", "0"])
    assert exc.value.code == 2
    assert "give seconds" in capsys.readouterr().err
