"""Per-invocation WASI context: the function's env only, no files, no network, captured output.

stdout and stderr go to the invocation's LogSink (never the worker's own stdout), capped at
OUTPUT_CAP bytes per invocation. The capture callbacks are two process-wide ffi functions;
each store's WASI context carries an integer key into `OutputRouter`, so no per-invocation
callback object is created and nothing depends on wasmtime-py's global slabs.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from collections.abc import Mapping
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from flotilla.config import FunctionConfig
from flotilla.hosts.base import InvocationContext
from flotilla.sandbox import capi

log = logging.getLogger(__name__)

OUTPUT_CAP = 64 * 1024
_OutputFn = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t
)
_FinalizeFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class CapturedOutput:
    """One invocation's stdout+stderr: appended to its logs until OUTPUT_CAP bytes."""

    def __init__(self, ctx: InvocationContext, cap: int = OUTPUT_CAP) -> None:
        self.ctx = ctx
        self.cap = cap
        self.size = 0
        self.dropped = 0
        self.stderr_tail = b""

    def write(self, stream: str, data: bytes) -> None:
        """Record one write (truncated or dropped past the cap)."""
        if stream == "stderr":
            self.stderr_tail = (self.stderr_tail + data)[-2048:]
        room = self.cap - self.size
        if room <= 0:
            self.dropped += len(data)
            return
        chunk = data[:room]
        self.dropped += len(data) - len(chunk)
        self.size += len(chunk)
        text = chunk.decode("utf-8", "replace").rstrip("\n")
        if text:
            self.ctx.logs.add(stream, text)


class OutputRouter:
    """Maps the key a WASI context carries to the CapturedOutput of its invocation."""

    def __init__(self) -> None:
        self._sinks: dict[int, CapturedOutput] = {}
        self._keys = itertools.count(1)
        self._stdout = _OutputFn(self._make("stdout"))
        self._stderr = _OutputFn(self._make("stderr"))
        self._finalize = _FinalizeFn(lambda _data: None)
        self._stdout_addr = ctypes.cast(self._stdout, ctypes.c_void_p).value
        self._stderr_addr = ctypes.cast(self._stderr, ctypes.c_void_p).value
        self._finalize_addr = ctypes.cast(self._finalize, ctypes.c_void_p).value

    def _make(self, stream: str) -> Any:
        sinks = self._sinks

        def write(data: Any, ptr: Any, size: int) -> int:
            sink = sinks.get(data or 0)
            if sink is not None and size:
                try:
                    sink.write(stream, ctypes.string_at(ptr, size))
                except Exception:
                    log.exception("capturing guest %s failed", stream)
            return size

        return write

    def register(self, sink: CapturedOutput) -> int:
        """A fresh key for `sink`."""
        key = next(self._keys)  # itertools.count is atomic under the GIL
        self._sinks[key] = sink
        return key

    def unregister(self, key: int) -> None:
        """Forget a key once its store is gone."""
        self._sinks.pop(key, None)

    def raw_wasi_config(self, key: int, env: GuestEnv, invocation_id: str) -> int:
        """A raw wasi_config_t* (consumed by set_wasi): `env` + the invocation id, output to `key`."""
        cfg = capi.wasi_config_new()
        values = env.values_type(*env.values, invocation_id.encode("utf-8"))
        if not capi.wasi_config_set_env(
            cfg, env.count, env.names_address, ctypes.addressof(values)
        ):
            raise wasmtime.WasmtimeError("failed to configure the guest environment")
        capi.wasi_config_set_stdout_custom(cfg, self._stdout_addr, key, self._finalize_addr)
        capi.wasi_config_set_stderr_custom(cfg, self._stderr_addr, key, self._finalize_addr)
        return cfg  # type: ignore[no-any-return]

    def wasi_config(self, key: int, env: Mapping[str, str]) -> wasmtime.WasiConfig:
        """A WasiConfig with exactly `env`, empty stdin, output routed to `key`, no network."""
        wasi = wasmtime.WasiConfig()
        wasi.env = list(env.items())
        ptr = wasi.ptr()
        ffi.wasi_config_set_stdout_custom(ptr, self._stdout, key, self._finalize)
        ffi.wasi_config_set_stderr_custom(ptr, self._stderr, key, self._finalize)
        return wasi


def guest_env(ctx: InvocationContext) -> dict[str, str]:
    """The environment a guest sees: its config's env plus the two FLOTILLA_ variables."""
    env = dict(ctx.config.env)
    env["FLOTILLA_FUNCTION_NAME"] = ctx.config.name
    env["FLOTILLA_INVOCATION_ID"] = ctx.invocation_id
    return env


class GuestEnv:
    """A function's environment as C arrays, built once per config; the invocation id is last."""

    def __init__(self, config: FunctionConfig) -> None:
        env = dict(config.env)
        env["FLOTILLA_FUNCTION_NAME"] = config.name
        names = [k.encode("utf-8") for k in env] + [b"FLOTILLA_INVOCATION_ID"]
        self.values = tuple(v.encode("utf-8") for v in env.values())
        self.count = len(names)
        self.values_type = ctypes.c_char_p * self.count
        self._names = self.values_type(*names)
        self._keep = names
        self.names = tuple(names)  # the same, as bytes, for the C accelerator
        self.names_address = ctypes.addressof(self._names)
