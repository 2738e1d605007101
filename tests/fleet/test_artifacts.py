"""The worker's artifact cache: memory LRU, verified disk cache, one fetch per digest."""

from __future__ import annotations

import hashlib
import hmac
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flotilla.config import FunctionConfig
from worker.artifacts import ArtifactCache, ArtifactNotFound, FetchedArtifact

KEY = b"test-key"


def tag(data: bytes) -> str:
    return hmac.new(KEY, data, hashlib.sha256).hexdigest()


class FakeSource:
    def __init__(self, *, component_only: bool = False) -> None:
        self.fetched: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.component_only = component_only

    def fetch(self, name: str, digest: str) -> FetchedArtifact:
        self.gate.wait(10)
        self.fetched.append((name, digest))
        if digest == "missing":
            raise ArtifactNotFound(f"{name}@{digest}")
        code = f"code-{digest}".encode()
        if self.component_only:
            return FetchedArtifact(FunctionConfig(name), f"w{digest}", f"a{digest}", None, code)
        return FetchedArtifact(FunctionConfig(name, timeout_ms=1234), f"w{digest}", f"a{digest}", code)


class FakeLoader:
    engine_fingerprint = "engine-1"

    def __init__(self) -> None:
        self.loaded: list[tuple[str, bytes]] = []
        self.compiled: list[bytes] = []

    def load_artifact(self, wasm_sha256: str, artifact: bytes) -> object:
        self.loaded.append((wasm_sha256, artifact))
        return ("fn", wasm_sha256)

    def load(self, wasm: bytes) -> object:
        self.compiled.append(wasm)
        return ("compiled", wasm)


def _cache(tmp_path: Path, source: FakeSource | None = None, loader: FakeLoader | None = None,
           max_entries: int = 8) -> tuple[ArtifactCache, FakeSource, FakeLoader]:
    source = source or FakeSource()
    loader = loader or FakeLoader()
    return ArtifactCache(source, loader, cache_dir=tmp_path, tag=tag, max_entries=max_entries), source, loader


def test_memory_hit_fetches_once(tmp_path: Path) -> None:
    cache, source, _loader = _cache(tmp_path)
    fn1, config = cache.get("echo", "d1")
    fn2, _ = cache.get("echo", "d1")
    assert fn1 is fn2 and fn1 == ("fn", "wd1")
    assert config.timeout_ms == 1234
    assert source.fetched == [("echo", "d1")]


def test_disk_hit_after_restart_needs_no_fetch(tmp_path: Path) -> None:
    _cache(tmp_path)[0].get("echo", "d1")
    cache, source, loader = _cache(tmp_path)
    _fn, config = cache.get("echo", "d1")
    assert source.fetched == []
    assert loader.loaded == [("wd1", b"code-d1")]
    assert (config.name, config.timeout_ms, cache.disk_hits) == ("echo", 1234, 1)


def test_tampered_disk_artifact_is_refetched(tmp_path: Path) -> None:
    _cache(tmp_path)[0].get("echo", "d1")
    [artifact] = [p for p in tmp_path.rglob("ad1")]
    artifact.write_bytes(b"evil native code")
    cache, source, loader = _cache(tmp_path)
    cache.get("echo", "d1")
    assert source.fetched == [("echo", "d1")]
    assert loader.loaded == [("wd1", b"code-d1")]


def test_concurrent_misses_fetch_once(tmp_path: Path) -> None:
    cache, source, _ = _cache(tmp_path)
    source.gate.clear()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.get, "echo", "d1") for _ in range(8)]
        source.gate.set()
        results = {f.result(10)[0] for f in futures}
    assert len(results) == 1
    assert source.fetched == [("echo", "d1")]


def test_memory_is_bounded_lru(tmp_path: Path) -> None:
    cache, source, loader = _cache(tmp_path, max_entries=2)
    cache.get("f", "d1")
    cache.get("f", "d2")
    cache.get("f", "d1")  # d1 most recent
    cache.get("f", "d3")  # evicts d2
    loads = len(loader.loaded)
    cache.get("f", "d1")
    assert len(loader.loaded) == loads  # still in memory
    cache.get("f", "d2")
    assert len(loader.loaded) == loads + 1  # reloaded (from disk)
    assert source.fetched == [("f", "d1"), ("f", "d2"), ("f", "d3")]


def test_not_found_propagates_and_is_not_cached(tmp_path: Path) -> None:
    cache, source, _ = _cache(tmp_path)
    for _ in range(2):
        with pytest.raises(ArtifactNotFound):
            cache.get("echo", "missing")
    assert len(source.fetched) == 2


def test_component_only_version_is_compiled(tmp_path: Path) -> None:
    cache, _, loader = _cache(tmp_path, source=FakeSource(component_only=True))
    fn, _ = cache.get("echo", "d1")
    assert fn == ("compiled", b"code-d1")
    assert loader.loaded == []
