"""The one place host interfaces are registered: `INTERFACES`, in the order they are linked.

The linker (`flotilla/sandbox/linker.py`) defines each in every instance's imports.
"""

from __future__ import annotations

from flotilla.hosts import cache, dynamodb, http, invocation, log, s3, secrets, spawn, topics
from flotilla.hosts.interface import Interface

INTERFACES: tuple[Interface, ...] = (
    cache.INTERFACE,
    http.INTERFACE,
    s3.INTERFACE,
    dynamodb.INTERFACE,
    log.INTERFACE,
    invocation.INTERFACE,
    secrets.INTERFACE,
    topics.INTERFACE,
    spawn.INTERFACE,
)
