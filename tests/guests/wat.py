"""Assemble a core-module WAT file into a `function`-world component, cached by content.

The WAT implements the canonical ABI by hand (see flotilla/sandbox/wat/echo.wat); wasm-tools
embeds the WIT and wraps it into a component in a few milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIT_DIR = ROOT / "wit"
WAT_DIR = Path(__file__).resolve().parent / "wat"
PACKAGE_WAT_DIR = ROOT / "flotilla" / "sandbox" / "wat"


def wasm_tools() -> str:
    """Path of the wasm-tools binary (installed beside the interpreter)."""
    candidate = Path(sys.executable).with_name("wasm-tools")
    return str(candidate) if candidate.exists() else "wasm-tools"


def default_cache_dir() -> Path:
    """Where built test components are kept between runs."""
    base = os.environ.get("FLOTILLA_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "flotilla")
    return Path(base) / "wat-guests"


def build_wat_text(
    wat: str, *, world: str = "function", wit_dir: Path = WIT_DIR, cache_dir: Path | None = None
) -> bytes:
    """Component bytes for a core module given as WAT text (cached by content)."""
    wit_text = "".join(p.read_text() for p in sorted(Path(wit_dir).glob("*.wit")))
    key = hashlib.sha256(f"{world}\0{wit_text}\0{wat}".encode()).hexdigest()[:32]
    cache = Path(cache_dir or default_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{key}.wasm"
    if out.exists():
        return out.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        core = Path(tmp) / "core.wat"
        core.write_text(wat)
        embedded = Path(tmp) / "embedded.wasm"
        comp = Path(tmp) / "component.wasm"
        subprocess.run(
            [
                wasm_tools(),
                "component",
                "embed",
                str(wit_dir),
                "--world",
                world,
                str(core),
                "-o",
                str(embedded),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [wasm_tools(), "component", "new", str(embedded), "-o", str(comp)],
            check=True,
            capture_output=True,
        )
        data = comp.read_bytes()
    partial = out.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, out)
    return data


def build_wat(name: str, **kwargs: object) -> bytes:
    """Component bytes for tests/guests/wat/<name>.wat (or the packaged flotilla/sandbox/wat)."""
    path = WAT_DIR / f"{name}.wat"
    if not path.exists():
        path = PACKAGE_WAT_DIR / f"{name}.wat"
    return build_wat_text(path.read_text(), **kwargs)  # type: ignore[arg-type]


def assemble_core(wat: str) -> bytes:
    """A plain core module (not a component) from WAT text, for the validation tests."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.wat"
        src.write_text(wat)
        dst = Path(tmp) / "m.wasm"
        subprocess.run(
            [wasm_tools(), "parse", str(src), "-o", str(dst)], check=True, capture_output=True
        )
        return dst.read_bytes()
