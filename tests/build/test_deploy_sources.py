"""`flotilla deploy NAME SOURCES` builds sources in any language before uploading them."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.commands.deploy import component_bytes
from flotilla.errors import FlotillaError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("source", ["examples/c/echo", "examples/echo/app.py"])
def test_sources_are_built_into_a_component(source: str) -> None:
    wasm = component_bytes(ROOT / source)
    assert wasm[:4] == b"\0asm" and wasm[4:8] == b"\x0d\x00\x01\x00"  # a component


def test_a_wasm_file_is_sent_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "fn.wasm"
    path.write_bytes(b"anything")
    assert component_bytes(path) == b"anything"


def test_an_unknown_source_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FlotillaError, match="language"):
        component_bytes(tmp_path)
