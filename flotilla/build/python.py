"""Python guests, built with componentize-py and cached by content (see `common`).

A Python guest is a directory holding an app module (usually `app.py`) that defines
`class WitWorld(wit_world.WitWorld)` with a `handle` method. componentize-py turns it
into a wasm32-wasip2 component targeting the `function` world of the repository's `wit/`.

Builds are slow (~13 s of CPU), so each one is cached under
`<cache_dir>/guests/<key>.wasm`, where the key is the sha256 of every `*.py` file of
the app's directory, every WIT file, the world, the app module name and the
componentize-py version. Files are written to a temporary name and renamed into place,
and a per-key lock file serialises concurrent builds of the same key, so parallel test
runs never see half a component and build each key once.

Third-party packages the app imports from the build machine's site-packages are not
part of the key: vendor them into the app's directory to make the build reproducible.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

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

# Bump when the key's recipe or the build command changes meaning.
KEY_FORMAT = b"flotilla-guest-build/1"

def build_guest(
    app_path: str | Path,
    output: str | Path | None = None,
    *,
    wit_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Build the Python guest `app_path`; return `output`, or the cached component if None."""
    return build(app_path, output, wit_dir=wit_dir, cache_dir=cache_dir).path


def build(
    app_path: str | Path,
    output: str | Path | None = None,
    *,
    wit_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    world: str = DEFAULT_WORLD,
    force: bool = False,
    run: Runner | None = None,
) -> BuildResult:
    """Build `app_path` (or reuse the cached build) and copy it to `output` if given.

    `force` rebuilds even on a cache hit (the result still replaces the cached file).
    `run` executes componentize-py; it defaults to a subprocess with a timeout.
    """
    started = time.perf_counter()
    app = Path(app_path).resolve()
    check_app(app)
    wit = Path(wit_dir).resolve() if wit_dir is not None else find_wit_dir()
    wits = wit_files(wit)
    command = componentize_py_command()
    key = cache_key(app, wits, world=world, tool_version=componentize_py_version(command))
    guests = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "guests"
    runner = run or _run
    return cached_build(
        guests,
        key,
        lambda target: _componentize(app, wit, world, command, target, runner),
        output=output,
        force=force,
        started=started,
    )


def check_app(app: Path) -> None:
    """Raise BuildError unless `app` is a readable Python module defining class WitWorld."""
    if not app.is_file():
        raise BuildError(f"{app}: no such file (expected the guest's app.py)")
    if app.suffix != ".py" or not app.stem.isidentifier():
        raise BuildError(f"{app}: the app must be a Python module named like 'app.py'")
    if app.stem == "wit_world":
        raise BuildError(f"{app}: 'wit_world' is the bindings' module name; rename the app")
    try:
        tree = ast.parse(app.read_bytes(), filename=str(app))
    except SyntaxError as exc:
        raise BuildError(f"{app}:{exc.lineno}: syntax error: {exc.msg}") from exc
    if not any(isinstance(n, ast.ClassDef) and n.name == "WitWorld" for n in tree.body):
        raise BuildError(
            f"{app}: defines no top-level 'class WitWorld(wit_world.WitWorld)' with a "
            "'handle(self, request)' method; componentize-py needs it as the entry point"
        )


def componentize_py_command() -> str:
    """Path of the componentize-py executable (the one next to this Python first)."""
    beside = Path(sys.executable).parent / "componentize-py"
    if beside.is_file():
        return str(beside)
    found = shutil.which("componentize-py")
    if found is None:
        raise BuildError("componentize-py is not installed: pip install componentize-py")
    return found


def componentize_py_version(command: str) -> str:
    """The version of componentize-py, from package metadata or `--version`."""
    if Path(command).parent == Path(sys.executable).parent:
        try:
            return metadata.version("componentize-py")
        except metadata.PackageNotFoundError:
            pass
    done = subprocess.run(
        [command, "--version"], check=False, capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip()


def source_files(app_dir: Path) -> list[Path]:
    """Every `*.py` file under `app_dir`, skipping hidden directories and `__pycache__`."""
    files = []
    for path in app_dir.rglob("*.py"):
        parts = path.relative_to(app_dir).parts
        if any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        files.append(path)
    return sorted(files)


def cache_key(app: Path, wit_files: Sequence[Path], *, world: str, tool_version: str) -> str:
    """sha256 over the app's sources, the WIT files, the world, module name and tool version."""
    digest = hashlib.sha256(KEY_FORMAT)
    for label, value in (("world", world), ("module", app.stem), ("tool", tool_version)):
        feed(digest, label.encode(), value.encode())
    for path in source_files(app.parent):
        feed(digest, b"py:" + path.relative_to(app.parent).as_posix().encode(), path.read_bytes())
    for path in wit_files:
        feed(digest, b"wit:" + path.name.encode(), path.read_bytes())
    return digest.hexdigest()


def _componentize(
    app: Path, wit: Path, world: str, command: str, target: Path, run: Runner
) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    argv = [
        command, "-d", str(wit), "-w", world,
        "componentize", "-p", str(app.parent), app.stem, "-o", str(tmp),
    ]  # fmt: skip
    try:
        try:
            done = run(argv, app.parent)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"componentize-py took over {exc.timeout:.0f} s on {app}") from exc
        if done.returncode != 0 or tmp.stat().st_size == 0:
            output = (done.stderr or "") + "\n" + (done.stdout or "")
            details = output.split("\nStack backtrace:")[0].strip()
            raise BuildError(
                f"componentize-py failed on {app} (exit {done.returncode}):\n{details}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _run(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # A Rust backtrace of componentize-py itself buries the guest's Python traceback.
    env = {**os.environ, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}
    return subprocess.run(
        list(argv),
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )


