"""The sandbox: one Engine and Linker per process, a new store and instance per call.

Modules: `engine` (Config, pooling allocator, epoch ticker), `linker` (WASI 0.2 + host
interfaces), `components` (validation, compile cache), `abi` (fast C value conversions),
`wasi` (per-invocation WASI context), `outcomes` (failure classification), `results`
(Request, Response, InvocationResult), `sandbox` (Sandbox.invoke), `fastpath` (the
optional C accelerator `_fastcall`, built by setup.py; ctypes `capi` is the fallback).

The names below load on first use, so a host interface can import `abi` without pulling in
the linker that imports the host interfaces. `Outcome` is `flotilla.outcomes.Outcome`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flotilla.outcomes import Outcome
    from flotilla.sandbox.results import InvocationResult, Request, Response, Timings
    from flotilla.sandbox.sandbox import LoadedFunction, RequestTooLarge, Sandbox, new_request

_WHERE = {
    "InvocationResult": "results",
    "Outcome": "outcomes",
    "Request": "results",
    "Response": "results",
    "Timings": "results",
    "LoadedFunction": "sandbox",
    "RequestTooLarge": "sandbox",
    "Sandbox": "sandbox",
    "new_request": "sandbox",
}

__all__ = [
    "InvocationResult",
    "LoadedFunction",
    "Outcome",
    "Request",
    "RequestTooLarge",
    "Response",
    "Sandbox",
    "Timings",
    "new_request",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "outcomes":
        return getattr(import_module("flotilla.outcomes"), name)
    return getattr(import_module(f"{__name__}.{module}"), name)
