"""The optional C accelerator (`_fastcall`): loaded and bound to wasmtime's C functions once.

`load()` returns the bound module, or None when the extension was not built (the sandbox then
makes the same calls through ctypes). FLOTILLA_SANDBOX_CTYPES=1 forces the ctypes path (tests
run both; the bench reports which one ran).
"""

from __future__ import annotations

import ctypes
import logging
from types import ModuleType

from flotilla.sandbox import abi, capi

log = logging.getLogger(__name__)

_BOUND: ModuleType | None = None

# Order matches _fastcall.bind's parameters.
_FUNCS = (
    capi.store_new,
    capi.store_context,
    capi.store_delete,
    capi.store_limiter,
    capi.set_epoch_deadline,
    capi.wasi_config_new,
    capi.wasi_config_set_env,
    capi.wasi_config_set_stdout_custom,
    capi.wasi_config_set_stderr_custom,
    capi.context_set_wasi,
    capi.linker_instantiate,
    capi.instance_get_func,
    capi.func_call,
    capi.func_post_return,
    capi.val_delete,
)


def load() -> ModuleType | None:
    """The bound `_fastcall` module, or None if it is not built or does not import."""
    global _BOUND
    if _BOUND is None:
        try:
            from flotilla.sandbox import _fastcall  # type: ignore[attr-defined]
        except ImportError as exc:
            log.info("sandbox C accelerator unavailable (%s); using ctypes", exc)
            return None
        mismatch = _layout_mismatch(_fastcall)
        if mismatch:
            log.warning(
                "sandbox C accelerator disagrees with wasmtime-py (%s); using ctypes", mismatch
            )
            return None
        _fastcall.bind(*(ctypes.cast(f, ctypes.c_void_p).value for f in _FUNCS))
        _BOUND = _fastcall
    return _BOUND


def _layout_mismatch(module: ModuleType) -> str | None:
    """The first value layout constant the C code hard-codes that wasmtime-py disagrees on."""
    expected = {
        "VAL_SIZE": abi.VAL_SIZE,
        "VAL_PAYLOAD": abi.PAYLOAD,
        "ENTRY_SIZE": abi.ENTRY_SIZE,
        "ENTRY_VAL": abi.ENTRY_VAL,
        "K_U8": abi.K_U8,
        "K_U16": abi.K_U16,
        "K_STRING": abi.K_STRING,
        "K_LIST": abi.K_LIST,
        "K_RECORD": abi.K_RECORD,
        "K_TUPLE": abi.K_TUPLE,
        "K_RESULT": abi.K_RESULT,
    }
    for name, value in expected.items():
        if getattr(module, name, None) != value:
            return f"{name}={getattr(module, name, None)}, wasmtime-py says {value}"
    if not hasattr(module, "drop"):  # built from an older _fastcall.c: reinstall to rebuild
        return "an older build without drop() (reinstall Flotilla to rebuild it)"
    if capi.INSTANCE_SIZE > 64 or capi.FUNC_SIZE > 64:
        return "instance or func handle larger than 64 bytes"
    return None


def path_name(module: ModuleType | None) -> str:
    """How invocations are made: "c-extension" or "ctypes"."""
    return "c-extension" if module is not None else "ctypes"
