"""The byte-string export inside a nested component (how componentize-qjs builds QuickJS).

A QuickJS component's outer `handle` is an export of an instance of a component nested in
it; the rewrite adds `flotilla-raw-handle` to that nested component and re-exports it. These
tests pin that the guest's core modules survive byte for byte at every depth, and that a
nested `handle` the rewrite cannot re-lift keeps the per-byte path and still works.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flotilla.sandbox import Outcome, Sandbox, rawabi
from tests.build.js_c_guests import example
from tests.guests.wat import wasm_tools
from tests.sandbox.conftest import FakeHosts, config, persistent_cache_dir, req

pytestmark = pytest.mark.slow


def core_modules(wasm: bytes) -> list[bytes]:
    """Every core module of a component, nested components' included, in order."""
    out = []
    for sid, payload in rawabi.sections(wasm):
        if sid == 1:
            out.append(payload)
        elif sid == 4:
            out.extend(core_modules(payload))
    return out


@pytest.fixture(scope="module")
def quickjs_echo() -> bytes:
    """examples/js/echo built with componentize-qjs."""
    return example("js", "echo").read_bytes()


def test_quickjs_handle_lives_in_a_nested_component(quickjs_echo: bytes) -> None:
    assert 4 in {sid for sid, _ in rawabi.sections(quickjs_echo)}  # a nested component
    assert 1 not in {sid for sid, _ in rawabi.sections(quickjs_echo)}  # no outer core module


def test_rewrite_keeps_every_nested_core_module(quickjs_echo: bytes) -> None:
    raw = rawabi.add_raw_export(quickjs_echo, wasm_tools())
    assert raw is not None
    before, after = core_modules(quickjs_echo), core_modules(raw)
    assert len(after) == len(before) + 1  # plus the aligner, inside the nested component
    assert [m for m in after if m in before] == before  # the guest's, byte for byte, in order


def test_a_nested_handle_it_cannot_relift_keeps_the_per_byte_path(
    quickjs_echo: bytes, tmp_path: Path
) -> None:
    modules: list[bytes] = []
    skeleton = tmp_path / "skeleton.wasm"
    skeleton.write_bytes(rawabi._strip(quickjs_echo, modules))
    text = subprocess.run(
        [wasm_tools(), "print", str(skeleton)], check=True, capture_output=True, text=True
    ).stdout
    lift = [line for line in text.splitlines() if "(canon lift (core func $handle)" in line]
    assert len(lift) == 1 and "string-encoding=utf8" in lift[0]
    (tmp_path / "edited.wat").write_text(
        text.replace(lift[0], lift[0].replace("string-encoding=utf8", "string-encoding=utf16"))
    )
    subprocess.run(
        [wasm_tools(), "parse", str(tmp_path / "edited.wat"), "-o", str(tmp_path / "e.wasm")],
        check=True,
    )
    found = [0]
    edited = rawabi._restore((tmp_path / "e.wasm").read_bytes(), modules, found)
    assert found[0] == len(modules)
    assert rawabi.add_raw_export(edited, wasm_tools()) is None
    sandbox = Sandbox(FakeHosts(), cache_dir=persistent_cache_dir())
    try:
        fn = sandbox.load(edited)
        assert fn.raw is None
        result = sandbox.invoke(fn, config(), req(b"per byte \xff", (("a", "1"),)))
        assert result.outcome is Outcome.OK, result.error
        assert result.response is not None and result.response.body == b"per byte \xff"
    finally:
        sandbox.close()
