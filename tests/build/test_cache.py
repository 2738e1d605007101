"""flotilla.build.common.cached_build, the cache-or-build step every guest builder shares.

A fake build function writes a few bytes where it is told: no toolchain, milliseconds.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from flotilla.build.common import BuildResult, cached_build

KEY = "0" * 64


class FakeBuild:
    """Counts its calls and writes `output` to the target (atomically, like the builders)."""

    def __init__(self, output: bytes = b"\0asm-component", delay_s: float = 0.0) -> None:
        self.output, self.delay_s = output, delay_s
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, target: Path) -> None:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay_s)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(self.output)
        os.replace(tmp, target)


def build(
    guests: Path, fake: FakeBuild, *, output: Path | None = None, force: bool = False
) -> BuildResult:
    return cached_build(guests, KEY, fake, output=output, force=force, started=time.perf_counter())


def test_a_miss_builds_into_the_cache_and_returns_it(tmp_path: Path) -> None:
    guests = tmp_path / "cache" / "guests"  # made on demand
    fake = FakeBuild()
    result = build(guests, fake)
    assert fake.calls == 1
    assert result.path == guests / f"{KEY}.wasm" and result.key == KEY
    assert not result.cached and result.seconds >= 0
    assert result.path.read_bytes() == fake.output


def test_a_cache_hit_skips_the_build_and_marks_the_file_used(tmp_path: Path) -> None:
    fake = FakeBuild()
    first = build(tmp_path, fake)
    os.utime(first.path, (1, 1))
    again = build(tmp_path, fake)
    assert fake.calls == 1
    assert again.cached and again.path == first.path
    assert first.path.stat().st_mtime > 1


def test_force_rebuilds_and_replaces_the_cached_file(tmp_path: Path) -> None:
    build(tmp_path, FakeBuild(b"old"))
    fake = FakeBuild(b"new")
    result = build(tmp_path, fake, force=True)
    assert fake.calls == 1 and not result.cached
    assert result.path.read_bytes() == b"new"


def test_output_gets_a_copy_of_the_cached_file(tmp_path: Path) -> None:
    fake = FakeBuild()
    out = tmp_path / "out" / "fn.wasm"
    for cached in (False, True):
        result = build(tmp_path / "guests", fake, output=out)
        assert result.path == out and result.cached is cached
        assert out.read_bytes() == fake.output
    assert (tmp_path / "guests" / f"{KEY}.wasm").is_file()


def test_concurrent_callers_build_once(tmp_path: Path) -> None:
    fake = FakeBuild(delay_s=0.2)
    start = threading.Barrier(2)
    results: list[BuildResult] = []

    def call() -> None:
        start.wait()
        results.append(build(tmp_path, fake))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.calls == 1
    assert sorted(r.cached for r in results) == [False, True]
    assert {r.path for r in results} == {tmp_path / f"{KEY}.wasm"}


def test_a_failed_build_caches_nothing(tmp_path: Path) -> None:
    def failing(target: Path) -> None:
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        cached_build(tmp_path, KEY, failing, output=tmp_path / "out.wasm", force=False,
                     started=time.perf_counter())
    assert not (tmp_path / f"{KEY}.wasm").exists()
    assert not (tmp_path / "out.wasm").exists()
    fake = FakeBuild()
    assert not build(tmp_path, fake).cached and fake.calls == 1
