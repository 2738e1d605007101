"""What a host interface declares so the linker can bridge it: one `Interface` per WIT interface.

A host interface is one module under `flotilla/hosts/` holding three things: its pooled
client (built once per process, kept in `HostClients`), the bridges that read a guest call's
C values, call the client and write the result (this module's `HostFunc`), and an
`INTERFACE` describing both to the linker. `flotilla/hosts/__init__.py` lists every
`INTERFACE`; adding a capability means one new module and one line there.

A bridge gets `(client, ctx, args)`: the interface's client from `HostClients` (None when the
process has none, e.g. the dispatcher's validation sandbox or a worker without the store),
the invocation's context and the call's argument values. It returns a writer for result slot
0, or raises `HostError(case, detail)` to answer with the interface's `error` variant.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flotilla.hosts.base import HostError, InvocationContext
from flotilla.sandbox import abi

Writer = Callable[[abi.Val], None]
Bridge = Callable[[Any, InvocationContext, "ctypes._Pointer[Any]"], Writer]


@dataclass(frozen=True)
class HostFunc:
    """One imported function: its WIT name and its bridge."""

    name: str
    bridge: Bridge
    returns: bool = True  # False for functions without a result (log.log)


@dataclass(frozen=True)
class Interface:
    """One WIT interface the linker defines: its functions and its `error` variant."""

    name: str
    funcs: tuple[HostFunc, ...]
    # The cases of the interface's `error` variant and whether each carries a string.
    errors: Mapping[str, bool] = field(default_factory=dict)
    # The case a host bug (an exception that is not a HostError) and a call past the
    # invocation's deadline become.
    fallback: str = "unavailable"
    deadline: tuple[str, str | None] = ("unavailable", "invocation deadline exceeded")
    # The attribute of `HostClients` holding this interface's client (None: the bridges
    # need only the invocation context).
    client: str | None = None

    def error(self, case: str, detail: str | None) -> tuple[str, str | None]:
        """Map a host's (case, detail) onto a valid case of this interface's error variant."""
        if case not in self.errors:
            detail = f"{case}: {detail}" if detail else case
            case = self.fallback
        if self.errors[case]:
            return case, detail or ""
        return case, None


def require(client: Any, what: str) -> Any:
    """`client`, or `unavailable` when this process was built without it."""
    if client is None:
        raise HostError("unavailable", f"{what} is not configured on this worker")
    return client


# ---- argument readers and result writers shared by the bridges ---------------------------


def arg_string(args: Any, i: int) -> str:
    """Argument `i` as a string."""
    return abi.get_string(args[i])


def arg_bytes(args: Any, i: int) -> bytes:
    """Argument `i` as bytes (a `list<u8>`)."""
    return abi.get_bytes(args[i])


def ok(write: Writer | None = None) -> Writer:
    """Writer of `ok(payload)` (`ok` alone when `write` is None)."""

    def put(val: abi.Val) -> None:
        abi.put_result(val, True, abi.boxed(write) if write else None)

    return put


def ok_bool(value: bool) -> Writer:
    """Writer of `ok(value)` for a `result<bool, error>`."""
    flag = bool(value)
    return ok(lambda v: abi.put_bool(v, flag))


def opt_bytes(data: bytes | None) -> Writer:
    """Writer of an `option<list<u8>>`."""

    def put(val: abi.Val) -> None:
        abi.put_option(val, None if data is None else abi.boxed(abi.put_bytes, data))

    return put


def opt_string(text: str | None) -> Writer:
    """Writer of an `option<string>`."""

    def put(val: abi.Val) -> None:
        abi.put_option(val, None if text is None else abi.boxed(abi.put_string, text))

    return put


def write_error(val: abi.Val, case: str, detail: str | None) -> None:
    """Write `err(case(detail))` of an interface's `error` variant."""
    payload = None if detail is None else abi.boxed(abi.put_string, detail)
    abi.put_result(val, False, abi.boxed(abi.put_variant, case, payload))
