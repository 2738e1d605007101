"""The one Linker: WASI 0.2 plus every host interface of `flotilla/hosts/registry.py`.

Each host function is registered with our own ffi callback (not wasmtime-py's generic
`add_func`, which converts every list element in Python and keeps the last exception in a
process global). The callback finds the running invocation's InvocationContext in a
thread-local set by the sandbox around the guest call (an invocation runs synchronously on
one thread), reads the arguments with `abi`, calls the host and writes the result.

Error policy: HostError(case, detail) becomes the interface's error variant; any other
exception is a host bug, logged, and the guest sees `unavailable` (`connection` for http). A
call after the invocation's deadline fails with `timeout` (http) or `unavailable` without
reaching the host.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from wasmtime import Engine
from wasmtime import _ffi as ffi
from wasmtime.component import Linker

from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.interface import HostFunc, Interface, write_error
from flotilla.sandbox import abi

log = logging.getLogger(__name__)

PACKAGE = "flotilla:function"
VERSION = "0.1.1"


def interface_name(name: str) -> str:
    """Fully qualified import name of one of this world's interfaces.

    Components built against an older 0.1.x WIT link too: wasmtime matches imports to
    definitions by semver (0.1.0 imports find these 0.1.1 definitions).
    """
    return f"{PACKAGE}/{name}@{VERSION}"


class CurrentInvocation(threading.local):
    """The InvocationContext of the invocation running on this thread (None between calls)."""

    ctx: InvocationContext | None = None


def _wasmtime_error(message: str) -> int:
    ptr = ffi.wasmtime_error_new(ctypes.create_string_buffer(message.encode("utf-8")))
    return ctypes.cast(ptr, ctypes.c_void_p).value or 0


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _no_finalizer(_data: Any) -> None:
    return None


class HostLinker:
    """The process-wide Linker and the ffi callbacks it holds (kept alive here)."""

    def __init__(self, engine: Engine, hosts: Any) -> None:
        from flotilla.hosts.registry import INTERFACES  # here: the host modules import abi

        self.hosts = hosts
        self.interfaces: tuple[Interface, ...] = INTERFACES
        self.current = CurrentInvocation()
        self.linker = Linker(engine)
        self.linker.add_wasip2()
        self._callbacks: list[Any] = []
        with self.linker.root() as root:
            for iface in self.interfaces:
                client = None
                if iface.client is not None and hosts is not None:
                    client = getattr(hosts, iface.client, None)
                with root.add_instance(interface_name(iface.name)) as inst:
                    for fn in iface.funcs:
                        self._add(inst, iface, fn, client)

    def _add(self, inst: Any, iface: Interface, fn: HostFunc, client: Any) -> None:
        callback = ffi.wasmtime_component_func_callback_t(self._make_callback(iface, fn, client))
        self._callbacks.append(callback)
        name = fn.name.encode("utf-8")
        err = ffi.wasmtime_component_linker_instance_add_func(
            inst.ptr(),
            ctypes.create_string_buffer(name),
            len(name),
            callback,
            None,
            _no_finalizer,
        )
        if err:
            from wasmtime import WasmtimeError

            raise WasmtimeError._from_ptr(err)

    def _make_callback(self, iface: Interface, fn: HostFunc, client: Any) -> Callable[..., int]:
        current = self.current
        where = f"{iface.name}.{fn.name}"
        bridge = fn.bridge
        missing = iface.client is not None and client is None
        # A call past the deadline: the interface's deadline case, unless it has no errors
        # (`invocation` answers anyway: its remaining-ms is then 0).
        deadline_case = iface.deadline if iface.errors and fn.returns else None

        def callback(
            _data: Any, _context: Any, _ty: Any, args: Any, _nargs: int, results: Any, nresults: int
        ) -> int:
            try:
                ctx = current.ctx
                if ctx is None:
                    return _wasmtime_error(f"{where} called outside an invocation")
                ctx.host_calls += 1
                if deadline_case is not None and time.monotonic() >= ctx.deadline:
                    write_error(results[0], *deadline_case)
                    return 0
                try:
                    if missing:
                        raise HostError(
                            "unavailable", f"{iface.name} is not configured on this worker"
                        )
                    write = bridge(client, ctx, args)
                except HostError as exc:
                    if not (fn.returns and iface.errors):
                        return 0
                    write_error(results[0], *iface.error(exc.case, exc.detail))
                    return 0
                except abi.AbiError:
                    raise
                except Exception as exc:  # a host bug: the guest sees the fallback case
                    log.exception("host %s failed", where)
                    if not (fn.returns and iface.errors):
                        return 0
                    write_error(
                        results[0], *iface.error(
                            iface.fallback, f"internal error in {where}: {type(exc).__name__}"
                        )
                    )
                    return 0
                if nresults:
                    write(results[0])
                return 0
            except BaseException as exc:  # never unwind through wasm frames
                log.exception("host bridge %s failed", where)
                return _wasmtime_error(f"host bridge {where} failed: {exc!r}")

        return callback
