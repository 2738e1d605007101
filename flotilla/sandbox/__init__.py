"""The worker sandbox: one Engine and Linker per process, a new store and instance per call.

Modules: `engine` (Config, pooling allocator, epoch ticker), `linker` (WASI 0.2 + host
interfaces), `components` (validation, compile cache), `abi` (fast C value conversions),
`wasi` (per-invocation WASI context), `outcomes` (failure classification), `results`
(Request, Response, InvocationResult), `sandbox` (Sandbox.invoke), `fastpath` (the
optional C accelerator `_fastcall`, built by setup.py; ctypes `capi` is the fallback).
`Outcome` is `flotilla.outcomes.Outcome`, re-exported for the sandbox's callers.
"""

from flotilla.outcomes import Outcome
from flotilla.sandbox.results import InvocationResult, Request, Response, Timings
from flotilla.sandbox.sandbox import LoadedFunction, RequestTooLarge, Sandbox, new_request

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
