"""The `invocation` host interface: the caller's method, path, query and identity, and how
this invocation runs (sync, job, spawned, scheduled; its attempt; the time it has left).

Everything comes from the invocation's `CallInfo` (filled from the envelope by the worker)
and its deadline: no client, no I/O, nothing that can fail.
"""

from __future__ import annotations

from typing import Any

from flotilla.hosts import interface as wit
from flotilla.hosts.base import InvocationContext
from flotilla.sandbox import abi

MAX_U32 = 2**32 - 1


def _method(_: None, ctx: InvocationContext, a: Any) -> wit.Writer:
    method = ctx.call.method
    return lambda v: abi.put_string(v, method)


def _path(_: None, ctx: InvocationContext, a: Any) -> wit.Writer:
    path = ctx.call.path
    return lambda v: abi.put_string(v, path)


def _query(_: None, ctx: InvocationContext, a: Any) -> wit.Writer:
    query = ctx.call.query
    return lambda v: abi.put_headers(v, query)


def _caller(_: None, ctx: InvocationContext, a: Any) -> wit.Writer:
    return wit.opt_string(ctx.call.caller)


def _kind(_: None, ctx: InvocationContext, a: Any) -> wit.Writer:
    kind = ctx.call.kind
    return lambda v: abi.put_enum(v, kind)


def _attempt(_: None, ctx: InvocationContext, a: Any) -> wit.Writer:
    attempt = min(max(ctx.call.attempt, 1), MAX_U32)
    return lambda v: abi.put_u32(v, attempt)


def _remaining_ms(_: None, ctx: InvocationContext, a: Any) -> wit.Writer:
    left = min(int(ctx.remaining() * 1000), MAX_U32)
    return lambda v: abi.put_u32(v, left)


INTERFACE = wit.Interface(
    "invocation",
    (
        wit.HostFunc("method", _method),
        wit.HostFunc("path", _path),
        wit.HostFunc("query", _query),
        wit.HostFunc("caller", _caller),
        wit.HostFunc("kind", _kind),
        wit.HostFunc("attempt", _attempt),
        wit.HostFunc("remaining-ms", _remaining_ms),
    ),
    # No error variant: a call after the deadline still answers (remaining-ms is 0).
    deadline=("", None),
)
