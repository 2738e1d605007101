"""The extra-node tooling refuses to touch the machine's own RabbitMQ node (unit tests)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from loadtest.cluster import Cluster, MachineBrokerError, beam_pid, guard, machine_node_names


@pytest.mark.parametrize("node", [
    "rabbit@localhost", f"rabbit@{socket.gethostname()}", "rabbit@elsewhere", "flotilla@localhost",
])  # fmt: skip
def test_guard_refuses_nodes_that_are_not_ours(node: str) -> None:
    with pytest.raises(MachineBrokerError, match="not an extra node"):
        guard(node)


@pytest.mark.parametrize("port", [5672, 25672, 15672, 15692])
def test_guard_refuses_the_machine_brokers_ports(port: int) -> None:
    with pytest.raises(MachineBrokerError, match="the machine's own broker"):
        guard("flt-abc-1@localhost", 40000, port)


def test_guard_accepts_an_extra_node() -> None:
    guard("flt-abc-1@localhost", 40000, 40001)


def test_the_machines_default_names_are_known() -> None:
    assert {"rabbit@localhost", f"rabbit@{socket.gethostname()}"} <= machine_node_names()


def test_no_operation_reaches_the_machines_node(tmp_path: Path) -> None:
    # Given a cluster description naming the machine's node (a corrupt or hostile file),
    cluster = Cluster(1, root=tmp_path)
    cluster.nodes[0].name = "rabbit@localhost"
    # every way of reaching a node is refused before any command runs or signal is sent.
    with pytest.raises(MachineBrokerError):
        cluster.ctl(1, "stop_app")
    with pytest.raises(MachineBrokerError):
        cluster.kill(1)
    with pytest.raises(MachineBrokerError):
        beam_pid("rabbit@localhost")
    cluster.nodes[0].name = "flt-abc-1@localhost"
    cluster.nodes[0].amqp_port = 5672
    with pytest.raises(MachineBrokerError):
        cluster.ctl(1, "stop_app")


def test_new_nodes_get_distinct_names_and_ports(tmp_path: Path) -> None:
    cluster = Cluster(3, root=tmp_path)
    names = {n.name for n in cluster.nodes}
    ports = [p for n in cluster.nodes for p in (n.amqp_port, n.dist_port)]
    assert len(names) == 3 and all(n.startswith("flt-") for n in names)
    assert len(set(ports)) == 6 and 5672 not in ports
    assert cluster.urls == [f"amqp://guest:guest@127.0.0.1:{n.amqp_port}/" for n in cluster.nodes]
