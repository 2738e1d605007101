"""The process-wide wasmtime Engine: pooling allocator, epoch interruption, one ticker thread.

An engine is expensive (it owns the compiled-code cache and the instance pool), so the worker
builds exactly one at startup. Its settings also decide whether a serialized artifact can be
loaded, so they feed `fingerprint`, which keys the compile cache.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import platform
import threading
import time
from dataclasses import dataclass

import wasmtime
from wasmtime import _ffi as ffi

from flotilla.sandbox.rawabi import VERSION as RAW_ABI_VERSION

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class EngineSettings:
    """Knobs of the engine; those that change generated code also key the artifact cache."""

    tick_ms: float = 1.0  # epoch ticker period: the granularity of timeouts
    pooling: bool = True
    # Pool sizes: one invocation holds one component instance and its core instances.
    total_component_instances: int = 256
    total_core_instances: int = 2048
    total_memories: int = 512
    total_tables: int = 512
    total_stacks: int = 256
    max_core_instances_per_component: int = 64
    max_memories_per_component: int = 8
    max_tables_per_component: int = 16
    max_memory_size: int = 4 * GIB  # per memory; the per-function cap is the store limiter
    max_component_instance_size: int = 8 * MIB
    max_core_instance_size: int = 8 * MIB
    table_elements: int = 100_000
    # How a freed slot is reset for the next instance (docs/performance.md, "Sandbox: page
    # faults and memory resets", has the figures). The first `linear_memory_keep_resident`
    # bytes of a memory are restored in place (memcpy from the CoW image, memset elsewhere)
    # and stay mapped; the rest is given back with madvise and faulted in again by the next
    # instance. The Python echo's memory is 12.3 MiB: at 2 MiB it took ~143 minor faults per
    # invocation, at 16 MiB 0, for the same CPU on one thread (user time up by about what
    # system time goes down). On two threads of one process the faults are what kept the
    # second thread from helping (madvise in a shared address space interrupts the other
    # thread's CPU for a TLB shootdown): quiet machine, 2 threads 907/s at 2 MiB, 1,629/s at
    # 16 MiB. The copy costs min(this, the memory's size) whatever the guest touched, hence
    # a cap. PAGEMAP_SCAN (copy only dirty pages) has no setter in wasmtime's C API.
    linear_memory_keep_resident: int = 16 * MIB
    # Tables: the Python echo's 5,684-entry table is 45 KiB; kept resident it costs a memset,
    # given back it cost 13 more faults per invocation.
    table_keep_resident: int = 1 * MIB
    # Freed slots keep affinity to their module and up to keep_resident bytes of private
    # memory each. Below this many unused warm slots, a module without one of its own takes a
    # never-used slot; above it, it takes over another module's warm slot. So it bounds the
    # private memory held by idle slots (~(this + running invocations) x min(16 MiB, memory):
    # 40 WAT functions of 4 MiB cycled through: +131 MiB RSS at 64, +34 MiB at 16), at the
    # price of re-mapping images when more functions than this alternate in one process.
    max_unused_warm_slots: int = 16
    # Decommits (madvise) queued and flushed this many at a time; 1 flushes at once. Batching
    # changed nothing measurable here (the same faults; with 16 MiB kept there is almost
    # nothing left to decommit) and keeps freed slots unusable until the flush.
    decommit_batch_size: int = 1
    # Map memory images copy-on-write instead of copying data segments at instantiation. Off,
    # the Python echo took 2,542 faults and ~6 ms per invocation.
    memory_init_cow: bool = True
    # None: wasmtime's default (32 MiB). Guard pages are never touched, so their size moved
    # no fault or time figure; it changes generated code, so it is in the fingerprint.
    memory_guard_size: int | None = None
    max_wasm_stack: int = 1 * MIB
    # Process-wide glibc malloc tuning (0: leave malloc alone). wasmtime's C API turns a
    # list<u8> into one 32-byte C value (and one Rust value) per byte, so a 64 KiB body makes
    # several MiB-sized allocations per call. glibc serves those with fresh mmaps and gives
    # them back on free, so every call page-faults its buffers in again: over half the
    # per-KiB cost. With mmap off and this much free heap kept before trimming, the buffers
    # are reused warm. The price: up to this many freed bytes stay resident per arena.
    malloc_keep_freed: int = 256 * MIB

    def fingerprint_data(self) -> dict[str, object]:
        """The settings that change generated code or its layout (serialized into the key)."""
        return {
            "pooling": self.pooling,
            "max_memory_size": self.max_memory_size,
            "max_wasm_stack": self.max_wasm_stack,
            "epoch": True,
            # artifacts are compiled from the component with the byte-string export added
            "raw_abi": RAW_ABI_VERSION,
            # Both are recorded in a serialized artifact, which then refuses to load on an
            # engine that differs; only listed when not the default so that adding them kept
            # existing fingerprints (and compile caches) valid.
            **({} if self.memory_init_cow else {"memory_init_cow": False}),
            **(
                {}
                if self.memory_guard_size is None
                else {"memory_guard_size": self.memory_guard_size}
            ),
        }


def wasmtime_version() -> str:
    """Installed wasmtime-py version (artifacts only load on the version that made them)."""
    from importlib.metadata import version

    return version("wasmtime")


def engine_fingerprint(settings: EngineSettings) -> str:
    """Stable id of (wasmtime version, code-affecting engine settings)."""
    data = json.dumps(
        {"wasmtime": wasmtime_version(), **settings.fingerprint_data()}, sort_keys=True
    )
    return f"wasmtime-{wasmtime_version()}-{hashlib.sha256(data.encode()).hexdigest()[:16]}"


def build_config(settings: EngineSettings) -> wasmtime.Config:
    """A wasmtime Config for `settings` (epoch interruption on, pooling allocator if asked)."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.wasm_component_model = True
    config.max_wasm_stack = settings.max_wasm_stack
    ffi.wasmtime_config_memory_init_cow_set(config.ptr(), settings.memory_init_cow)
    if settings.memory_guard_size is not None:
        config.memory_guard_size = settings.memory_guard_size
    if settings.pooling:
        _set_pooling(config, settings)
    return config


def _set_pooling(config: wasmtime.Config, s: EngineSettings) -> None:
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(
            pool, s.total_component_instances
        )
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(
            pool, s.total_core_instances
        )
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, s.total_memories)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, s.total_tables)
        ffi.wasmtime_pooling_allocation_config_total_stacks_set(pool, s.total_stacks)
        ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set(
            pool, s.max_core_instances_per_component
        )
        ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set(
            pool, s.max_memories_per_component
        )
        ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set(
            pool, s.max_tables_per_component
        )
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, s.max_memory_size)
        ffi.wasmtime_pooling_allocation_config_max_component_instance_size_set(
            pool, s.max_component_instance_size
        )
        ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(
            pool, s.max_core_instance_size
        )
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pool, s.table_elements)
        ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(
            pool, s.linear_memory_keep_resident
        )
        ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(pool, s.table_keep_resident)
        ffi.wasmtime_pooling_allocation_config_max_unused_warm_slots_set(
            pool, s.max_unused_warm_slots
        )
        ffi.wasmtime_pooling_allocation_config_decommit_batch_size_set(
            pool, s.decommit_batch_size
        )
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)


class EpochTicker:
    """One daemon thread per engine that increments its epoch every `tick_ms`."""

    def __init__(self, engine: wasmtime.Engine, tick_ms: float) -> None:
        self._engine = engine
        self._period = tick_ms / 1000.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flotilla-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Sleeps overshoot under load; count ticks from the clock so the epoch tracks real
        # time (a 3 s timeout must not become 6 s because each 1 ms sleep took 2 ms).
        start = time.monotonic()
        ticks = 0
        while not self._stop.wait(self._period):
            due = int((time.monotonic() - start) / self._period)
            while ticks < due:
                self._engine.increment_epoch()
                ticks += 1

    def close(self) -> None:
        """Stop the thread (the engine must outlive this call)."""
        self._stop.set()
        self._thread.join()


@dataclass
class EngineHandle:
    """An engine with its ticker and the fingerprint of its settings."""

    engine: wasmtime.Engine
    settings: EngineSettings
    fingerprint: str
    ticker: EpochTicker

    def ticks_for(self, timeout_ms: int) -> int:
        """Epoch ticks covering `timeout_ms` (rounded up, at least one)."""
        return max(1, -(-int(timeout_ms) // max(1, int(self.settings.tick_ms))) + 1)

    def close(self) -> None:
        """Stop the ticker."""
        self.ticker.close()


M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
M_MMAP_MAX = -4


def tune_malloc(keep_freed: int) -> bool:
    """Serve large allocations from the heap and keep `keep_freed` bytes of it (glibc only)."""
    if keep_freed <= 0 or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(keep_freed, 2**31 - 1)))
    )


def build_engine(settings: EngineSettings | None = None) -> EngineHandle:
    """Create the engine, start its epoch ticker, compute its fingerprint."""
    settings = settings or EngineSettings()
    tune_malloc(settings.malloc_keep_freed)
    engine = wasmtime.Engine(build_config(settings))
    return EngineHandle(
        engine=engine,
        settings=settings,
        fingerprint=engine_fingerprint(settings),
        ticker=EpochTicker(engine, settings.tick_ms),
    )


__all__ = [
    "EngineHandle",
    "EngineSettings",
    "build_engine",
    "engine_fingerprint",
    "tune_malloc",
]
