"""Sandbox: load components and run each invocation in a brand-new store and instance.

Built once per worker process (engine, linker, compile cache); `invoke` is blocking and
thread-safe: every call creates its own Store, WASI context and instance and drops them
before returning. wasm runs with the GIL released, host calls take it back.
"""

from __future__ import annotations

import ctypes
import logging
import time
import uuid
from ctypes import byref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component import Component, ExportIndex

from flotilla.config import MIB, FunctionConfig
from flotilla.errors import ArtifactError, ComponentError, FlotillaError
from worker.hosts.base import InvocationContext
from worker.sandbox import abi
from worker.sandbox.components import ArtifactCache, check_binary, check_world, sha256_hex
from worker.sandbox.engine import EngineHandle, EngineSettings, build_engine
from worker.sandbox.linker import HostLinker
from worker.sandbox.outcomes import check_response, classify_error
from worker.sandbox.results import InvocationResult, Outcome, Request, Response, Timings
from worker.sandbox.wasi import CapturedOutput, OutputRouter, guest_env

log = logging.getLogger(__name__)

REQUEST_FIELDS = (b"invocation-id", b"function-name", b"headers", b"body")
_func_call = ffi.wasmtime_component_func_call
_post_return = ffi.wasmtime_component_func_post_return
_get_func = ffi.wasmtime_component_instance_get_func
_instantiate = ffi.wasmtime_component_linker_instantiate


class RequestTooLarge(FlotillaError, ValueError):
    """The request body is larger than the function's max_body_bytes."""


@dataclass(frozen=True)
class LoadedFunction:
    """A validated, compiled component ready to instantiate (shareable across threads)."""

    sha256: str
    component: Component
    handle: ExportIndex


class Sandbox:
    """Engine + Linker + compile cache, and `invoke` for one request at a time per thread."""

    def __init__(self, hosts: Any, *, cache_dir: str | Path,
                 engine_settings: EngineSettings | None = None) -> None:
        self._engine: EngineHandle = build_engine(engine_settings)
        self.engine = self._engine.engine
        self.engine_fingerprint: str = self._engine.fingerprint
        self._linker = HostLinker(self.engine, hosts)
        self.cache = ArtifactCache(self.engine, cache_dir, self.engine_fingerprint)
        self._output = OutputRouter()

    # ---- loading ------------------------------------------------------------------------

    def compile(self, wasm: bytes) -> bytes:
        """Validate and compile `wasm`; the serialized artifact (also kept in the disk cache)."""
        fn = self.load(wasm)
        return bytes(self.cache.path(fn.sha256).read_bytes())

    def load(self, wasm: bytes) -> LoadedFunction:
        """Validate `wasm` and compile it once (later loads deserialize the disk cache)."""
        sha, component, _ = self.cache.get_or_compile(bytes(wasm))
        return self._prepare(sha, component)

    def load_artifact(self, wasm_sha256: str, artifact: bytes) -> LoadedFunction:
        """Load an artifact the registry compiled (already authenticated by the caller)."""
        path = self.cache.path(wasm_sha256)
        component = self.cache.load_file(wasm_sha256) if path.exists() else None
        if component is None:
            self.cache.store(wasm_sha256, artifact)
            component = self.cache.load_file(wasm_sha256)
            if component is None:
                raise ArtifactError(
                    f"artifact for {wasm_sha256[:12]} does not load on this engine "
                    f"({self.engine_fingerprint}); recompile it"
                )
        return self._prepare(wasm_sha256, component)

    def _prepare(self, sha: str, component: Component) -> LoadedFunction:
        check_world(component, self.engine)
        handle = component.get_export_index("handle")
        if handle is None:
            raise ComponentError("component does not export `handle`")
        self._trial_instantiate(component)
        return LoadedFunction(sha, component, handle)

    def _trial_instantiate(self, component: Component) -> None:
        # Catches imports the Linker cannot satisfy (unknown wasi interface, wrong signature).
        store = wasmtime.Store(self.engine)
        try:
            store.set_epoch_deadline(self._engine.ticks_for(5_000))
            store.set_wasi(wasmtime.WasiConfig())
            instance = ffi.wasmtime_component_instance_t()
            err = _instantiate(self._linker.linker.ptr(), store._context(), component.ptr(),
                               byref(instance))
            if err:
                message = str(wasmtime.WasmtimeError._from_ptr(err))
                if "exceeds memory limits" in message or "interrupt" in message:
                    return
                raise ComponentError(f"component cannot be linked: {message}")
        finally:
            store.close()

    # ---- invoking -----------------------------------------------------------------------

    def invoke(self, fn: LoadedFunction, config: FunctionConfig,
               request: Request) -> InvocationResult:
        """Run `handle(request)` in a new store and instance; never raises for guest failures."""
        if len(request.body) > config.max_body_bytes:
            raise RequestTooLarge(
                f"request body of {len(request.body)} bytes exceeds "
                f"max_body_bytes={config.max_body_bytes}"
            )
        t0 = time.perf_counter()
        ctx = InvocationContext(
            config=config,
            invocation_id=request.invocation_id,
            deadline=time.monotonic() + config.timeout_ms / 1000.0,
        )
        output = CapturedOutput(ctx)
        key = self._output.register(output)
        store = wasmtime.Store(self.engine)
        try:
            context = store._context()
            ffi.wasmtime_context_set_wasi(
                context, self._output.wasi_config(key, guest_env(ctx))._consume()
            )
            ffi.wasmtime_store_limiter(store.ptr(), config.memory_limit_mb * MIB, -1, -1, -1, -1)
            ffi.wasmtime_context_set_epoch_deadline(
                context, self._engine.ticks_for(config.timeout_ms)
            )
            t1 = time.perf_counter()
            return self._run(fn, config, request, ctx, output, store, context, t0, t1)
        finally:
            store.close()
            self._output.unregister(key)

    def _run(self, fn: LoadedFunction, config: FunctionConfig, request: Request,
             ctx: InvocationContext, output: CapturedOutput, store: wasmtime.Store,
             context: Any, t0: float, t1: float) -> InvocationResult:
        timings = {"store_us": (t1 - t0) * 1e6}

        def finish(outcome: Outcome, response: Response | None = None,
                   error: str | None = None) -> InvocationResult:
            timings["total_us"] = (time.perf_counter() - t0) * 1e6
            return InvocationResult(
                outcome=outcome, response=response, error=error,
                logs=tuple(ctx.logs.records), logs_dropped=ctx.logs.dropped + (
                    1 if output.dropped else 0),
                timings=Timings(**timings),
            )

        def failure(err: Any) -> InvocationResult:
            error = wasmtime.WasmtimeError._from_ptr(err)
            message = str(error)
            if isinstance(error, wasmtime.ExitTrap):
                return finish(Outcome.TRAP, error=f"guest exited with code {error.code}: "
                                                  f"{message}")
            outcome = classify_error(
                message, output.stderr_tail.decode("utf-8", "replace"),
                past_deadline=time.monotonic() >= ctx.deadline,
            )
            return finish(outcome, error=message)

        instance = ffi.wasmtime_component_instance_t()
        err = _instantiate(self._linker.linker.ptr(), context, fn.component.ptr(),
                           byref(instance))
        t2 = time.perf_counter()
        timings["instantiate_us"] = (t2 - t1) * 1e6
        if err:
            return failure(err)
        func = ffi.wasmtime_component_func_t()
        if not _get_func(byref(instance), context, fn.handle.ptr(), byref(func)):
            return finish(Outcome.TRAP, error="instance has no `handle` function")

        params = (abi.Val * 1)()
        result = abi.Val()
        _lower_request(params[0], request)
        current = self._linker.current
        current.ctx = ctx
        try:
            err = _func_call(byref(func), context, params, 1, byref(result), 1)
        finally:
            current.ctx = None
            abi.delete(params[0])
        t3 = time.perf_counter()
        timings["call_us"] = (t3 - t2) * 1e6
        if err:
            return failure(err)
        try:
            is_ok, payload = abi.get_result(result)
            if is_ok:
                assert payload is not None
                status_v, headers_v, body_v = abi.get_fields(payload)
                status = abi.get_u16(status_v)
                body_len = body_v.of.list.size
                problem = check_response(status, body_len, config.max_body_bytes)
                response = None if problem else Response(
                    status, tuple(abi.get_headers(headers_v)), abi.get_bytes(body_v))
                error = None
            else:
                problem = None
                error = abi.get_string(payload) if payload is not None else ""
        finally:
            abi.delete(result)
        err = _post_return(byref(func), context)
        timings["post_return_us"] = (time.perf_counter() - t3) * 1e6
        if err:
            return failure(err)
        if problem:
            return finish(Outcome.BAD_RESPONSE, error=problem)
        if error is not None:
            return finish(Outcome.FUNCTION_ERROR, error=error)
        return finish(Outcome.OK, response=response)

    def close(self) -> None:
        """Stop the epoch ticker (loaded functions stay usable until garbage-collected)."""
        self._engine.close()


def _lower_request(val: abi.Val, request: Request) -> None:
    inv, name, headers, body = abi.start_record(val, REQUEST_FIELDS)
    abi.put_string(inv, request.invocation_id)
    abi.put_string(name, request.function_name)
    abi.put_headers(headers, request.headers)
    abi.put_bytes(body, request.body)


def new_request(function_name: str, body: bytes = b"",
                headers: tuple[tuple[str, str], ...] = ()) -> Request:
    """A Request with a fresh invocation id (CLI, bench and tests)."""
    return Request(uuid.uuid4().hex, function_name, tuple(headers), bytes(body))


__all__ = ["Sandbox", "LoadedFunction", "RequestTooLarge", "new_request"]
