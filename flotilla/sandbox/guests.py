"""Guests shipped with the sandbox package: WAT core modules assembled into components.

`wasm-tools component embed` + `component new` take milliseconds; results are cached by
content under `<cache_dir>/wat`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from flotilla.errors import FlotillaError

WAT_DIR = Path(__file__).resolve().parent / "wat"


class GuestAssemblyError(FlotillaError):
    """wasm-tools is missing or rejected the WAT."""


def wasm_tools() -> str:
    """The wasm-tools binary (beside the interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("wasm-tools")
    if beside.exists():
        return str(beside)
    found = shutil.which("wasm-tools")
    if not found:
        raise GuestAssemblyError("wasm-tools not found: pip install wasm-tools")
    return found


def find_wit_dir() -> Path:
    """The WIT directory shipped with Flotilla (the repository's `wit/` for editable installs)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "wit", package.parent / "wit"):
        if (candidate / "flotilla.wit").is_file():
            return candidate.resolve()  # flotilla/wit is a symlink to wit/ in a checkout
    raise GuestAssemblyError(
        f"cannot find Flotilla's wit/ directory near {package}; pass --wit DIR"
    )


def assemble(
    wat: str, cache_dir: str | Path, *, world: str = "function", wit_dir: Path | None = None
) -> bytes:
    """Component bytes of a core module in WAT implementing `world` (cached by content)."""
    wit = wit_dir or find_wit_dir()
    wit_text = "".join(p.read_text() for p in sorted(Path(wit).glob("*.wit")))
    key = hashlib.sha256(f"{world}\0{wit_text}\0{wat}".encode()).hexdigest()[:32]
    out_dir = Path(cache_dir) / "wat"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{key}.wasm"
    if out.exists():
        return out.read_bytes()
    tool = wasm_tools()
    with tempfile.TemporaryDirectory() as tmp:
        core, embedded, comp = (Path(tmp) / n for n in ("c.wat", "e.wasm", "x.wasm"))
        core.write_text(wat)
        for argv in (
            [
                tool,
                "component",
                "embed",
                str(wit),
                "--world",
                world,
                str(core),
                "-o",
                str(embedded),
            ],
            [tool, "component", "new", str(embedded), "-o", str(comp)],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode:
                raise GuestAssemblyError(f"{' '.join(argv[1:3])} failed: {done.stderr.strip()}")
        data = comp.read_bytes()
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, out)
    return data


def packaged(name: str, cache_dir: str | Path) -> bytes:
    """A WAT guest shipped in flotilla/sandbox/wat/, e.g. `packaged("echo", cache_dir)`."""
    return assemble((WAT_DIR / f"{name}.wat").read_text(), cache_dir)
