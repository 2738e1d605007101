"""The `spawn` host interface: a function starts another function as a job.

The client is a `JobSpawner`; it checks the target against the caller's `spawn_functions`
(`denied`), the body and the per-invocation spawn count (`invalid-argument`), records and
queues the job and returns its id without waiting (`unavailable` when the queue or the job
store cannot be reached). `flotilla.spawner.Spawner` is the worker's. A worker built without
one answers `unavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from flotilla.hosts import interface as wit
from flotilla.hosts.base import InvocationContext
from flotilla.sandbox import abi

MAX_SPAWNS_PER_INVOCATION = 16


class JobSpawner(Protocol):
    """Submits a job of another function on behalf of the invocation."""

    def job(
        self, ctx: InvocationContext, function: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> str:
        """Queue a job of `function` and return its job id; HostError names what was wrong."""


def _job(host: JobSpawner, ctx: InvocationContext, a: Any) -> wit.Writer:
    job_id = host.job(ctx, wit.arg_string(a, 0), abi.get_headers(a[1]), wit.arg_bytes(a, 2))
    return wit.ok(lambda v: abi.put_string(v, job_id))


INTERFACE = wit.Interface(
    "spawn",
    (wit.HostFunc("job", _job),),
    errors={"denied": True, "unavailable": True, "invalid-argument": True},
    client="spawn",
)
