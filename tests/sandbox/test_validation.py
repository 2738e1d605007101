"""A component is validated before it is accepted; each rejection has a clear message."""

from __future__ import annotations

import os

import pytest

from flotilla.errors import ComponentError
from flotilla.outcomes import Outcome
from flotilla.sandbox import Sandbox
from flotilla.sandbox.components import HANDLE_TYPE, check_binary
from flotilla.sandbox.outcomes import check_response, classify_error
from tests.guests.wat import WAT_DIR, assemble_core, build_wat_text

BAD_WIT = WAT_DIR / "bad"
ECHO_CORE = (WAT_DIR.parents[2] / "flotilla" / "sandbox" / "wat" / "echo.wat").read_text()


def test_core_module_is_rejected(sandbox: Sandbox) -> None:
    core = assemble_core('(module (func (export "handle")))')
    with pytest.raises(ComponentError, match="core WebAssembly module, not a component"):
        sandbox.load(core)


@pytest.mark.parametrize("data", [b"", b"hello world", os.urandom(4096), b"\0asm\x0d\0\x02\0xx"])
def test_random_bytes_are_rejected(sandbox: Sandbox, data: bytes) -> None:
    with pytest.raises(ComponentError, match="not a WebAssembly binary|not a component|compile"):
        sandbox.load(data)


def test_truncated_component_is_rejected(sandbox: Sandbox) -> None:
    good = build_wat_text(ECHO_CORE)
    with pytest.raises(ComponentError, match="does not compile"):
        sandbox.load(good[: len(good) // 2])


def test_another_world_is_rejected(sandbox: Sandbox) -> None:
    wasm = build_wat_text(
        '(module (func (export "run") (result i32) (i32.const 1)))', world="other", wit_dir=BAD_WIT
    )
    with pytest.raises(ComponentError, match="does not export `handle`.*exports run"):
        sandbox.load(wasm)


def test_wrong_handle_type_is_rejected(sandbox: Sandbox) -> None:
    wasm = build_wat_text(
        '(module (func (export "handle") (param i32) (result i32) (local.get 0)))',
        world="wrong-handle",
        wit_dir=BAD_WIT,
    )
    with pytest.raises(
        ComponentError, match=r"`handle` has the wrong type.*got func\(x:u32\)->u32"
    ):
        sandbox.load(wasm)


def test_extra_import_is_rejected(sandbox: Sandbox) -> None:
    wat = ECHO_CORE.replace(
        "(module",
        '(module (import "acme:bad/thing@0.1.0" "poke" (func (result i32)))',
        1,
    )
    wasm = build_wat_text(wat, world="extra-import", wit_dir=BAD_WIT)
    with pytest.raises(ComponentError, match="imports 'acme:bad/.*which Flotilla does not provide"):
        sandbox.load(wasm)


def test_the_echo_component_is_accepted(sandbox: Sandbox) -> None:
    fn = sandbox.load(build_wat_text(ECHO_CORE))
    assert len(fn.sha256) == 64


def test_expected_handle_type_text() -> None:
    assert HANDLE_TYPE.startswith("func(request:record{invocation-id:string,")
    assert HANDLE_TYPE.endswith(
        "->result<record{status:u16,headers:list<tuple<string,string>>,body:list<u8>},string>"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a WebAssembly binary"),
        (b"\0asm\x01\0\0\0", "core WebAssembly module"),
        (b"\0asm\x0d\0\x02\0", "not a component"),
    ],
)
def test_check_binary(data: bytes, message: str) -> None:
    with pytest.raises(ComponentError, match=message):
        check_binary(data)


@pytest.mark.parametrize(
    ("message", "stderr", "past_deadline", "expected"),
    [
        ("error while executing\nCaused by:\n    wasm trap: interrupt", "", False, Outcome.TIMEOUT),
        ("wasm trap: wasm `unreachable` instruction executed", "", False, Outcome.TRAP),
        (
            "wasm trap: wasm `unreachable` instruction executed",
            "Traceback...\nMemoryError\n",
            False,
            Outcome.MEMORY_LIMIT,
        ),
        (
            "wasm trap: unreachable",
            "memory allocation of 1048576 bytes failed",
            False,
            Outcome.MEMORY_LIMIT,
        ),
        (
            "memory minimum size of 2000 pages exceeds memory limits",
            "",
            False,
            Outcome.MEMORY_LIMIT,
        ),
        ("wasm trap: call stack exhausted", "", True, Outcome.TRAP),
        (
            "too much data is being copied between the host and the guest",
            "",
            False,
            Outcome.BAD_RESPONSE,
        ),
    ],
)
def test_classify_error(message: str, stderr: str, past_deadline: bool, expected: Outcome) -> None:
    assert classify_error(message, stderr, past_deadline=past_deadline) is expected


@pytest.mark.parametrize(
    ("status", "length", "limit", "ok"),
    [
        (200, 0, 0, True),
        (599, 10, 10, True),
        (99, 0, 10, False),
        (600, 0, 10, False),
        (200, 11, 10, False),
    ],
)
def test_check_response(status: int, length: int, limit: int, ok: bool) -> None:
    assert (check_response(status, length, limit) is None) is ok
