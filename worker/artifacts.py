"""The worker's artifact cache: (function, digest) -> loaded function + config.

Lookup order: memory (bounded LRU of loaded functions), then local disk (the verified
artifact bytes and the version's metadata, kept across restarts), then the `ArtifactSource`
(the control plane's registry + artifact store). Artifacts are HMAC-verified both when
fetched and when read back from disk, because wasmtime loads them as native code without
validation. A worker never compiles on the invocation path when a precompiled artifact for
its engine exists; only a version compiled for another engine falls back to the component.

Blocking and thread-safe: the consumer calls it from invocation threads; concurrent misses
for one digest fetch it once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flotilla.config import FunctionConfig
from flotilla.errors import ArtifactError, FlotillaError
from flotilla.metrics import WorkerMetrics

log = logging.getLogger(__name__)

DEFAULT_MEMORY_ENTRIES = 256


class ArtifactNotFound(FlotillaError, LookupError):
    """No such function version (never deployed, or deleted since it was dispatched)."""


@dataclass(frozen=True)
class FetchedArtifact:
    """A function version's config and code, verified by the source.

    `artifact` is a precompiled component for the worker's engine, or None when only the
    component (`component`) is available for this engine and must be compiled.
    """

    config: FunctionConfig
    wasm_sha256: str
    artifact_sha256: str
    artifact: bytes | None
    component: bytes | None = None


class ArtifactSource(Protocol):
    """Where a worker gets code it has not seen: `fetch(name, digest)`, blocking."""

    def fetch(self, name: str, digest: str) -> FetchedArtifact:
        """The verified version; ArtifactNotFound or ArtifactError otherwise."""


class Loader(Protocol):
    """The part of `Sandbox` the cache needs."""

    engine_fingerprint: str

    def load_artifact(self, wasm_sha256: str, artifact: bytes) -> Any:
        """Deserialize a precompiled component."""

    def load(self, wasm: bytes) -> Any:
        """Validate and compile a component."""


class StoreArtifactSource:
    """`ArtifactSource` over the control plane's `Registry` (async, Redis) and `ArtifactStore`.

    The registry client lives on the worker's event loop; `fetch` runs on invocation threads,
    so it submits the registry read to that loop and waits for it.
    """

    def __init__(
        self,
        registry: Any,
        store: Any,
        *,
        engine_fingerprint: str,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float = 10.0,
    ) -> None:
        self._registry = registry
        self._store = store
        self._engine = engine_fingerprint
        self._loop = loop
        self._timeout = timeout_s

    def fetch(self, name: str, digest: str) -> FetchedArtifact:
        """Read the version from the registry, then its verified artifact (or component)."""
        from flotilla.registry import FunctionNotDeployed

        future = asyncio.run_coroutine_threadsafe(
            self._registry.get_version(name, digest), self._loop
        )
        try:
            version = future.result(self._timeout)
        except FunctionNotDeployed as exc:
            raise ArtifactNotFound(str(exc)) from exc
        if version.digest != digest:
            raise ArtifactNotFound(f"function {name!r} has no version {digest!r}")
        if version.engine_fingerprint == self._engine:
            artifact = self._store.get_artifact(version.artifact_sha256, self._engine)
            return FetchedArtifact(
                version.config, version.wasm_sha256, version.artifact_sha256, artifact
            )
        log.warning(
            "%s@%s was compiled for engine %s, not %s: compiling its component",
            name, digest[:12], version.engine_fingerprint, self._engine,
        )
        component = self._store.get_component(version.wasm_sha256)
        return FetchedArtifact(
            version.config, version.wasm_sha256, version.artifact_sha256, None, component
        )


TagFn = Callable[[bytes], str]


class ArtifactCache:
    """Memory LRU over a disk cache over an `ArtifactSource`."""

    def __init__(
        self,
        source: ArtifactSource,
        loader: Loader,
        *,
        cache_dir: str | Path,
        tag: TagFn,
        max_entries: int = DEFAULT_MEMORY_ENTRIES,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._source = source
        self._loader = loader
        self._dir = Path(cache_dir) / "artifacts" / _safe(loader.engine_fingerprint)
        self._tag = tag
        self._max = max_entries
        self._memory: OrderedDict[str, tuple[Any, FunctionConfig]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._metrics = metrics
        self.fetches = 0
        self.disk_hits = 0

    def get(self, name: str, digest: str) -> tuple[Any, FunctionConfig]:
        """The loaded function and config of `name` at `digest`."""
        key = f"{name}@{digest}"
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                self._count("memory", "hit")
                return hit
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                hit = self._memory.get(key)
            if hit is None:
                hit = self._load(name, digest)
                with self._lock:
                    self._memory[key] = hit
                    while len(self._memory) > self._max:
                        self._memory.popitem(last=False)
            with self._lock:
                self._key_locks.pop(key, None)
        return hit

    def _load(self, name: str, digest: str) -> tuple[Any, FunctionConfig]:
        meta_path = self._dir / f"{_safe(name)}@{_safe(digest)}.json"
        self._count("memory", "miss")
        disk = self._read_disk(meta_path)
        if disk is not None:
            self.disk_hits += 1
            self._count("disk", "hit")
            config, wasm_sha, artifact = disk
            return self._loader.load_artifact(wasm_sha, artifact), config
        self._count("disk", "miss")
        self.fetches += 1
        try:
            fetched = self._source.fetch(name, digest)
        except ArtifactNotFound:
            self._count("store", "not_found")
            raise
        except Exception:
            self._count("store", "error")
            raise
        self._count("store", "hit")
        if fetched.artifact is None:
            if fetched.component is None:
                raise ArtifactError(f"{name}@{digest} has neither artifact nor component")
            if self._metrics is not None:
                self._metrics.compiles.inc()
            return self._loader.load(fetched.component), fetched.config
        loaded = self._loader.load_artifact(fetched.wasm_sha256, fetched.artifact)
        self._write_disk(meta_path, fetched)
        return loaded, fetched.config

    def _count(self, tier: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.artifact_cache.labels(tier, result).inc()

    def _read_disk(self, meta_path: Path) -> tuple[FunctionConfig, str, bytes] | None:
        try:
            meta = json.loads(meta_path.read_text())
            artifact = (self._dir / meta["artifact_sha256"]).read_bytes()
        except (OSError, ValueError, KeyError):
            return None
        if not hmac.compare_digest(self._tag(artifact), meta.get("tag", "")):
            log.warning("cached artifact %s failed verification; refetching", meta_path.name)
            return None
        return FunctionConfig.from_dict(meta["config"]), meta["wasm_sha256"], artifact

    def _write_disk(self, meta_path: Path, fetched: FetchedArtifact) -> None:
        assert fetched.artifact is not None
        meta = {
            "config": fetched.config.to_dict(),
            "wasm_sha256": fetched.wasm_sha256,
            "artifact_sha256": fetched.artifact_sha256,
            "tag": self._tag(fetched.artifact),
        }
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self._dir / fetched.artifact_sha256, fetched.artifact)
            _atomic_write(meta_path, json.dumps(meta).encode())
        except OSError as exc:  # a full or read-only disk only costs a refetch later
            log.warning("could not cache artifact %s on disk: %s", fetched.artifact_sha256, exc)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:200]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
