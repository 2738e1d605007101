"""Raw wasmtime C entry points with `void*` argument types, for the per-invocation hot path.

wasmtime-py's wrappers check pointer types and wrap every handle in a Python object; on the
hot path (a few microseconds per call matter) we call the same C functions with plain
integer addresses. These are separate function objects (`dll[name]`), so wasmtime-py's own
bindings are untouched.
"""

from __future__ import annotations

import ctypes
import struct
from ctypes import c_bool, c_int64, c_size_t, c_uint64, c_void_p
from typing import Any

from wasmtime import _ffi as ffi

_dll = ffi.dll


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = _dll[name]
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


store_new = _fn("wasmtime_store_new", c_void_p, c_void_p, c_void_p, c_void_p)
store_context = _fn("wasmtime_store_context", c_void_p, c_void_p)
store_delete = _fn("wasmtime_store_delete", None, c_void_p)
store_limiter = _fn(
    "wasmtime_store_limiter", None, c_void_p, c_int64, c_int64, c_int64, c_int64, c_int64
)
set_epoch_deadline = _fn("wasmtime_context_set_epoch_deadline", None, c_void_p, c_uint64)
wasi_config_new = _fn("wasi_config_new", c_void_p)
wasi_config_set_env = _fn("wasi_config_set_env", c_bool, c_void_p, c_size_t, c_void_p, c_void_p)
wasi_config_set_stdout_custom = _fn(
    "wasi_config_set_stdout_custom", None, c_void_p, c_void_p, c_void_p, c_void_p
)
wasi_config_set_stderr_custom = _fn(
    "wasi_config_set_stderr_custom", None, c_void_p, c_void_p, c_void_p, c_void_p
)
context_set_wasi = _fn("wasmtime_context_set_wasi", c_void_p, c_void_p, c_void_p)
linker_instantiate = _fn(
    "wasmtime_component_linker_instantiate", c_void_p, c_void_p, c_void_p, c_void_p, c_void_p
)
instance_get_func = _fn(
    "wasmtime_component_instance_get_func", c_bool, c_void_p, c_void_p, c_void_p, c_void_p
)
func_call = _fn(
    "wasmtime_component_func_call",
    c_void_p,
    c_void_p,
    c_void_p,
    c_void_p,
    c_size_t,
    c_void_p,
    c_size_t,
)
func_post_return = _fn("wasmtime_component_func_post_return", c_void_p, c_void_p, c_void_p)
val_delete = _fn("wasmtime_component_val_delete", None, c_void_p)

INSTANCE_SIZE = ctypes.sizeof(ffi.wasmtime_component_instance_t)
FUNC_SIZE = ctypes.sizeof(ffi.wasmtime_component_func_t)


def address(obj: Any) -> int:
    """Integer address of a ctypes pointer or object (0 for NULL)."""
    if isinstance(obj, ctypes._Pointer):
        return ctypes.cast(obj, c_void_p).value or 0
    return ctypes.addressof(obj)


def error_from(ptr: int) -> Any:
    """Wrap a returned wasmtime_error_t* (takes ownership) as wasmtime-py's WasmtimeError."""
    from wasmtime import WasmtimeError

    return WasmtimeError._from_ptr(ctypes.cast(ptr, ctypes.POINTER(ffi.wasmtime_error_t)))


_VEC = struct.Struct("<QQ")


def read_vec(addr: int) -> tuple[int, int]:
    """(size, data address) of a vec-like struct at `addr`."""
    return _VEC.unpack(ctypes.string_at(addr, 16))  # type: ignore[return-value]
