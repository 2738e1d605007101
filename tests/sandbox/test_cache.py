"""The compile cache: compile once per component, reuse from disk, survive corrupt entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.errors import ArtifactError
from flotilla.sandbox import Outcome, Sandbox
from flotilla.sandbox.components import sha256_hex
from tests.guests.wat import build_wat
from tests.sandbox.conftest import config, req


@pytest.fixture(scope="module")
def wasm() -> bytes:
    return build_wat("modes")


def fresh(cache_dir: Path) -> Sandbox:
    return Sandbox(None, cache_dir=cache_dir)


def test_second_load_does_not_compile(tmp_path: Path, wasm: bytes) -> None:
    first = fresh(tmp_path)
    try:
        first.load(wasm)
        first.load(wasm)
        assert (first.cache.stats.compiles, first.cache.stats.disk_hits) == (1, 1)
    finally:
        first.close()
    second = fresh(tmp_path)  # a new process would see the same disk cache
    try:
        fn = second.load(wasm)
        assert (second.cache.stats.compiles, second.cache.stats.disk_hits) == (0, 1)
        assert second.invoke(fn, config(), req(b"x")).outcome is Outcome.OK
    finally:
        second.close()


def test_cache_is_keyed_by_engine_fingerprint(tmp_path: Path, wasm: bytes) -> None:
    sb = fresh(tmp_path)
    try:
        fn = sb.load(wasm)
        path = sb.cache.path(fn.sha256)
        assert path.parent.name == sb.engine_fingerprint
        assert sb.engine_fingerprint.startswith("wasmtime-")
        assert path.name == f"{sha256_hex(wasm)}.cwasm"
        assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no partial files
    finally:
        sb.close()


@pytest.mark.parametrize("garbage", [b"", b"not an artifact", b"\x7fELF" + b"\0" * 64])
def test_corrupt_entry_is_discarded_and_recompiled(
    tmp_path: Path, wasm: bytes, garbage: bytes
) -> None:
    sb = fresh(tmp_path)
    try:
        sb.cache.path(sha256_hex(wasm)).write_bytes(garbage)
        fn = sb.load(wasm)
        assert (sb.cache.stats.discarded, sb.cache.stats.compiles) == (1, 1)
        assert sb.invoke(fn, config(), req(b"ok")).outcome is Outcome.OK
        assert sb.cache.path(fn.sha256).read_bytes() != garbage
    finally:
        sb.close()


def test_truncated_entry_is_discarded(tmp_path: Path, wasm: bytes) -> None:
    sb = fresh(tmp_path)
    try:
        fn = sb.load(wasm)
        path = sb.cache.path(fn.sha256)
        path.write_bytes(path.read_bytes()[:1000])
        again = fresh(tmp_path)
        try:
            fn2 = again.load(wasm)
            assert (again.cache.stats.discarded, again.cache.stats.compiles) == (1, 1)
            assert again.invoke(fn2, config(), req(b"ok")).outcome is Outcome.OK
        finally:
            again.close()
    finally:
        sb.close()


def test_compile_then_load_artifact_elsewhere(tmp_path: Path, wasm: bytes) -> None:
    registry = fresh(tmp_path / "registry")
    try:
        artifact = registry.compile(wasm)
    finally:
        registry.close()
    worker = fresh(tmp_path / "worker")
    try:
        fn = worker.load_artifact(sha256_hex(wasm), artifact)
        assert worker.cache.stats.compiles == 0
        result = worker.invoke(fn, config(), req(b"from-artifact"))
        assert result.response.body == b"from-artifact"
    finally:
        worker.close()


def test_unloadable_artifact_is_an_artifact_error(tmp_path: Path, wasm: bytes) -> None:
    sb = fresh(tmp_path)
    try:
        with pytest.raises(ArtifactError, match="does not load on this engine"):
            sb.load_artifact(sha256_hex(wasm), b"garbage")
        assert not sb.cache.path(sha256_hex(wasm)).exists()
        with pytest.raises(ArtifactError, match="not a sha256"):
            sb.load_artifact("../../etc/passwd", b"x")
    finally:
        sb.close()
