"""The pooling allocator's memory reset, under every engine setting that changes how it works.

Each invocation runs in a fresh instance, but the pool reuses its memory and table slots:
state written by one invocation must never be seen by the next. A WAT guest reads chosen
cells (zero pages, data-segment pages, pages past a kept-resident prefix, a grown page, a
table and a global) and then overwrites them; a Python guest keeps module-level state. Both
must report the initial state on every call, whatever the reset strategy. The settings are
also shown to be applied: keeping memory resident removes the guest's page faults.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.sandbox import Sandbox
from flotilla.sandbox.engine import MIB, EngineSettings, build_config
from tests.guests.wat import build_wat
from tests.sandbox.conftest import config, persistent_cache_dir, req

PYSTATE = Path(__file__).resolve().parent / "pystate" / "app.py"
# Small pools: every case builds its own engine beside the session's.
SMALL = dataclasses.replace(
    EngineSettings(),
    total_component_instances=8,
    total_core_instances=64,
    total_memories=16,
    total_tables=16,
    total_stacks=8,
)
CASES = {
    "defaults": SMALL,
    "nothing kept resident": dataclasses.replace(SMALL, linear_memory_keep_resident=0),
    "3 MiB kept (boundary inside the image)": dataclasses.replace(
        SMALL, linear_memory_keep_resident=3 * MIB
    ),
    "64 MiB kept (all memset)": dataclasses.replace(SMALL, linear_memory_keep_resident=64 * MIB),
    "tables not kept": dataclasses.replace(SMALL, table_keep_resident=0),
    "batched decommits": dataclasses.replace(
        SMALL, linear_memory_keep_resident=0, decommit_batch_size=8
    ),
    "no warm slots": dataclasses.replace(SMALL, max_unused_warm_slots=0),
    "on-demand allocator": dataclasses.replace(SMALL, pooling=False),
}
EXPECTED = (0, int.from_bytes(b"SEED", "little"), 0, int.from_bytes(b"DEEP", "little"),
            64, 64, 0, 0, 0, 0, 1, 7)


def _sandbox(settings: EngineSettings, accelerate: bool | None = None) -> Sandbox:
    return Sandbox(
        None, cache_dir=persistent_cache_dir(), engine_settings=settings, accelerate=accelerate
    )


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A Sandbox built with one of CASES."""
    sb = _sandbox(CASES[request.param])
    yield sb
    sb.close()


def _report(sb: Sandbox, fn: object) -> tuple[int, ...]:
    result = sb.invoke(fn, config(), req())  # type: ignore[arg-type]
    assert result.ok, (result.outcome, result.error)
    assert result.response is not None
    return struct.unpack("<12i", result.response.body)


def test_no_memory_table_or_global_state_survives_an_invocation(case_sandbox: Sandbox) -> None:
    fn = case_sandbox.load(build_wat("reset"))
    reports = [_report(case_sandbox, fn) for _ in range(6)]
    assert reports == [EXPECTED] * 6


def test_interleaved_functions_do_not_see_each_other(case_sandbox: Sandbox) -> None:
    # Two functions alternate over the same pool: a warm slot kept for one must still be
    # reset when the other (or the same one) gets it.
    reset = case_sandbox.load(build_wat("reset"))
    echo = case_sandbox.load(build_wat("echo"))
    for i in range(4):
        assert _report(case_sandbox, reset) == EXPECTED
        answer = case_sandbox.invoke(echo, config(), req(b"hello %d" % i))
        assert answer.ok and answer.response is not None
        assert answer.response.body == b"hello %d" % i


def test_the_ctypes_path_resets_alike() -> None:
    sb = _sandbox(CASES["defaults"], accelerate=False)
    try:
        fn = sb.load(build_wat("reset"))
        assert [_report(sb, fn) for _ in range(3)] == [EXPECTED] * 3
    finally:
        sb.close()


@pytest.mark.parametrize(
    "name", ["defaults", "nothing kept resident", "64 MiB kept (all memset)", "on-demand allocator"]
)
def test_python_module_state_starts_over_in_every_instance(name: str) -> None:
    from flotilla.build import build_guest

    wasm = build_guest(PYSTATE, cache_dir=persistent_cache_dir()).read_bytes()
    sb = _sandbox(CASES[name])
    try:
        fn = sb.load(wasm)
        seen = []
        for _ in range(4):
            result = sb.invoke(fn, config(), req())
            assert result.ok, (result.outcome, result.error)
            assert result.response is not None
            seen.append(json.loads(result.response.body))
        assert seen == [{"calls": 0, "kept": 0, "bytes": 0}] * 4
    finally:
        sb.close()


def _faults_per_call(settings: EngineSettings, calls: int = 20) -> float:
    sb = _sandbox(settings)
    try:
        fn = sb.load(build_wat("reset"))
        for _ in range(5):
            _report(sb, fn)
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(calls):
            _report(sb, fn)
        return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / calls
    finally:
        sb.close()


def test_keep_resident_setting_reaches_the_pool() -> None:
    # The guest writes 64 pages at 2 MiB and a few more; with nothing kept resident the
    # reset gives them back to the kernel and every invocation faults them in again. Kept
    # resident (memset instead), they stay mapped: a count of faults, not a timing.
    dropped = _faults_per_call(CASES["nothing kept resident"])
    kept = _faults_per_call(CASES["64 MiB kept (all memset)"])
    assert dropped >= 64, dropped
    assert kept < 16, kept


def test_engine_defaults_keep_the_python_guest_resident() -> None:
    # The measured default (docs/performance.md): the Python echo's 12.3 MiB memory and its
    # 45 KiB table are reset by memset, not by madvise and page faults.
    defaults = EngineSettings()
    assert defaults.linear_memory_keep_resident >= 13 * MIB
    assert defaults.table_keep_resident >= 64 * 1024


def test_config_rejects_nothing_the_defaults_set() -> None:
    # build_config applies every field through wasmtime's C API; a bad value would raise.
    build_config(EngineSettings())
    build_config(dataclasses.replace(EngineSettings(), memory_guard_size=64 * 1024))


def test_the_probe_sees_its_own_writes_within_one_instance() -> None:
    # Proof that the reports above could fail: calling twice into the same instance (which
    # the Sandbox never does) shows every cell the guest dirtied.
    import wasmtime
    from wasmtime.component import Component, Record

    from loadtest.sandbox import Naive

    naive = Naive()
    component = Component(naive.engine, build_wat("reset"))
    store = wasmtime.Store(naive.engine)
    store.set_wasi(wasmtime.WasiConfig())
    handle = naive.linker.instantiate(store, component).get_func(store, "handle")
    assert handle is not None
    reports = []
    for _ in range(2):
        record = Record()
        setattr(record, "invocation-id", "i")
        setattr(record, "function-name", "t")
        record.headers = []  # type: ignore[attr-defined]
        record.body = b""  # type: ignore[attr-defined]
        response = handle(store, record)
        reports.append(struct.unpack("<12i", bytes(response.body)))
        handle.post_return(store)
    store.close()
    assert reports[0] == EXPECTED
    second = reports[1]
    assert second[0] == 0x11111111 and second[1] == 0x22222222
    assert second[2] == 0x33333333 and second[3] == 0x44444444
    assert second[4] == 65 and second[8] == 0x77777777
    assert second[9:] == (1, 0, 99)


def test_settings_recorded_in_artifacts_change_the_fingerprint() -> None:
    from flotilla.sandbox.engine import engine_fingerprint

    base = engine_fingerprint(EngineSettings())
    assert base != engine_fingerprint(dataclasses.replace(EngineSettings(), memory_init_cow=False))
    assert base != engine_fingerprint(
        dataclasses.replace(EngineSettings(), memory_guard_size=64 * 1024)
    )
    # pool-only settings do not touch the generated code
    assert base == engine_fingerprint(
        dataclasses.replace(EngineSettings(), linear_memory_keep_resident=0, decommit_batch_size=4)
    )
