"""How an invocation ended: the one `Outcome` enum of the sandbox, the wire and the API.

A `StrEnum`: members are the strings that travel in replies, job results, problem documents
and metric labels (`Outcome.OK == "ok"`, `str(Outcome.OK) == "ok"`), so they need no
conversion at any of those boundaries.
"""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    """How an invocation ended; every value but `ok` is a failure the caller can tell apart."""

    # The sandbox decides these six.
    OK = "ok"  # handle returned ok(response) within every limit
    TIMEOUT = "timeout"  # the deadline (config.timeout_ms) interrupted the guest
    MEMORY_LIMIT = "memory_limit"  # linear memory hit config.memory_limit_mb
    TRAP = "trap"  # the guest trapped (unreachable, stack overflow, wasi exit, ...)
    FUNCTION_ERROR = "function_error"  # handle returned err(string)
    BAD_RESPONSE = "bad_response"  # the response broke a limit (body size, status range)
    # The worker decides these before or around the sandbox.
    EXPIRED = "expired"  # the deadline had passed before the worker could start it
    NOT_FOUND = "not_found"  # the worker has no artifact for (function, digest)
    INTERNAL = "internal"  # a worker-side failure that is not the guest's fault

