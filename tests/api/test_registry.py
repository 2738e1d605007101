"""Registry and deployer unit tests on fakeredis with a fake compile step."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from flotilla.artifacts import ArtifactStore, LocalBackend
from flotilla.config import FunctionConfig
from flotilla.errors import ComponentError
from flotilla.registry import (
    Deployer,
    FunctionNotDeployed,
    Registry,
    version_digest,
)


@pytest.fixture
def registry() -> Registry:
    return Registry(fakeredis.FakeAsyncRedis(), prefix="t")


class FakeCompiler:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, wasm: bytes) -> bytes:
        self.calls += 1
        if not wasm.startswith(b"\0asm"):
            raise ComponentError("not a component")
        return b"compiled:" + wasm


@pytest.fixture
def deployer(registry: Registry, tmp_path) -> tuple[Deployer, FakeCompiler]:
    compiler = FakeCompiler()
    store = ArtifactStore(LocalBackend(tmp_path), "k")
    return Deployer(registry, store, compile=compiler, engine_fingerprint="eng1"), compiler


def cfg(name: str = "echo", **kw) -> FunctionConfig:
    return FunctionConfig.from_dict(kw, name=name)


def test_digest_depends_on_code_and_config() -> None:
    a = version_digest("aa", cfg())
    assert a == version_digest("aa", cfg())
    assert a != version_digest("ab", cfg())
    assert a != version_digest("aa", cfg(timeout_ms=5))
    # env order does not matter (canonical JSON)
    assert version_digest("aa", cfg(env={"A": "1", "B": "2"})) == version_digest(
        "aa", cfg(env={"B": "2", "A": "1"})
    )


async def test_deploy_records_versions_and_latest(deployer) -> None:
    d, _ = deployer
    v1, created1 = await d.deploy(cfg(), b"\0asm-one")
    v2, created2 = await d.deploy(cfg(timeout_ms=1000), b"\0asm-one")
    assert (created1, created2) == (True, True)
    assert (v1.number, v2.number) == (1, 2)
    reg = d.registry
    assert (await reg.get_version("echo")).digest == v2.digest
    assert (await reg.get_version("echo", v1.digest)).config.timeout_ms == 30_000
    assert (await reg.get_version("echo", v1.digest[:8])).number == 1
    assert (await reg.get_version("echo", "1")).digest == v1.digest
    assert [v.number for v in await reg.list_versions("echo")] == [1, 2]
    assert v1.artifact_sha256 == v2.artifact_sha256  # same bytes, same artifact
    assert v1.engine_fingerprint == "eng1"


async def test_identical_redeploy_is_a_noop(deployer) -> None:
    d, compiler = deployer
    v1, _ = await d.deploy(cfg(), b"\0asm-one")
    again, created = await d.deploy(cfg(), b"\0asm-one")
    assert created is False
    assert again == v1
    assert compiler.calls == 1
    assert len(await d.registry.list_versions("echo")) == 1


async def test_redeploying_an_old_version_makes_it_latest(deployer) -> None:
    d, _ = deployer
    v1, _ = await d.deploy(cfg(), b"\0asm-one")
    await d.deploy(cfg(), b"\0asm-two")
    back, created = await d.deploy(cfg(), b"\0asm-one")
    assert not created and back.digest == v1.digest
    assert (await d.registry.get_version("echo")).digest == v1.digest


async def test_invalid_component_records_nothing(deployer) -> None:
    d, _ = deployer
    with pytest.raises(ComponentError):
        await d.deploy(cfg(), b"garbage")
    with pytest.raises(FunctionNotDeployed):
        await d.registry.get_version("echo")


@pytest.mark.parametrize("selector", ["latest", "3", "deadbeef", "abc", "0"])
async def test_unknown_selectors(deployer, selector: str) -> None:
    d, _ = deployer
    await d.deploy(cfg(), b"\0asm-one")
    if selector == "latest":
        with pytest.raises(FunctionNotDeployed):
            await d.registry.get_version("other", selector)
    else:
        with pytest.raises(FunctionNotDeployed):
            await d.registry.get_version("echo", selector)


async def test_list_and_delete(deployer) -> None:
    d, _ = deployer
    await d.deploy(cfg("a"), b"\0asm-one")
    await d.deploy(cfg("b"), b"\0asm-one")
    await d.deploy(cfg("b", timeout_ms=9), b"\0asm-one")
    summaries = await d.registry.list_functions()
    assert [(s.name, s.version_count) for s in summaries] == [("a", 1), ("b", 2)]
    assert await d.registry.delete("b") is True
    assert await d.registry.delete("b") is False
    assert [s.name for s in await d.registry.list_functions()] == ["a"]
    with pytest.raises(FunctionNotDeployed):
        await d.registry.get_version("b")
    # a fresh deploy after delete starts again at version 1
    v, _ = await d.deploy(cfg("b"), b"\0asm-one")
    assert v.number == 1


async def test_resolve_cache_reuses_then_expires(deployer) -> None:
    from flotilla.registry import ResolveCache

    d, _ = deployer
    now = [100.0]
    cache = ResolveCache(d.registry, ttl_s=1.0, clock=lambda: now[0])
    with pytest.raises(FunctionNotDeployed):  # misses are not cached
        await cache.get_version("echo")
    v1, _ = await d.deploy(cfg(), b"\0asm-one")
    assert (await cache.get_version("echo")).digest == v1.digest
    v2, _ = await d.deploy(cfg(), b"\0asm-two")
    now[0] += 0.5
    assert (await cache.get_version("echo")).digest == v1.digest  # still fresh
    now[0] += 0.6
    assert (await cache.get_version("echo")).digest == v2.digest  # expired: re-read
    await d.deploy(cfg(), b"\0asm-one")
    cache.forget("echo")
    assert (await cache.get_version("echo")).digest == v1.digest  # forgotten: re-read


async def test_resolve_cache_concurrent_misses_share_one_registry_read(deployer) -> None:
    from flotilla.registry import ResolveCache

    d, _ = deployer
    v1, _ = await d.deploy(cfg(), b"\0asm-one")
    reads = []
    real = d.registry.get_version

    async def counting(name, selector="latest"):  # type: ignore[no-untyped-def]
        reads.append(name)
        return await real(name, selector)

    d.registry.get_version = counting
    cache = ResolveCache(d.registry, ttl_s=60.0)
    got = await asyncio.gather(*(cache.get_version("echo") for _ in range(50)))
    assert {v.digest for v in got} == {v1.digest}
    assert reads == ["echo"]
