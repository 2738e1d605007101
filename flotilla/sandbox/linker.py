"""The one Linker: WASI 0.2 plus the five flotilla host interfaces bridged to HostClients.

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
from dataclasses import dataclass
from typing import Any

from wasmtime import Engine
from wasmtime import _ffi as ffi
from wasmtime.component import Linker

from flotilla.hosts.base import HostError, InvocationContext
from flotilla.sandbox import abi

log = logging.getLogger(__name__)

PACKAGE = "flotilla:function"
VERSION = "0.1.0"
INTERFACES = ("types", "cache", "http", "s3", "dynamodb", "log")


def interface_name(name: str) -> str:
    """Fully qualified import name of one of this world's interfaces."""
    return f"{PACKAGE}/{name}@{VERSION}"


# Variant cases of each interface's `error`, and which of them carry a string.
ERROR_CASES: dict[str, dict[str, bool]] = {
    "cache": {"unavailable": True, "invalid-argument": True},
    "http": {
        "denied": True,
        "timeout": False,
        "connection": True,
        "invalid-request": True,
        "too-large": False,
    },
    "s3": {"denied": True, "unavailable": True, "invalid-argument": True},
    "dynamodb": {"denied": True, "unavailable": True, "invalid-argument": True},
}
# What the guest sees when a host raises something that is not a HostError.
FALLBACK_CASE = {
    "cache": "unavailable",
    "http": "connection",
    "s3": "unavailable",
    "dynamodb": "unavailable",
}
LOG_LEVELS = ("debug", "info", "warn", "error")


class CurrentInvocation(threading.local):
    """The InvocationContext of the invocation running on this thread (None between calls)."""

    ctx: InvocationContext | None = None


def error_variant(interface: str, case: str, detail: str | None) -> tuple[str, str | None]:
    """Map a host's (case, detail) onto a valid case of the interface's error variant."""
    cases = ERROR_CASES[interface]
    if case not in cases:
        detail = f"{case}: {detail}" if detail else case
        case = FALLBACK_CASE[interface]
    if cases[case]:
        return case, detail or ""
    return case, None


def deadline_error(interface: str) -> tuple[str, str | None]:
    """The error a host call made after the invocation's deadline gets."""
    if interface == "http":
        return "timeout", None
    return "unavailable", "invocation deadline exceeded"


# A host function: reads args from the C values and returns a writer for result slot 0.
Reader = Callable[[Any, InvocationContext, "ctypes._Pointer[Any]"], Callable[[abi.Val], None]]


@dataclass(frozen=True)
class HostFunc:
    """One imported function: interface, WIT name, and its bridge."""

    interface: str
    name: str
    bridge: Reader
    returns: bool = True


def _ok(write: Callable[[abi.Val], None] | None) -> Callable[[abi.Val], None]:
    """Writer of `ok(payload)` (`ok` alone when `write` is None)."""

    def put(val: abi.Val) -> None:
        abi.put_result(val, True, abi.boxed(write) if write else None)

    return put


def _opt_bytes(data: bytes | None) -> Callable[[abi.Val], None]:
    def put(val: abi.Val) -> None:
        abi.put_option(val, None if data is None else abi.boxed(abi.put_bytes, data))

    return put


def _opt_string(text: str | None) -> Callable[[abi.Val], None]:
    def put(val: abi.Val) -> None:
        abi.put_option(val, None if text is None else abi.boxed(abi.put_string, text))

    return put


def _s(args: Any, i: int) -> str:
    return abi.get_string(args[i])


def _b(args: Any, i: int) -> bytes:
    return abi.get_bytes(args[i])


def _cache_get(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    return _ok(_opt_bytes(hosts.cache.get(ctx, _s(a, 0))))


def _cache_set(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    hosts.cache.set(ctx, _s(a, 0), _b(a, 1), abi.get_u64(a[2]))
    return _ok(None)


def _cache_set_if_absent(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    written = bool(hosts.cache.set_if_absent(ctx, _s(a, 0), _b(a, 1), abi.get_u64(a[2])))
    return _ok(lambda v: abi.put_bool(v, written))


def _cache_delete(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    hosts.cache.delete(ctx, _s(a, 0))
    return _ok(None)


def _cache_increment(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    value = int(hosts.cache.increment(ctx, _s(a, 0), abi.get_s64(a[1]), abi.get_u64(a[2])))
    return _ok(lambda v: abi.put_s64(v, value))


def _http_invoke(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    method, url, headers, body, timeout = abi.get_fields(a[0])
    t = abi.get_option(timeout)
    status, out_headers, out_body = hosts.http.invoke(
        ctx,
        abi.get_string(method),
        abi.get_string(url),
        abi.get_headers(headers),
        abi.get_bytes(body),
        None if t is None else abi.get_u32(t),
    )

    def put_response(val: abi.Val) -> None:
        s, h, b = abi.start_record(val, (b"status", b"headers", b"body"))
        abi.put_u16(s, int(status))
        abi.put_headers(h, list(out_headers))
        abi.put_bytes(b, out_body)

    return _ok(put_response)


def _s3_get(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    return _ok(_opt_bytes(hosts.s3.get_object(ctx, _s(a, 0), _s(a, 1))))


def _s3_put(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    ct = abi.get_option(a[3])
    hosts.s3.put_object(
        ctx, _s(a, 0), _s(a, 1), _b(a, 2), None if ct is None else abi.get_string(ct)
    )
    return _ok(None)


def _s3_delete(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    hosts.s3.delete_object(ctx, _s(a, 0), _s(a, 1))
    return _ok(None)


def _ddb_get(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    return _ok(_opt_string(hosts.dynamodb.get_item(ctx, _s(a, 0), _s(a, 1))))


def _ddb_put(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    hosts.dynamodb.put_item(ctx, _s(a, 0), _s(a, 1))
    return _ok(None)


def _ddb_delete(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    hosts.dynamodb.delete_item(ctx, _s(a, 0), _s(a, 1))
    return _ok(None)


def _log(hosts: Any, ctx: InvocationContext, a: Any) -> Callable[[abi.Val], None]:
    hosts.log.log(ctx, abi.get_enum(a[0]), _s(a, 1))
    return lambda val: None


HOST_FUNCS = (
    HostFunc("cache", "get", _cache_get),
    HostFunc("cache", "set", _cache_set),
    HostFunc("cache", "set-if-absent", _cache_set_if_absent),
    HostFunc("cache", "delete", _cache_delete),
    HostFunc("cache", "increment", _cache_increment),
    HostFunc("http", "invoke", _http_invoke),
    HostFunc("s3", "get-object", _s3_get),
    HostFunc("s3", "put-object", _s3_put),
    HostFunc("s3", "delete-object", _s3_delete),
    HostFunc("dynamodb", "get-item", _ddb_get),
    HostFunc("dynamodb", "put-item", _ddb_put),
    HostFunc("dynamodb", "delete-item", _ddb_delete),
    HostFunc("log", "log", _log, returns=False),
)


def _wasmtime_error(message: str) -> int:
    ptr = ffi.wasmtime_error_new(ctypes.create_string_buffer(message.encode("utf-8")))
    return ctypes.cast(ptr, ctypes.c_void_p).value or 0


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _no_finalizer(_data: Any) -> None:
    return None


class HostLinker:
    """The process-wide Linker and the ffi callbacks it holds (kept alive here)."""

    def __init__(self, engine: Engine, hosts: Any) -> None:
        self.hosts = hosts
        self.current = CurrentInvocation()
        self.linker = Linker(engine)
        self.linker.add_wasip2()
        self._callbacks: list[Any] = []
        with self.linker.root() as root:
            for iface in ("cache", "http", "s3", "dynamodb", "log"):
                with root.add_instance(interface_name(iface)) as inst:
                    for fn in HOST_FUNCS:
                        if fn.interface == iface:
                            self._add(inst, fn)

    def _add(self, inst: Any, fn: HostFunc) -> None:
        callback = ffi.wasmtime_component_func_callback_t(self._make_callback(fn))
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

    def _make_callback(self, fn: HostFunc) -> Callable[..., int]:
        hosts = self.hosts
        current = self.current
        iface = fn.interface
        where = f"{iface}.{fn.name}"

        def callback(
            _data: Any, _context: Any, _ty: Any, args: Any, _nargs: int, results: Any, nresults: int
        ) -> int:
            try:
                ctx = current.ctx
                if ctx is None:
                    return _wasmtime_error(f"{where} called outside an invocation")
                ctx.host_calls += 1
                if time.monotonic() >= ctx.deadline:
                    if not fn.returns:
                        return 0
                    case, detail = deadline_error(iface)
                    _write_error(results[0], case, detail)
                    return 0
                try:
                    write = fn.bridge(hosts, ctx, args)
                except HostError as exc:
                    if not fn.returns:
                        return 0
                    case, detail = error_variant(iface, exc.case, exc.detail)
                    _write_error(results[0], case, detail)
                    return 0
                except abi.AbiError:
                    raise
                except Exception as exc:  # a host bug: the guest sees `unavailable`
                    log.exception("host %s failed", where)
                    if not fn.returns:
                        return 0
                    case = FALLBACK_CASE[iface]
                    _write_error(
                        results[0], case, f"internal error in {where}: {type(exc).__name__}"
                    )
                    return 0
                if nresults:
                    write(results[0])
                return 0
            except BaseException as exc:  # never unwind through wasm frames
                log.exception("host bridge %s failed", where)
                return _wasmtime_error(f"host bridge {where} failed: {exc!r}")

        return callback


def _write_error(val: abi.Val, case: str, detail: str | None) -> None:
    payload = None if detail is None else abi.boxed(abi.put_string, detail)
    abi.put_result(val, False, abi.boxed(abi.put_variant, case, payload))
