"""The byte-string export (flotilla/sandbox/rawabi.py): bodies cross as one latin1 string.

Every component the sandbox compiles gets `flotilla-raw-handle`, the guest's own core
`handle` re-lifted with string bodies; these tests pin that it is added, that bytes come
back exactly (all 256 values, 6 MiB, both call paths), that odd guest pointers are handled,
that a component it cannot be added to still runs on the per-byte path, and that the
reserved names are refused.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.config import DEFAULT_MAX_BODY_BYTES, FunctionConfig
from flotilla.errors import ComponentError
from flotilla.sandbox import LoadedFunction, Outcome, Sandbox, rawabi
from flotilla.sandbox.sandbox import MAX_REQUEST_BODY_BYTES, RequestTooLarge
from tests.guests.wat import build_wat, wasm_tools
from tests.sandbox.conftest import FakeCache, FakeHosts, config, persistent_cache_dir, req

ALL_BYTES = bytes(range(256))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["c-extension", "ctypes"])
def any_sandbox(
    request: pytest.FixtureRequest, sandbox: Sandbox, fake_hosts: FakeHosts
) -> Iterator[Sandbox]:
    """The shared sandbox, and one forced onto the ctypes path."""
    if request.param == "c-extension":
        if sandbox.call_path != "c-extension":
            pytest.skip("flotilla/sandbox/_fastcall was not built")
        yield sandbox
        return
    sb = Sandbox(fake_hosts, cache_dir=persistent_cache_dir(), accelerate=False)
    yield sb
    sb.close()


def _edit(wasm: bytes, tmp_path: Path, change: callable) -> bytes:  # type: ignore[valid-type]
    """`wasm` printed to text, changed, and assembled again."""
    src, out = tmp_path / "c.wasm", tmp_path / "c2.wasm"
    src.write_bytes(wasm)
    text = subprocess.run(
        [wasm_tools(), "print", str(src)], check=True, capture_output=True, text=True
    ).stdout
    (tmp_path / "c2.wat").write_text(change(text))
    subprocess.run([wasm_tools(), "parse", str(tmp_path / "c2.wat"), "-o", str(out)], check=True)
    return out.read_bytes()


def test_compiled_components_carry_the_byte_string_export(
    sandbox: Sandbox, echo: LoadedFunction, modes: LoadedFunction, probe: LoadedFunction
) -> None:
    for fn in (echo, modes, probe):
        assert fn.raw is not None and fn.raw_ptr
        assert fn.max_body_bytes == rawabi.MAX_BODY_BYTES


def test_default_body_limit_is_6_mib() -> None:
    assert FunctionConfig(name="f").max_body_bytes == 6 * 1024 * 1024 == DEFAULT_MAX_BODY_BYTES


@pytest.mark.parametrize("size", [0, 1, 255, 64 * 1024, DEFAULT_MAX_BODY_BYTES])
def test_every_byte_value_round_trips(any_sandbox: Sandbox, size: int) -> None:
    echo = any_sandbox.load(build_wat("echo"))
    body = (ALL_BYTES * (size // 256 + 1))[:size]
    headers = (("x-\u00e9t\u00e9", "\u2603 caf\u00e9"), ("empty", ""))
    result = any_sandbox.invoke(
        echo, config(max_body_bytes=DEFAULT_MAX_BODY_BYTES), req(body, headers)
    )
    assert result.outcome is Outcome.OK, result.error
    assert result.response is not None
    assert result.response.body == body
    assert result.response.headers == headers


@pytest.fixture(scope="module")
def py_echo(sandbox: Sandbox) -> LoadedFunction:
    """examples/echo built with componentize-py (build and compile cached)."""
    from flotilla.build import build_guest

    path = build_guest(ROOT / "examples" / "echo" / "app.py", cache_dir=persistent_cache_dir())
    return sandbox.load(path.read_bytes())


def test_python_guest_round_trips_6_mib(sandbox: Sandbox, py_echo: LoadedFunction) -> None:
    assert py_echo.raw is not None
    body = ALL_BYTES * (DEFAULT_MAX_BODY_BYTES // 256)
    headers = (("x-caf\u00e9", "\u2603"),)
    cfg = config(max_body_bytes=DEFAULT_MAX_BODY_BYTES, memory_limit_mb=256, timeout_ms=20_000)
    for payload in (body, b"", ALL_BYTES):
        result = sandbox.invoke(py_echo, cfg, req(payload, headers))
        assert result.outcome is Outcome.OK, result.error
        assert result.response is not None
        assert (result.response.body, result.response.headers) == (payload, headers)


@pytest.mark.parametrize(
    "mode, expected",
    [
        (b"o" + ALL_BYTES, (Outcome.OK, b"o" + ALL_BYTES)),
        (b"z", (Outcome.OK, b"")),
        (b"e", (Outcome.FUNCTION_ERROR, "odd boom")),
    ],
    ids=["odd-body-and-headers", "dangling-empty", "odd-error"],
)
def test_odd_guest_pointers_are_realigned(
    any_sandbox: Sandbox, mode: bytes, expected: tuple[Outcome, object]
) -> None:
    odd = any_sandbox.load(build_wat("odd"))
    assert odd.raw is not None
    result = any_sandbox.invoke(odd, config(), req(mode))
    outcome, value = expected
    assert result.outcome is outcome, result.error
    if outcome is Outcome.OK:
        assert result.response is not None and result.response.body == value
        if mode.startswith(b"o"):
            assert result.response.headers == (("x-odd", "caf\u00e9"), ("", ""))
        else:
            assert result.response.headers == ()
    else:
        assert result.error == value
    ok = any_sandbox.invoke(odd, config(), req(b"o"))
    assert ok.outcome is Outcome.OK


def test_utf16_component_keeps_the_per_byte_path(sandbox: Sandbox, tmp_path: Path) -> None:
    def to_utf16(text: str) -> str:
        assert text.count("string-encoding=utf8") == 1
        return text.replace("string-encoding=utf8", "string-encoding=utf16")

    wasm = _edit(build_wat("echo"), tmp_path, to_utf16)
    fn = sandbox.load(wasm)
    assert fn.raw is None and fn.max_body_bytes == MAX_REQUEST_BODY_BYTES
    body = ALL_BYTES * 64
    result = sandbox.invoke(fn, config(), req(body))
    assert result.outcome is Outcome.OK, result.error
    assert result.response is not None and result.response.body == body
    with pytest.raises(RequestTooLarge, match=f"max_body_bytes={MAX_REQUEST_BODY_BYTES}"):
        sandbox.invoke(fn, config(max_body_bytes=DEFAULT_MAX_BODY_BYTES), req(b"x" * (3 << 20)))


def test_reserved_export_names_are_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    def add_export(text: str) -> str:
        end = text.rstrip().rfind(")")
        func = re.search(r'\(export [^\n]*"handle" \(func (\S+?)\)\)', text)
        assert func is not None
        return text[:end] + f'(export "flotilla-raw-handle" (func {func.group(1)}))\n' + text[end:]

    wasm = _edit(build_wat("echo"), tmp_path, add_export)
    with pytest.raises(ComponentError, match="reserved for Flotilla: flotilla-raw-handle"):
        sandbox.load(wasm)


def test_rewrite_leaves_core_modules_untouched(probe: LoadedFunction) -> None:
    from flotilla.build import build_guest
    from tests.sandbox.conftest import PYGUEST_DIR

    wasm = build_guest(PYGUEST_DIR / "app.py", cache_dir=persistent_cache_dir()).read_bytes()
    raw = rawabi.add_raw_export(wasm, wasm_tools())
    assert raw is not None
    before = [p for sid, p in rawabi.sections(wasm) if sid == 1]
    after = [p for sid, p in rawabi.sections(raw) if sid == 1]
    assert after[: len(before)] == before  # the guest's modules, byte for byte
    assert len(after) == len(before) + 1  # plus the aligner


def test_host_results_of_6_mib_reach_the_guest(
    sandbox: Sandbox, modes: LoadedFunction, fake_cache: FakeCache
) -> None:
    # Host-to-guest lowering is not limited by wasmtime's hostcall fuel (only lifting is):
    # a cache value as large as the default body limit reaches the guest and comes back.
    value = ALL_BYTES * (DEFAULT_MAX_BODY_BYTES // 256)
    fake_cache.behaviour = lambda key: value
    result = sandbox.invoke(modes, config(max_body_bytes=DEFAULT_MAX_BODY_BYTES), req(b"g"))
    assert result.outcome is Outcome.OK, result.error
    assert result.response is not None and result.response.body == value
