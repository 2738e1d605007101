"""Fast conversions between Python values and wasmtime's C component values.

wasmtime-py converts a `list<u8>` one element at a time in Python (about 1 ms per KiB).
A `wasmtime_component_val_t` is a fixed-size struct (kind byte + union), so a byte list is
built with two strided slice assignments into one buffer and copied with one memmove, and
read back with one strided memoryview slice. Only the shapes this world uses are covered:
strings, byte lists, header lists, records, options, results, variants and enums.

Ownership: values written here are allocated with wasmtime's allocators (the `*_new*`
functions), so wasmtime may take them (host-call results) or `val_delete` may free them
(call parameters, after the call).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from ctypes import byref
from typing import Any

from wasmtime import _ffi as ffi

Val = ffi.wasmtime_component_val_t
VAL_SIZE = ctypes.sizeof(Val)
PAYLOAD = Val.of.offset

K_BOOL = ffi.WASMTIME_COMPONENT_BOOL.value
K_U8 = ffi.WASMTIME_COMPONENT_U8.value
K_U16 = ffi.WASMTIME_COMPONENT_U16.value
K_U32 = ffi.WASMTIME_COMPONENT_U32.value
K_S64 = ffi.WASMTIME_COMPONENT_S64.value
K_U64 = ffi.WASMTIME_COMPONENT_U64.value
K_STRING = ffi.WASMTIME_COMPONENT_STRING.value
K_LIST = ffi.WASMTIME_COMPONENT_LIST.value
K_RECORD = ffi.WASMTIME_COMPONENT_RECORD.value
K_TUPLE = ffi.WASMTIME_COMPONENT_TUPLE.value
K_VARIANT = ffi.WASMTIME_COMPONENT_VARIANT.value
K_ENUM = ffi.WASMTIME_COMPONENT_ENUM.value
K_OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
K_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value

_val_new = ffi.wasmtime_component_val_new
_vallist_new_uninit = ffi.wasmtime_component_vallist_new_uninit
_valrecord_new_uninit = ffi.wasmtime_component_valrecord_new_uninit
_valtuple_new_uninit = ffi.wasmtime_component_valtuple_new_uninit
_byte_vec_new_uninit = ffi.wasm_byte_vec_new_uninitialized
_val_delete = ffi.wasmtime_component_val_delete
_memmove = ctypes.memmove
_addressof = ctypes.addressof


class AbiError(TypeError):
    """A value did not have the shape the WIT type requires."""


def delete(val: Val) -> None:
    """Free everything `val` owns (safe on values built here or returned by wasmtime)."""
    _val_delete(byref(val))


# ---- names (wasm_byte_vec_t) --------------------------------------------------------------


def name_vec(data: bytes) -> ffi.wasm_byte_vec_t:
    """A wasmtime-owned byte vector holding `data` (used for strings, enum and field names)."""
    vec = ffi.wasm_byte_vec_t()
    n = len(data)
    _byte_vec_new_uninit(byref(vec), n)
    if n:
        _memmove(vec.data, data, n)
    return vec


def read_name(vec: ffi.wasm_byte_vec_t) -> str:
    """Decode a wasm_byte_vec_t as UTF-8."""
    if not vec.size:
        return ""
    return ctypes.string_at(vec.data, vec.size).decode("utf-8")


# ---- writers ------------------------------------------------------------------------------


def put_bool(val: Val, value: bool) -> None:
    """Write a `bool`."""
    val.kind = K_BOOL
    val.of.boolean = bool(value)


def put_u16(val: Val, value: int) -> None:
    """Write a `u16`."""
    val.kind = K_U16
    val.of.u16 = value


def put_u32(val: Val, value: int) -> None:
    """Write a `u32`."""
    val.kind = K_U32
    val.of.u32 = value


def put_enum(val: Val, case: str) -> None:
    """Write an enum case."""
    val.kind = K_ENUM
    val.of.enumeration = name_vec(case.encode("utf-8"))


def put_s64(val: Val, value: int) -> None:
    """Write an `s64`."""
    val.kind = K_S64
    val.of.s64 = value


def put_string(val: Val, value: str) -> None:
    """Write a `string`."""
    if not isinstance(value, str):
        raise AbiError(f"expected str, got {type(value).__name__}")
    val.kind = K_STRING
    val.of.string = name_vec(value.encode("utf-8"))


def put_bytes(val: Val, data: bytes | bytearray | memoryview) -> None:
    """Write a `list<u8>` in bulk: two strided slice assignments straight into C memory."""
    n = len(data)
    raw = ffi.wasmtime_component_vallist_t()
    _vallist_new_uninit(byref(raw), n)
    if n:
        size = n * VAL_SIZE
        addr = ctypes.cast(raw.data, ctypes.c_void_p).value
        view = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")  # type: ignore[arg-type]
        view[0::VAL_SIZE] = _u8_kinds(n)
        view[PAYLOAD::VAL_SIZE] = data
    val.kind = K_LIST
    val.of.list = raw


def put_headers(val: Val, headers: Sequence[tuple[str, str]]) -> None:
    """Write a `list<tuple<string, string>>`."""
    n = len(headers)
    raw = ffi.wasmtime_component_vallist_t()
    _vallist_new_uninit(byref(raw), n)
    for i, pair in enumerate(headers):
        name, value = pair
        tup = ffi.wasmtime_component_valtuple_t()
        _valtuple_new_uninit(byref(tup), 2)
        put_string(tup.data[0], name)
        put_string(tup.data[1], value)
        item = raw.data[i]
        item.kind = K_TUPLE
        item.of.tuple = tup
    val.kind = K_LIST
    val.of.list = raw


def start_record(val: Val, names: Sequence[bytes]) -> list[Val]:
    """Make `val` a record with these field names; returns the field slots to fill in order."""
    raw = ffi.wasmtime_component_valrecord_t()
    _valrecord_new_uninit(byref(raw), len(names))
    slots = []
    for i, name in enumerate(names):
        entry = raw.data[i]
        entry.name = name_vec(name)
        slots.append(entry.val)
    val.kind = K_RECORD
    val.of.record = raw
    return slots


def boxed(fill: object, *args: object) -> ctypes._Pointer:  # type: ignore[type-arg]
    """A heap-allocated value written by `fill(val, *args)` (for option/result/variant payloads)."""
    tmp = Val()
    fill(tmp, *args)  # type: ignore[operator]
    return _val_new(byref(tmp))  # type: ignore[no-any-return]


def put_option(val: Val, payload: ctypes._Pointer | None) -> None:  # type: ignore[type-arg]
    """Write an `option<T>`: `payload` from `boxed(...)`, or None."""
    val.kind = K_OPTION
    val.of.option = payload if payload is not None else ctypes.POINTER(Val)()


def put_result(val: Val, ok: bool, payload: ctypes._Pointer | None = None) -> None:  # type: ignore[type-arg]
    """Write a `result<T, E>`: `payload` from `boxed(...)`, or None for `_`."""
    val.kind = K_RESULT
    val.of.result.is_ok = ok
    val.of.result.val = payload if payload is not None else ctypes.POINTER(Val)()


def put_variant(val: Val, case: str, payload: ctypes._Pointer | None = None) -> None:  # type: ignore[type-arg]
    """Write a variant case with an optional payload from `boxed(...)`."""
    val.kind = K_VARIANT
    val.of.variant.discriminant = name_vec(case.encode("utf-8"))
    val.of.variant.val = payload if payload is not None else ctypes.POINTER(Val)()


# ---- readers ------------------------------------------------------------------------------


def get_string(val: Val) -> str:
    """Read a `string`."""
    if val.kind != K_STRING:
        raise AbiError(f"expected string, got kind {val.kind}")
    return read_name(val.of.string)


def get_bytes(val: Val) -> bytes:
    """Read a `list<u8>` with one strided slice over the C array."""
    if val.kind != K_LIST:
        raise AbiError(f"expected list<u8>, got kind {val.kind}")
    lst = val.of.list
    n = lst.size
    if not n:
        return b""
    addr = ctypes.cast(lst.data, ctypes.c_void_p).value
    arr = (ctypes.c_ubyte * (n * VAL_SIZE)).from_address(addr)  # type: ignore[arg-type]
    return memoryview(arr).cast("B")[PAYLOAD::VAL_SIZE].tobytes()


def get_headers(val: Val) -> list[tuple[str, str]]:
    """Read a `list<tuple<string, string>>`."""
    if val.kind != K_LIST:
        raise AbiError(f"expected a header list, got kind {val.kind}")
    lst = val.of.list
    out = []
    for i in range(lst.size):
        tup = lst.data[i].of.tuple
        out.append((get_string(tup.data[0]), get_string(tup.data[1])))
    return out


def get_fields(val: Val) -> list[Val]:
    """The field values of a record, in declaration order."""
    if val.kind != K_RECORD:
        raise AbiError(f"expected record, got kind {val.kind}")
    rec = val.of.record
    return [rec.data[i].val for i in range(rec.size)]


def get_option(val: Val) -> Val | None:
    """The payload of an `option<T>`, or None."""
    if val.kind != K_OPTION:
        raise AbiError(f"expected option, got kind {val.kind}")
    ptr = val.of.option
    return ptr.contents if ptr else None


def get_result(val: Val) -> tuple[bool, Val | None]:
    """(is_ok, payload or None) of a `result<T, E>`."""
    if val.kind != K_RESULT:
        raise AbiError(f"expected result, got kind {val.kind}")
    res = val.of.result
    return bool(res.is_ok), (res.val.contents if res.val else None)


def get_enum(val: Val) -> str:
    """The case name of an enum value."""
    if val.kind != K_ENUM:
        raise AbiError(f"expected enum, got kind {val.kind}")
    return read_name(val.of.enumeration)


def get_u16(val: Val) -> int:
    """Read a `u16`."""
    return int(val.of.u16)


def get_u32(val: Val) -> int:
    """Read a `u32`."""
    return int(val.of.u32)


def get_u64(val: Val) -> int:
    """Read a `u64`."""
    return int(val.of.u64)


def get_s64(val: Val) -> int:
    """Read an `s64`."""
    return int(val.of.s64)


# ---- borrowed parameters --------------------------------------------------------------------
#
# wasmtime_component_func_call only reads its parameters (it clones them into Rust values;
# wasmtime-py frees them afterwards), so a parameter tree can live entirely in one Python
# buffer: no wasmtime allocation, no val_delete, a few pack_into calls per request.

import struct

ENTRY_SIZE = ctypes.sizeof(ffi.wasmtime_component_valrecord_entry_t)
ENTRY_VAL = ffi.wasmtime_component_valrecord_entry_t.val.offset
_VEC = struct.Struct("<QQ")  # (size, data pointer): strings, lists, records, tuples
_KIND = struct.Struct("<B")
_REQUEST_NAMES = (b"invocation-id", b"function-name", b"headers", b"body")
_NAME_BUFS = [ctypes.create_string_buffer(n, len(n)) for n in _REQUEST_NAMES]
_NAME_ADDRS = [ctypes.addressof(b) for b in _NAME_BUFS]


_FIXED = struct.Struct("<B7xQQ8x" + "QQB7xQQ8x" * 4)  # param val + 4 record entries
assert _FIXED.size == VAL_SIZE + 4 * ENTRY_SIZE and PAYLOAD == 8 and ENTRY_VAL == 16
_U8_KINDS = bytes((K_U8,)) * 4096


def _u8_kinds(n: int) -> bytes:
    return _U8_KINDS[:n] if n <= len(_U8_KINDS) else bytes((K_U8,)) * n


# Allocating (and page-faulting) a fresh 32-byte-per-body-byte buffer costs more than
# filling it, so each thread keeps one and reuses it; the u8 kind bytes of the body slots
# stay in place between requests. Buffers above SCRATCH_KEEP are not kept.
SCRATCH_KEEP = 36 * 1024 * 1024  # a 1 MiB body (32 MiB of values) plus headers


class _Scratch(threading.local):
    buf: bytearray | None = None
    cbuf: Any = None
    base: int = 0
    clean: int = 0  # body slots, from the start of the body region, known to be K_U8


_SCRATCH = _Scratch()


def _scratch(total: int) -> tuple[bytearray, Any, int, int]:
    """(buffer, ctypes view, address, clean slots) with at least `total` bytes."""
    sc = _SCRATCH
    if sc.buf is not None and len(sc.buf) >= total:
        return sc.buf, sc.cbuf, sc.base, sc.clean
    buf = bytearray(max(total, 4096))
    cbuf = ctypes.c_char.from_buffer(buf)
    base = ctypes.addressof(cbuf)
    if total <= SCRATCH_KEEP:
        sc.buf, sc.cbuf, sc.base, sc.clean = buf, cbuf, base, 0
    return buf, cbuf, base, 0


class BorrowedRequest:
    """The `request` record laid out in one buffer, valid until the thread's next request.

    The buffer is the calling thread's scratch buffer (reused by its next BorrowedRequest),
    so build it right before the call and drop it right after.
    """

    __slots__ = ("address", "buf", "cbuf")

    def __init__(
        self,
        invocation_id: str,
        function_name: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        body_as_string: bool = False,
    ) -> None:
        """`body_as_string`: `body` is UTF-8 text to pass as a `string` (byte-string export)."""
        inv = invocation_id.encode("utf-8")
        fname = function_name.encode("utf-8")
        nh = len(headers)
        nb = len(body)
        # Layout: [param val + 4 record entries][nb u8 vals][nh tuple vals][2*nh string vals]
        #         [string bytes]
        o_body = _FIXED.size
        o_tuples = o_body + (((nb + 15) & ~15) if body_as_string else nb * VAL_SIZE)
        o_pairs = o_tuples + nh * VAL_SIZE
        o_str = o_pairs + 2 * nh * VAL_SIZE
        if nh:
            pairs = [(k.encode("utf-8"), v.encode("utf-8")) for k, v in headers]
            extra = sum(len(k) + len(v) for k, v in pairs)
        else:
            pairs = []
            extra = 0
        total = o_str + len(inv) + len(fname) + extra
        buf, cbuf, base, clean = _scratch(total)
        a_inv = o_str
        a_fname = a_inv + len(inv)
        buf[a_inv:a_fname] = inv
        buf[a_fname : a_fname + len(fname)] = fname
        _FIXED.pack_into(
            buf,
            0,
            K_RECORD,
            4,
            base + VAL_SIZE,
            13,
            _NAME_ADDRS[0],
            K_STRING,
            len(inv),
            base + a_inv,
            13,
            _NAME_ADDRS[1],
            K_STRING,
            len(fname),
            base + a_fname,
            7,
            _NAME_ADDRS[2],
            K_LIST,
            nh,
            base + o_tuples,
            4,
            _NAME_ADDRS[3],
            K_STRING if body_as_string else K_LIST,
            nb,
            base + o_body,
        )
        if body_as_string:
            buf[o_body : o_body + nb] = body
            nb = 0  # no u8 slots left clean
        elif nb:
            end = o_tuples
            if nb > clean:  # kind bytes of slots [clean, nb) may hold older data
                buf[o_body + clean * VAL_SIZE : end : VAL_SIZE] = _u8_kinds(nb - clean)
            buf[o_body + PAYLOAD : end : VAL_SIZE] = body
        _SCRATCH.clean = nb if buf is _SCRATCH.buf else 0  # what follows the body dirties the rest
        if nh:
            at = a_fname + len(fname)
            pack = _VEC.pack_into
            for j, (k, v) in enumerate(pairs):
                t = o_tuples + j * VAL_SIZE
                p = o_pairs + 2 * j * VAL_SIZE
                buf[t] = K_TUPLE
                pack(buf, t + PAYLOAD, 2, base + p)
                for s in (k, v):
                    buf[p] = K_STRING
                    pack(buf, p + PAYLOAD, len(s), base + at)
                    buf[at : at + len(s)] = s
                    at += len(s)
                    p += VAL_SIZE
        self.buf = buf
        self.cbuf = cbuf
        self.address = base

    @property
    def val(self) -> Val:
        """The parameter value (for tests and debugging)."""
        return Val.from_address(self.address)
