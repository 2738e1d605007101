"""Function registry: immutable, content-addressed versions in Redis, and the deploy step.

Redis layout (every key starts with `<prefix>:`, the deployment's queue prefix):

- `functions`: set of deployed function names;
- `fn:<name>`: hash with `latest` (digest of the newest deploy) and `updated_at`;
- `fn:<name>:versions`: sorted set of digests scored by version number (deploy order);
- `fn:<name>:v:<digest>`: JSON of one `FunctionVersion` (never changed once written);
- `fn:<name>:seq`: counter handing out version numbers;
- `deploys` (a pub/sub channel, not a key): every deploy publishes the function's name, so
  workers consume a new function's job lane at once (worker/lanes.py).

A version's digest is sha256(component sha256 + "\\n" + canonical config JSON), so
redeploying identical bytes and config finds the existing version and changes nothing
(if that version is not the newest, `latest` moves back to it: redeploying is a rollback).

Readers (dispatcher routes, workers): `get_version(name, selector)` where the selector is
`latest`, a digest, a unique digest prefix of at least 8 characters, or a version number.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flotilla.config import FunctionConfig
from flotilla.errors import FlotillaError

LATEST = "latest"
MIN_PREFIX = 8


class RegistryError(FlotillaError):
    """Base class of registry errors."""


class FunctionNotDeployed(RegistryError, LookupError):
    """No function with that name, or no version matching the selector."""


def canonical_config(config: FunctionConfig) -> str:
    """The config as canonical JSON (sorted keys, no spaces): part of the version digest."""
    return json.dumps(config.digest_dict(), sort_keys=True, separators=(",", ":"))


def version_digest(wasm_sha256: str, config: FunctionConfig) -> str:
    """sha256 over the component's sha256 and the canonical config JSON."""
    text = wasm_sha256 + "\n" + canonical_config(config)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FunctionVersion:
    """One immutable deploy of a function: its config and where its code lives."""

    name: str
    digest: str
    number: int
    config: FunctionConfig
    wasm_sha256: str
    wasm_size: int
    artifact_sha256: str
    engine_fingerprint: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (also the API's version representation)."""
        return {
            "name": self.name,
            "digest": self.digest,
            "number": self.number,
            "config": self.config.to_dict(),
            "wasm_sha256": self.wasm_sha256,
            "wasm_size": self.wasm_size,
            "artifact_sha256": self.artifact_sha256,
            "engine_fingerprint": self.engine_fingerprint,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunctionVersion:
        """Inverse of `to_dict`."""
        values = dict(data)
        values["config"] = FunctionConfig.from_dict(values["config"])
        return cls(**values)


@dataclass(frozen=True)
class FunctionSummary:
    """A function's name, its newest version and how many versions it has."""

    name: str
    latest: FunctionVersion
    version_count: int


def deploy_channel(prefix: str) -> str:
    """The Redis pub/sub channel a deploy's function name is published on."""
    return f"{prefix}:deploys"


class Registry:
    """Function metadata and version history in Redis (`redis.asyncio` client passed in)."""

    def __init__(self, redis: Any, *, prefix: str = "flotilla") -> None:
        self.redis = redis
        self.prefix = prefix

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def put_version(
        self,
        config: FunctionConfig,
        *,
        wasm_sha256: str,
        wasm_size: int,
        artifact_sha256: str,
        engine_fingerprint: str,
    ) -> tuple[FunctionVersion, bool]:
        """Record a deploy; returns (version, created). Identical deploys return the old one."""
        name = config.name
        digest = version_digest(wasm_sha256, config)
        vkey = self._k("fn", name, "v", digest)
        existing = await self.redis.get(vkey)
        if existing is None:
            number = int(await self.redis.incr(self._k("fn", name, "seq")))
            version = FunctionVersion(
                name=name,
                digest=digest,
                number=number,
                config=config,
                wasm_sha256=wasm_sha256,
                wasm_size=wasm_size,
                artifact_sha256=artifact_sha256,
                engine_fingerprint=engine_fingerprint,
                created_at=time.time(),
            )
            created = bool(await self.redis.set(vkey, json.dumps(version.to_dict()), nx=True))
            if not created:  # a concurrent identical deploy won the race
                existing = await self.redis.get(vkey)
        else:
            created = False
        if existing is not None:
            version = FunctionVersion.from_dict(json.loads(existing))
        async with self.redis.pipeline(transaction=True) as pipe:
            if created:
                pipe.zadd(self._k("fn", name, "versions"), {digest: version.number})
            pipe.hset(
                self._k("fn", name), mapping={"latest": digest, "updated_at": str(time.time())}
            )
            pipe.sadd(self._k("functions"), name)
            pipe.publish(deploy_channel(self.prefix), name)
            await pipe.execute()
        return version, created

    async def names(self) -> list[str]:
        """The names of every deployed function, sorted."""
        return sorted(_text(n) for n in await self.redis.smembers(self._k("functions")))

    async def get_version(self, name: str, selector: str | int = LATEST) -> FunctionVersion:
        """The version matching `selector`; FunctionNotDeployed when there is none."""
        digest = await self._resolve(name, str(selector))
        raw = await self.redis.get(self._k("fn", name, "v", digest))
        if raw is None:
            raise FunctionNotDeployed(f"function {name!r} has no version {selector!r}")
        return FunctionVersion.from_dict(json.loads(raw))

    async def _resolve(self, name: str, selector: str) -> str:
        if selector == LATEST or selector == "":
            latest = await self.redis.hget(self._k("fn", name), "latest")
            if latest is None:
                raise FunctionNotDeployed(f"function {name!r} is not deployed")
            return _text(latest)
        versions = self._k("fn", name, "versions")
        if selector.isascii() and selector.isdigit() and len(selector) < MIN_PREFIX:
            found = await self.redis.zrangebyscore(versions, selector, selector)
            if found:
                return _text(found[0])
        elif len(selector) >= MIN_PREFIX:
            if await self.redis.zscore(versions, selector) is not None:
                return selector
            matches = [
                _text(d) for d in await self.redis.zrange(versions, 0, -1)
                if _text(d).startswith(selector)
            ]
            if len(matches) == 1:
                return matches[0]
        raise FunctionNotDeployed(f"function {name!r} has no version {selector!r}")

    async def list_versions(self, name: str) -> list[FunctionVersion]:
        """Every version of a function, oldest first; empty when not deployed."""
        digests = await self.redis.zrange(self._k("fn", name, "versions"), 0, -1)
        if not digests:
            return []
        raws = await self.redis.mget([self._k("fn", name, "v", _text(d)) for d in digests])
        return [FunctionVersion.from_dict(json.loads(r)) for r in raws if r is not None]

    async def list_functions(self) -> list[FunctionSummary]:
        """Every deployed function with its latest version, sorted by name."""
        names = sorted(_text(n) for n in await self.redis.smembers(self._k("functions")))
        out = []
        for name in names:
            try:
                latest = await self.get_version(name)
            except FunctionNotDeployed:
                continue  # deleted between the two reads
            count = int(await self.redis.zcard(self._k("fn", name, "versions")))
            out.append(FunctionSummary(name, latest, count))
        return out

    async def delete(self, name: str) -> bool:
        """Forget a function and all its versions; False when it was not deployed.

        Components and artifacts stay in the artifact store: they are content-addressed
        and may be shared with other functions.
        """
        digests = await self.redis.zrange(self._k("fn", name, "versions"), 0, -1)
        keys = [self._k("fn", name, "v", _text(d)) for d in digests]
        keys += [self._k("fn", name), self._k("fn", name, "versions"), self._k("fn", name, "seq")]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self._k("functions"), name)
            pipe.delete(*keys)
            removed, _ = await pipe.execute()
        return bool(removed)


class VersionSource(Protocol):
    """Anything that resolves a version selector: the `Registry`, a `ResolveCache` over it,
    or a caller's own function (the Python client's `resolve=`)."""

    async def get_version(self, name: str, selector: str | int = LATEST) -> FunctionVersion:
        """The version matching `selector`; FunctionNotDeployed when there is none."""
        ...


class ResolveCache:
    """Resolved versions per (name, selector), reused for `ttl_s` seconds.

    Saves the registry round trips on every invocation. A deploy or delete made through
    another dispatcher is seen within `ttl_s`; this dispatcher's own deploys and deletes call
    `forget(name)` and are seen at once. Misses (not deployed) are never cached.
    """

    def __init__(
        self,
        registry: VersionSource,
        *,
        ttl_s: float = 1.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[float, FunctionVersion]] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[FunctionVersion]] = {}

    async def get_version(self, name: str, selector: str | int = LATEST) -> FunctionVersion:
        """Like `Registry.get_version`, from the cache when fresh.

        Concurrent misses of one key share a single registry read: when an entry expires
        under load, one Redis round trip refreshes it rather than one per waiting request
        (each of which would also open a pooled connection).
        """
        key = (name, str(selector))
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.registry.get_version(name, selector))
            self._pending[key] = pending
            pending.add_done_callback(lambda f: self._settle(key, f, now))
        return await asyncio.shield(pending)

    def _settle(
        self, key: tuple[str, str], future: asyncio.Future[FunctionVersion], began: float
    ) -> None:
        if self._pending.get(key) is not future:
            return  # forgotten meanwhile: do not cache what was read before the change
        del self._pending[key]
        if future.cancelled() or future.exception() is not None:
            return  # misses are not cached
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; entries live a second anyway
        self._entries[key] = (began, future.result())

    def forget(self, name: str) -> None:
        """Drop every cached selector of `name` (after a deploy or delete here)."""
        for key in [k for k in self._entries if k[0] == name]:
            del self._entries[key]
        for key in [k for k in self._pending if k[0] == name]:
            del self._pending[key]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


CompileFn = Callable[[bytes], bytes]


class Deployer:
    """The deploy step: validate + precompile once, store code, record the version.

    `compile` is `Sandbox.compile` (raises ComponentError for invalid components); it is
    blocking and runs in a thread. `engine_fingerprint` is the sandbox's.
    """

    def __init__(
        self,
        registry: Registry,
        artifacts: Any,
        *,
        compile: CompileFn,
        engine_fingerprint: str,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.compile = compile
        self.engine_fingerprint = engine_fingerprint

    async def deploy(self, config: FunctionConfig, wasm: bytes) -> tuple[FunctionVersion, bool]:
        """Deploy one component; returns (version, created). Identical redeploys skip compiling."""
        wasm_sha = hashlib.sha256(wasm).hexdigest()
        digest = version_digest(wasm_sha, config)
        try:
            existing = await self.registry.get_version(config.name, digest)
        except FunctionNotDeployed:
            existing = None
        if existing is not None and existing.engine_fingerprint == self.engine_fingerprint:
            return await self.registry.put_version(
                config,
                wasm_sha256=existing.wasm_sha256,
                wasm_size=existing.wasm_size,
                artifact_sha256=existing.artifact_sha256,
                engine_fingerprint=existing.engine_fingerprint,
            )
        artifact = await asyncio.to_thread(self.compile, wasm)
        await asyncio.to_thread(self.artifacts.put_component, wasm)
        artifact_sha = await asyncio.to_thread(
            self.artifacts.put_artifact, artifact, self.engine_fingerprint
        )
        return await self.registry.put_version(
            config,
            wasm_sha256=wasm_sha,
            wasm_size=len(wasm),
            artifact_sha256=artifact_sha,
            engine_fingerprint=self.engine_fingerprint,
        )
