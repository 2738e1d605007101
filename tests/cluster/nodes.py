"""Extra RabbitMQ nodes for tests (loadtest.cluster): never the machine's own broker.

`extra_nodes(size)` starts `size` clustered nodes and deletes them afterwards, whatever the
test did; a machine without RabbitMQ installed skips (fails under CI=true).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from loadtest.cluster import Cluster, ClusterError, package_bin
from tests import services


@contextmanager
def extra_nodes(size: int) -> Iterator[Cluster]:
    """`size` extra RabbitMQ nodes, clustered and running; killed and deleted on exit."""
    try:
        package_bin()
    except ClusterError as exc:
        services.unavailable(str(exc))
    cluster = Cluster(size)
    try:
        seconds = cluster.up()
        print(f"{size} extra RabbitMQ node(s) up in {seconds:.1f} s")
        yield cluster
    finally:
        cluster.down()

