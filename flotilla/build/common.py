"""What every guest builder shares: errors, results, the content-addressed cache and its locks.

Built components live in `<cache_dir>/guests/<key>.wasm`, the key a sha256 of everything that
decides the output (sources, WIT files, world, tool versions). Files are written to a
temporary name and renamed into place, and a per-key lock file serialises concurrent builds
of one key; the directory is pruned to MAX_CACHE_BYTES, least recently used first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import FlotillaError

DEFAULT_WORLD = "function"
BUILD_TIMEOUT_S = 600.0
MAX_CACHE_BYTES = 2 * 1024**3
"""Built guests beyond this total are evicted, least recently used first."""
EVICT_GRACE_S = 3600.0
"""Guests used this recently are never evicted (another process may be copying one)."""

Runner = Callable[[Sequence[str], Path], "subprocess.CompletedProcess[str]"]
"""Runs a command in a directory and returns it completed (injectable for tests)."""


class BuildError(FlotillaError):
    """A guest could not be built: bad app source, missing tool or WIT, or a compiler failure."""


@dataclass(frozen=True)
class BuildResult:
    """Outcome of one build: where the component is, its cache key, and whether it was cached."""

    path: Path
    key: str
    cached: bool
    seconds: float


def find_wit_dir() -> Path:
    """The WIT directory shipped with Flotilla; BuildError when it cannot be found."""
    from flotilla.sandbox.guests import GuestAssemblyError
    from flotilla.sandbox.guests import find_wit_dir as find

    try:
        return find()
    except GuestAssemblyError as exc:
        raise BuildError(str(exc)) from None


def evictions(
    entries: Sequence[tuple[str, int, float]], *, max_bytes: int, now: float, grace_s: float
) -> list[str]:
    """Names to delete from (name, size, last_used) entries, least recently used first,
    until the rest fit in `max_bytes`; entries used within `grace_s` of `now` are kept."""
    total = sum(size for _, size, _ in entries)
    doomed = []
    for name, size, last_used in sorted(entries, key=lambda e: e[2]):
        if total <= max_bytes:
            break
        if now - last_used < grace_s:
            continue
        doomed.append(name)
        total -= size
    return doomed


def prune(guests: Path) -> None:
    entries = []
    for path in guests.glob("*.wasm"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        entries.append((path.name, stat.st_size, stat.st_mtime))
    budget = MAX_CACHE_BYTES
    for name in evictions(entries, max_bytes=budget, now=time.time(), grace_s=EVICT_GRACE_S):
        (guests / name).unlink(missing_ok=True)
        (guests / name).with_suffix(".lock").unlink(missing_ok=True)


def feed(digest: hashlib._Hash, name: bytes, data: bytes) -> None:
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    for part in (name, data):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)


def wit_files(wit: Path) -> list[Path]:
    if not wit.is_dir():
        raise BuildError(f"{wit}: WIT directory does not exist")
    files = sorted(wit.rglob("*.wit"))
    if not files:
        raise BuildError(f"{wit}: contains no .wit files")
    return files


def default_cache_dir() -> str:
    from flotilla.settings import WorkerSettings

    return WorkerSettings.from_env().cache_dir


def copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp_name)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_build(
    guests: Path,
    key: str,
    build: Callable[[Path], None],
    *,
    output: str | Path | None,
    force: bool,
    started: float,
) -> BuildResult:
    """The component `<guests>/<key>.wasm`, built first by `build(target)` when missing (or
    `force`), and copied to `output` if given.

    `build` must write `target` atomically (a temporary name renamed into place). It runs
    under the key's lock, after a second look, so concurrent callers build a key once; a
    fresh build prunes the cache, a hit marks the file used. `started` is the caller's
    `time.perf_counter()` at its start, for `BuildResult.seconds`.
    """
    guests.mkdir(parents=True, exist_ok=True)
    cached_path = guests / f"{key}.wasm"

    cached = cached_path.exists() and not force
    if not cached:
        with locked(guests / f"{key}.lock"):
            cached = cached_path.exists() and not force  # another process may have built it
            if not cached:
                build(cached_path)
                prune(guests)
    if cached:
        os.utime(cached_path)  # mtime is "last used" for eviction (atime is often off)
    result_path = cached_path
    if output is not None:
        result_path = Path(output)
        copy_atomic(cached_path, result_path)
    return BuildResult(result_path, key, cached, time.perf_counter() - started)
