"""Sandbox: load components and run each invocation in a brand-new store and instance.

Built once per worker process (engine, linker, compile cache); `invoke` is blocking and
thread-safe: every call creates its own Store, WASI context and instance and drops them
before returning. wasm runs with the GIL released, host calls take it back.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ctypes import byref
from dataclasses import dataclass
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component import Component, ExportIndex

from flotilla.config import MIB, FunctionConfig
from flotilla.errors import ArtifactError, ComponentError, FlotillaError
from flotilla.hosts.base import InvocationContext
from flotilla.outcomes import Outcome
from flotilla.sandbox import abi, capi, fastpath, rawabi
from flotilla.sandbox.components import CompileCache, check_world, has_raw_export
from flotilla.sandbox.engine import EngineHandle, EngineSettings, build_engine
from flotilla.sandbox.linker import HostLinker
from flotilla.sandbox.outcomes import check_response, classify_error
from flotilla.sandbox.results import InvocationResult, Request, Response, Timings
from flotilla.sandbox.wasi import CapturedOutput, GuestEnv, OutputRouter

log = logging.getLogger(__name__)

_instantiate = ffi.wasmtime_component_linker_instantiate


class _Teardowns(threading.local):
    """Per thread: whether store teardowns wait for `teardowns_after()` to end, and which."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending: list[Callable[[], None]] = []


_teardowns = _Teardowns()


@contextmanager
def teardowns_after() -> Iterator[Callable[[], None]]:
    """Within this block, `Sandbox.invoke` on this thread returns before deleting the
    invocation's store; calling the function it yields (or leaving the block) deletes the
    stores of the invocations made so far. The worker answers first and tears down after:
    deleting a store resets its instance's memory (~0.4-0.9 ms for a Python guest), work
    the caller need not wait for. Nothing runs in a store after its invocation returned."""
    state = _teardowns
    if state.deferring:  # nested: the outer block tears down
        yield lambda: None
        return

    def tear_down() -> None:
        pending, state.pending = state.pending, []
        for drop in pending:
            try:
                drop()
            except Exception:  # never leave the others: each is one store
                log.exception("deleting an invocation's store failed")

    state.deferring = True
    try:
        yield tear_down
    finally:
        state.deferring = False
        tear_down()


def defer_teardown(drop: Callable[[], None]) -> None:
    """Run `drop` (deletes one store) when this thread's `teardowns_after` block tears down,
    or now outside one."""
    if _teardowns.deferring:
        _teardowns.pending.append(drop)
    else:
        drop()


class RequestTooLarge(FlotillaError, ValueError):
    """The request body is larger than the function's max_body_bytes."""


@dataclass(frozen=True)
class LoadedFunction:
    """A validated, compiled component ready to instantiate (shareable across threads)."""

    sha256: str
    component: Component
    handle: ExportIndex
    component_ptr: int = 0  # raw addresses for the hot path (kept valid by the objects above)
    handle_ptr: int = 0
    # The byte-string export (see rawabi): bodies cross as one latin1 string. None for a
    # component it could not be added to; those take bodies per byte, up to
    # MAX_REQUEST_BODY_BYTES in and about 2.6 MiB out (wasmtime's hostcall fuel).
    raw: ExportIndex | None = None
    raw_ptr: int = 0

    @property
    def max_body_bytes(self) -> int:
        """The largest body this component can take and return, whatever its config says."""
        return rawabi.MAX_BODY_BYTES if self.raw is not None else MAX_REQUEST_BODY_BYTES


MAX_PREPARED_CONFIGS = 512
# Without the byte-string export, wasmtime's per-call transfer budget ("hostcall fuel", not
# settable through the C API) runs out near 2.66 MiB of list<u8> lifted from the guest and
# about 4 MiB lowered into it; refuse larger requests up front instead of trapping.
MAX_REQUEST_BODY_BYTES = 2_500_000


@dataclass(frozen=True)
class _PreparedConfig:
    """Per-config values computed once: the guest env arrays, the limits in engine units."""

    config: FunctionConfig
    env: GuestEnv
    memory_bytes: int
    ticks: int


class Sandbox:
    """Engine + Linker + compile cache, and `invoke` for one request at a time per thread."""

    def __init__(
        self,
        hosts: Any,
        *,
        cache_dir: str | Path,
        engine_settings: EngineSettings | None = None,
        accelerate: bool | None = None,
    ) -> None:
        self._engine: EngineHandle = build_engine(engine_settings)
        self.engine = self._engine.engine
        self.engine_fingerprint: str = self._engine.fingerprint
        self._linker = HostLinker(self.engine, hosts)
        self.cache = CompileCache(self.engine, cache_dir, self.engine_fingerprint)
        self._output = OutputRouter()
        self._engine_ptr = capi.address(self.engine.ptr())
        self._linker_ptr = capi.address(self._linker.linker.ptr())
        self._current = self._linker.current
        self._configs: dict[int, _PreparedConfig] = {}
        # None: use the C accelerator when built, unless FLOTILLA_SANDBOX_CTYPES=1.
        if accelerate is None:
            accelerate = os.environ.get("FLOTILLA_SANDBOX_CTYPES", "") not in ("1", "true")
        self._fast = fastpath.load() if accelerate else None
        self.call_path = fastpath.path_name(self._fast)

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
        raw = (
            component.get_export_index(rawabi.RAW_EXPORT)
            if has_raw_export(component, self.engine)
            else None
        )
        return LoadedFunction(
            sha,
            component,
            handle,
            capi.address(component.ptr()),
            capi.address(handle.ptr()),
            raw,
            capi.address(raw.ptr()) if raw is not None else 0,
        )

    def _trial_instantiate(self, component: Component) -> None:
        # Catches imports the Linker cannot satisfy (unknown wasi interface, wrong signature).
        store = wasmtime.Store(self.engine)
        try:
            store.set_epoch_deadline(self._engine.ticks_for(5_000))
            store.set_wasi(wasmtime.WasiConfig())
            instance = ffi.wasmtime_component_instance_t()
            err = _instantiate(
                self._linker.linker.ptr(), store._context(), component.ptr(), byref(instance)
            )
            if err:
                message = str(wasmtime.WasmtimeError._from_ptr(err))
                if "exceeds memory limits" in message or "interrupt" in message:
                    return
                raise ComponentError(f"component cannot be linked: {message}")
        finally:
            store.close()

    # ---- invoking -----------------------------------------------------------------------

    def invoke(
        self, fn: LoadedFunction, config: FunctionConfig, request: Request
    ) -> InvocationResult:
        """Run `handle(request)` in a new store and instance; never raises for guest failures."""
        limit = min(config.max_body_bytes, fn.max_body_bytes)
        if len(request.body) > limit:
            raise RequestTooLarge(
                f"request body of {len(request.body)} bytes exceeds max_body_bytes={limit}"
            )
        t0 = perf_counter()
        ctx = InvocationContext(
            config, request.invocation_id, monotonic() + config.timeout_ms / 1000.0,
            call=request.call,
        )
        run = _Invocation(ctx, CapturedOutput(ctx), config.max_body_bytes, t0)
        key = self._output.register(run.output)
        try:
            if self._fast is not None:
                return self._invoke_fast(fn, request, run, key)
            return self._invoke_ctypes(fn, request, run, key)
        finally:
            self._output.unregister(key)

    def _invoke_fast(
        self, fn: LoadedFunction, request: Request, run: _Invocation, key: int
    ) -> InvocationResult:
        # The whole sequence (store, WASI, instantiate, call, read the result, post-return,
        # drop) is one C call; wasm runs with the GIL released, host callbacks take it back.
        fc = self._fast
        assert fc is not None
        prepared = self._prepared(run.ctx.config)
        out = self._output
        current = self._current
        current.ctx = run.ctx
        raw = fn.raw_ptr != 0
        try:
            deferring = _teardowns.deferring
            stage, err, t_store, t_inst, t_call, lifted, t_post, kept = fc.invoke(
                self._engine_ptr,
                self._linker_ptr,
                fn.component_ptr,
                fn.raw_ptr or fn.handle_ptr,
                prepared.memory_bytes,
                prepared.ticks,
                prepared.env.names,
                prepared.env.values,
                request.invocation_id,
                rawabi.to_raw(request.function_name) if raw else request.function_name,
                _raw_headers(request.headers) if raw else request.headers,
                request.body,
                out._stdout_addr,
                out._stderr_addr,
                key,
                out._finalize_addr,
                run.max_body,
                raw,
                deferring,
            )
        finally:
            current.ctx = None
        if kept:
            defer_teardown(lambda: fc.drop(kept))
        phases = run.phases
        phases[1] = t_store or phases[0]
        phases[2] = t_inst or phases[1]
        phases[3] = t_call or phases[2]
        phases[4] = t_post
        if stage == fc.STAGE_OK:
            is_ok, status, headers, body, n_body, message = lifted
            if is_ok < 0:
                return run.finish(Outcome.BAD_RESPONSE, error=message)
            if not is_ok:
                return run.finish(Outcome.FUNCTION_ERROR, error=message)
            problem = check_response(status, n_body, run.max_body)
            if problem:
                return run.finish(Outcome.BAD_RESPONSE, error=problem)
            return run.finish(Outcome.OK, response=Response(status, headers, body))
        if stage == fc.STAGE_WASI:
            raise capi.error_from(err)
        if stage == fc.STAGE_GET_FUNC:
            return run.finish(Outcome.TRAP, error="instance has no `handle` function")
        return run.failure(err)

    def _invoke_ctypes(
        self, fn: LoadedFunction, request: Request, run: _Invocation, key: int
    ) -> InvocationResult:
        store = capi.store_new(self._engine_ptr, None, None)
        try:
            context = capi.store_context(store)
            prepared = self._prepared(run.ctx.config)
            wasi = self._output.raw_wasi_config(key, prepared.env, request.invocation_id)
            err = capi.context_set_wasi(context, wasi)
            if err:
                raise capi.error_from(err)
            capi.store_limiter(store, prepared.memory_bytes, -1, -1, -1, -1)
            capi.set_epoch_deadline(context, prepared.ticks)
            result = self._run(fn, request, run, context)
        finally:
            defer_teardown(lambda: capi.store_delete(store))
        return run.retimed(result)  # count the store teardown, as the C path does

    def _run(
        self, fn: LoadedFunction, request: Request, run: _Invocation, context: int
    ) -> InvocationResult:
        phases = run.phases
        phases[1] = phases[2] = phases[3] = perf_counter()
        scratch = bytearray(SCRATCH_SIZE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
        instance, func, result = base, base + capi.INSTANCE_SIZE, base + RESULT_OFFSET
        err = capi.linker_instantiate(self._linker_ptr, context, fn.component_ptr, instance)
        phases[2] = phases[3] = perf_counter()
        if err:
            return run.failure(err)
        raw = fn.raw_ptr != 0
        if not capi.instance_get_func(instance, context, fn.raw_ptr or fn.handle_ptr, func):
            return run.finish(Outcome.TRAP, error="instance has no `handle` function")
        if raw:
            params = abi.BorrowedRequest(
                request.invocation_id,
                rawabi.to_raw(request.function_name),
                _raw_headers(request.headers),
                request.body.decode("latin-1").encode("utf-8"),
                body_as_string=True,
            )
        else:
            params = abi.BorrowedRequest(
                request.invocation_id, request.function_name, request.headers, request.body
            )
        current = self._current
        current.ctx = run.ctx
        try:
            err = capi.func_call(func, context, params.address, 1, result, 1)
        finally:
            current.ctx = None
        phases[3] = perf_counter()
        if err:
            return run.failure(err)
        try:
            lifted = _lift_result(scratch, result, run.max_body, raw)
        finally:
            capi.val_delete(result)
        err = capi.func_post_return(func, context)
        phases[4] = perf_counter()
        if err:
            return run.failure(err)
        return run.lifted(*lifted)

    def _prepared(self, config: FunctionConfig) -> _PreparedConfig:
        # Keyed by identity: configs are frozen and the worker reuses one per function.
        entry = self._configs.get(id(config))
        if entry is None or entry.config is not config:
            entry = _PreparedConfig(
                config,
                GuestEnv(config),
                config.memory_limit_mb * MIB,
                self._engine.ticks_for(config.timeout_ms),
            )
            if len(self._configs) >= MAX_PREPARED_CONFIGS:
                self._configs.pop(next(iter(self._configs)), None)
            self._configs[id(config)] = entry
        return entry

    def close(self) -> None:
        """Stop the epoch ticker (loaded functions stay usable until garbage-collected)."""
        self._engine.close()


class _Invocation:
    """One invocation's context, captured output and phase clock, and how it ends."""

    __slots__ = ("ctx", "max_body", "output", "phases", "t0")

    def __init__(
        self, ctx: InvocationContext, output: CapturedOutput, max_body: int, t0: float
    ) -> None:
        self.ctx = ctx
        self.output = output
        self.max_body = max_body
        self.t0 = t0
        # perf_counter at: start, store ready, instantiated, call returned, post-return done
        # (0: the teardown has not started)
        self.phases = [t0, t0, t0, t0, 0.0]

    def finish(
        self, outcome: Outcome, response: Response | None = None, error: str | None = None
    ) -> InvocationResult:
        """The result, with the phase timings measured so far."""
        timings = self._timings(perf_counter())
        logs = self.ctx.logs
        return InvocationResult(
            outcome,
            response,
            error,
            tuple(logs.records),
            logs.dropped + (1 if self.output.dropped else 0),
            timings,
        )

    def _timings(self, now: float) -> Timings:
        t0, t_store, t_inst, t_call, t_post = self.phases
        end = t_post or now  # the C path drops the store before `now`, after t_post
        return Timings(
            store_us=(t_store - t0) * 1e6,
            instantiate_us=(t_inst - t_store) * 1e6,
            call_us=(t_call - t_inst) * 1e6,
            post_return_us=(end - t_call) * 1e6 if t_call > t_inst else 0.0,
            teardown_us=(now - t_post) * 1e6 if t_post else 0.0,
            total_us=(now - t0) * 1e6,
        )

    def retimed(self, result: InvocationResult) -> InvocationResult:
        """`result` with the store teardown (done after it was made) counted in."""
        return dataclasses.replace(result, timings=self._timings(perf_counter()))

    def failure(self, err: int) -> InvocationResult:
        """The result for a wasmtime error (takes ownership of `err`)."""
        error = capi.error_from(err)
        message = str(error)
        if isinstance(error, wasmtime.ExitTrap):
            return self.finish(
                Outcome.TRAP, error=f"guest exited with code {error.code}: {message}"
            )
        if rawabi.OVER_LIMIT_FUNC in message:
            return self.finish(
                Outcome.BAD_RESPONSE,
                error=f"response over Flotilla's limits: body over {rawabi.MAX_BODY_BYTES} "
                f"bytes or headers over {rawabi.MAX_HEADER_BYTES} bytes",
            )
        outcome = classify_error(
            message,
            self.output.stderr_tail.decode("utf-8", "replace"),
            past_deadline=monotonic() >= self.ctx.deadline,
        )
        return self.finish(outcome, error=message)

    def lifted(
        self, response: Response | None, error: str | None, problem: str | None
    ) -> InvocationResult:
        """The result for what `_lift_result` read."""
        if problem:
            return self.finish(Outcome.BAD_RESPONSE, error=problem)
        if error is not None:
            return self.finish(Outcome.FUNCTION_ERROR, error=error)
        return self.finish(Outcome.OK, response=response)


RESULT_OFFSET = 64  # instance (16 bytes) and func (24 bytes) come first
SCRATCH_SIZE = RESULT_OFFSET + abi.VAL_SIZE
assert capi.INSTANCE_SIZE + capi.FUNC_SIZE <= RESULT_OFFSET
# result<response, string>: kind, pad, is_ok (bool) at 8, payload pointer at 16
_RESULT = struct.Struct("<B7x?7xQ")
# response record: 3 entries of (name size, name ptr, kind, pad, payload 24 bytes)
_ENTRY = struct.Struct("<QQB7xQQ8x")


def _lift_result(
    scratch: bytearray, result: int, max_body: int, raw: bool = False
) -> tuple[Response | None, str | None, str | None]:
    """(response, function error, bad-response reason) read from the handle's result value.

    `raw`: the value came from the byte-string export (strings hold one byte per character).
    """
    kind, is_ok, payload = _RESULT.unpack_from(scratch, RESULT_OFFSET)  # our own memory
    if kind != abi.K_RESULT:
        return None, None, f"handle returned a value of kind {kind}, not a result"
    if not is_ok:
        message = abi.get_string(abi.Val.from_address(payload)) if payload else ""
        return None, (rawabi.from_raw(message) if raw else message), None
    nfields, entries = capi.read_vec(payload + 8)
    if nfields != 3:
        return None, None, "response record has the wrong shape"
    fields = ctypes.string_at(entries, 3 * _ENTRY.size)
    status = int.from_bytes(fields[24:26], "little")
    _, _, _, n_headers, _ = _ENTRY.unpack_from(fields, _ENTRY.size)
    _, _, body_kind, n_body, body_ptr = _ENTRY.unpack_from(fields, 2 * _ENTRY.size)
    body = b""
    if raw:
        if body_kind != abi.K_STRING:
            return None, None, "response record has the wrong shape"
        body = ctypes.string_at(body_ptr, n_body) if n_body else b""
        if not body.isascii():
            try:
                body = body.decode("utf-8").encode("latin-1")
            except UnicodeError:
                return None, None, "response body is not a byte string"
        n_body = len(body)
    problem = check_response(status, n_body, max_body)
    if problem:
        return None, None, problem
    headers: tuple[tuple[str, str], ...] = ()
    if n_headers:
        headers = tuple(abi.get_headers(abi.Val.from_address(entries + _ENTRY.size + 16)))
        if raw:
            headers = tuple((rawabi.from_raw(k), rawabi.from_raw(v)) for k, v in headers)
    if not raw and n_body:
        arr = (ctypes.c_ubyte * (n_body * abi.VAL_SIZE)).from_address(body_ptr)
        body = memoryview(arr).cast("B")[abi.PAYLOAD :: abi.VAL_SIZE].tobytes()
    return Response(status, headers, body), None, None


def _raw_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Headers as the byte-string export takes them (see rawabi.to_raw)."""
    if all(k.isascii() and v.isascii() for k, v in headers):
        return headers
    return tuple((rawabi.to_raw(k), rawabi.to_raw(v)) for k, v in headers)


def new_request(
    function_name: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
) -> Request:
    """A Request with a fresh invocation id (CLI, bench and tests)."""
    return Request(uuid.uuid4().hex, function_name, tuple(headers), bytes(body))


__all__ = ["LoadedFunction", "RequestTooLarge", "Sandbox", "new_request"]
