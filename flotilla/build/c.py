"""C guests (and anything with a C ABI): clang-22 to a wasm32-wasi reactor, then a component.

A C guest is a directory of `*.c` files (or one `.c` file) that includes "flotilla.h"
(sdk/c) and defines `flotilla_handle` (see the header). The build compiles them with
sdk/c/flotilla.c (the canonical-ABI glue: imports, `cabi_realloc`, the `handle` export):

    clang-22 --target=wasm32-wasi -mexec-model=reactor -O2 -I<dir> -I sdk/c *.c -o core.wasm
    wasm-tools component embed <wit> --world function core.wasm -o embedded.wasm
    wasm-tools component new embedded.wasm --adapt wasi_snapshot_preview1=<reactor adapter>

The WASI reactor adapter comes from tools/toolchains/c.sh (jco's, pinned by sha256).
Components are cached by content (see `common`): the key covers the guest's *.c and *.h
files, the SDK's, the WIT, the world, the flags and the tools' versions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from flotilla.build import toolchains
from flotilla.build.common import (
    BUILD_TIMEOUT_S,
    DEFAULT_WORLD,
    BuildError,
    BuildResult,
    Runner,
    cached_build,
    default_cache_dir,
    feed,
    find_wit_dir,
    wit_files,
)

KEY_FORMAT = b"flotilla-c-build/1"  # bump when the recipe or the commands change meaning
CLANG = "clang-22"
SYSROOT_HEADER = Path("/usr/include/wasm32-wasi/stdlib.h")
CFLAGS = ("--target=wasm32-wasi", "-O2", "-std=gnu17", "-Wall", "-Wno-deprecated")
LDFLAGS = ("-mexec-model=reactor", "-Wl,--strip-debug")
SOURCE_SUFFIXES = (".c", ".h")


def toolchain() -> str | None:
    """None when C guests can be built here, else a one-line problem naming the fix."""
    missing = []
    if shutil.which(CLANG) is None:
        missing.append(CLANG)
    if not SYSROOT_HEADER.is_file():
        missing.append("wasi-libc")
    if toolchains.reactor_adapter() is None:
        missing.append("the WASI reactor adapter")
    if missing:
        return (
            f"{', '.join(missing)} not installed: run {toolchains.C_INSTALL} (make toolchains; "
            "apt-get install clang-22 lld-22 wasi-libc libclang-rt-22-dev-wasm32)"
        )
    return None


def find_sources(source: Path) -> list[Path]:
    """The `.c` files to compile: `source` itself, or every one under its directory."""
    if source.is_file():
        if source.suffix != ".c":
            raise BuildError(f"{source}: not a C source file")
        return [source]
    if not source.is_dir():
        raise BuildError(f"{source}: no such file or directory")
    files = [p for p in source_files(source) if p.suffix == ".c"]
    if not files:
        raise BuildError(f"{source}: holds no .c files")
    return files


def source_files(root: Path) -> list[Path]:
    """The guest's *.c and *.h files under `root` (hidden folders and build/ skipped)."""
    files = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p == "build" for p in parts[:-1]):
            continue
        if path.suffix in SOURCE_SUFFIXES and path.is_file():
            files.append(path)
    return sorted(files)


def tool_versions(wasm_tools: str) -> list[str]:
    """Versions of clang, wasm-tools and the adapter (its digest), for the cache key."""
    versions = []
    for argv in ([CLANG, "--version"], [wasm_tools, "--version"]):
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
        versions.append(done.stdout.splitlines()[0] if done.stdout else "")
    adapter = toolchains.reactor_adapter()
    if adapter is not None:
        versions.append(hashlib.sha256(adapter.read_bytes()).hexdigest())
    return versions


def cache_key(
    root: Path, sources: Sequence[Path], wits: Sequence[Path], *, world: str,
    tools: Sequence[str], cflags: Sequence[str],
) -> str:  # fmt: skip
    """sha256 over the guest's and SDK's sources, the WIT, world, flags and tool versions."""
    digest = hashlib.sha256(KEY_FORMAT)
    feed(digest, b"world", world.encode())
    for value in (*tools, *CFLAGS, *LDFLAGS, "--", *cflags):
        feed(digest, b"arg", value.encode())
    for path in sorted(set(source_files(root)) | set(sources)):
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        feed(digest, b"src:" + name.encode(), path.read_bytes())
    sdk = toolchains.sdk_dir("c")
    for path in sorted(sdk.glob("*.[ch]")):
        feed(digest, b"sdk:" + path.name.encode(), path.read_bytes())
    for path in wits:
        feed(digest, b"wit:" + path.name.encode(), path.read_bytes())
    return digest.hexdigest()


def build_c(
    source: str | Path,
    output: str | Path | None = None,
    *,
    wit_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    world: str = DEFAULT_WORLD,
    cflags: Sequence[str] = (),
    run: Runner | None = None,
) -> BuildResult:
    """Build the C guest `source` (or reuse its cached build); copy it to `output` if given.

    `cflags` are extra compiler flags (part of the key). `run` executes the tools.
    """
    started = time.perf_counter()
    from flotilla.sandbox.guests import GuestAssemblyError, wasm_tools

    problem = toolchain()
    if problem is not None:
        raise BuildError(problem)
    try:
        tool = wasm_tools()
    except GuestAssemblyError as exc:
        raise BuildError(str(exc)) from None
    path = Path(source).resolve()
    sources = find_sources(path)
    root = path if path.is_dir() else path.parent
    wit = Path(wit_dir).resolve() if wit_dir is not None else find_wit_dir()
    wits = wit_files(wit)
    key = cache_key(root, sources, wits, world=world, tools=tool_versions(tool), cflags=cflags)
    guests = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "guests"
    runner = run or _run
    return cached_build(
        guests,
        key,
        lambda target: _build(root, sources, wit, world, tool, cflags, target, runner),
        output=output,
        force=force,
        started=started,
    )


def _build(
    root: Path, sources: Sequence[Path], wit: Path, world: str, tool: str,
    cflags: Sequence[str], target: Path, run: Runner,
) -> None:  # fmt: skip
    sdk = toolchains.sdk_dir("c")
    adapter = toolchains.reactor_adapter()
    assert adapter is not None  # toolchain() checked
    with tempfile.TemporaryDirectory(prefix="flotilla-c-") as scratch:
        core, embedded = Path(scratch) / "core.wasm", Path(scratch) / "embedded.wasm"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        steps = [
            ("clang", [
                CLANG, *CFLAGS, *LDFLAGS, *cflags, f"-I{root}", f"-I{sdk}",
                *map(str, sources), str(sdk / "flotilla.c"), "-o", str(core),
            ]),
            ("wasm-tools component embed", [
                tool, "component", "embed", str(wit), "--world", world, str(core),
                "-o", str(embedded),
            ]),
            ("wasm-tools component new", [
                tool, "component", "new", str(embedded),
                "--adapt", f"wasi_snapshot_preview1={adapter}", "-o", str(tmp),
            ]),
        ]  # fmt: skip
        try:
            for name, argv in steps:
                try:
                    done = run(argv, root)
                except subprocess.TimeoutExpired as exc:
                    raise BuildError(f"{name} took over {exc.timeout:.0f} s on {root}") from exc
                except OSError as exc:
                    raise BuildError(f"{name} could not run: {exc}") from exc
                if done.returncode != 0:
                    output = ((done.stderr or "") + "\n" + (done.stdout or "")).strip()
                    raise BuildError(f"{name} failed on {root} (exit {done.returncode}):\n{output}")
            if tmp.stat().st_size == 0:
                raise BuildError(f"wasm-tools component new wrote nothing for {root}")
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _run(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), check=False, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
