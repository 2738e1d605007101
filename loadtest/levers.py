"""Engine settings compared interleaved: `python -m loadtest.levers NAME:SETTING=VALUE,... ...`.

For each round and each configuration (in turn, so load drifts hit all alike): a fresh
Sandbox with those EngineSettings, the guest loaded and warmed, then `--n` invocations on one
thread (median full invocation with teardown, minor faults, user/system CPU per invocation)
and the same loop in 1 and 2 threads (invocations/s). Prints the median over rounds of each
figure, one markdown row per configuration (the tables in docs/performance.md).

`pagemap_scan=1` is an experiment, not a setting: wasmtime's PAGEMAP_SCAN reset has no C API
setter, so for wasmtime-py 50.0.1 on x86-64 this flips the byte of the pooling config that
holds it (found by diffing the config's bytes after each setter and checking that the engine
then opens /proc/self/pagemap) before the config is handed to the engine.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from flotilla.commands.bench import PYTHON_ECHO, _engine_settings
from flotilla.config import MAX_MAX_BODY_BYTES, FunctionConfig
from flotilla.sandbox import engine as engine_module
from flotilla.sandbox.engine import wasmtime_version
from flotilla.sandbox.sandbox import Sandbox, new_request
from loadtest.sandbox import flotilla_runner, load_guest, measure
from loadtest.sandbox_scaling import counters, thread_figures

PAGEMAP_OFFSET = 133  # PoolingAllocationConfig.pagemap_scan in wasmtime-py 50.0.1's library
COLUMNS = (
    "minflt_per_inv", "user_us_per_inv", "sys_us_per_inv", "full_p50_us", "t1", "t2", "cpu1", "cpu2"
)


class _PagemapPoke:
    """Stands in for wasmtime._ffi in engine.py: sets pagemap_scan=Auto before use."""

    def __init__(self, ffi: Any) -> None:
        self._ffi = ffi

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ffi, name)

    def wasmtime_pooling_allocation_strategy_set(self, config: Any, pool: Any) -> None:
        """Flip the byte (checked to hold Enabled::No first), then pass the pool config on."""
        base = ctypes.cast(pool, ctypes.c_void_p).value or 0
        if wasmtime_version() != "50.0.1" or ctypes.string_at(base + 132, 3) != b"\x02\x02\x00":
            raise RuntimeError("pagemap_scan=1 is only known for wasmtime-py 50.0.1's layout")
        ctypes.memset(base + PAGEMAP_OFFSET, 0, 1)  # Enabled::Auto
        self._ffi.wasmtime_pooling_allocation_strategy_set(config, pool)


def pagemap_open() -> bool:
    """Whether this process has /proc/self/pagemap open (wasmtime opens it for the scan)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("/pagemap"):
                return True
        except OSError:
            continue
    return False


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    """`name:key=value,key=value` (or just `name`) into (name, overrides)."""
    name, _, rest = text.partition(":")
    pairs = dict(p.split("=", 1) for p in rest.split(",") if p)
    return name, pairs


def build(cache_dir: str, overrides: dict[str, str]) -> Sandbox:
    """A Sandbox with `overrides` applied to the default EngineSettings."""
    overrides = dict(overrides)
    poke = overrides.pop("pagemap_scan", "0") == "1"
    settings = _engine_settings(list(overrides.items()))
    real_ffi = engine_module.ffi
    if poke:
        engine_module.ffi = _PagemapPoke(real_ffi)  # type: ignore[assignment]
    try:
        sandbox = Sandbox(None, cache_dir=cache_dir, engine_settings=settings)
    finally:
        engine_module.ffi = real_ffi
    if poke and not pagemap_open():
        raise RuntimeError("pagemap_scan=1 did not take effect (no /proc/self/pagemap open)")
    return sandbox


def run_paired(
    cache_dir: str, wasm: bytes, configs: list[tuple[str, dict[str, str]]], n: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Every configuration alive at once, invoked in turn one call at a time (so each sees the
    same load), then 1- and 2-thread blocks in turn: per configuration, the medians."""
    boxes = {name: build(cache_dir, overrides) for name, overrides in configs}
    try:
        fns = {name: sb.load(wasm) for name, sb in boxes.items()}
        config = FunctionConfig(name="bench", max_body_bytes=MAX_MAX_BODY_BYTES)
        request = new_request("bench", b"x")
        calls: dict[str, list[dict[str, float]]] = {name: [] for name in boxes}
        for i in range(n + 20):
            for name, sb in boxes.items():
                before = counters()
                result = sb.invoke(fns[name], config, request)
                usage = before.per_call(counters(), 1)
                if not result.ok:
                    raise RuntimeError(f"{name}: {result.outcome}: {result.error}")
                if i >= 20:  # warm-up
                    calls[name].append({**usage, "full_p50_us": result.timings.total_us})
        rates: dict[str, dict[str, list[float]]] = {
            name: {k: [] for k in COLUMNS[4:]} for name in boxes
        }
        for _ in range(rounds):
            for name, sb in boxes.items():
                for threads in (1, 2):
                    rate, cpu = thread_figures(sb, fns[name], n // 2, threads)
                    rates[name][f"t{threads}"].append(rate)
                    rates[name][f"cpu{threads}"].append(cpu)
    finally:
        for sb in boxes.values():
            sb.close()
    out = {}
    for name in boxes:
        # faults and CPU: means over the calls (the rusage user/system split is sampled)
        figures = {
            k: statistics.mean(c[k] for c in calls[name])
            for k in ("minflt_per_inv", "user_us_per_inv", "sys_us_per_inv")
        }
        figures["full_p50_us"] = statistics.median(c["full_p50_us"] for c in calls[name])
        figures.update({k: statistics.median(v) for k, v in rates[name].items()})
        out[name] = figures
    return out


def run_one(cache_dir: str, wasm: bytes, overrides: dict[str, str], n: int) -> dict[str, float]:
    """One configuration once: single-thread figures, then 1- and 2-thread rates."""
    sandbox = build(cache_dir, overrides)
    try:
        fn = sandbox.load(wasm)
        config = FunctionConfig(name="bench", max_body_bytes=MAX_MAX_BODY_BYTES)
        figures = measure(flotilla_runner(sandbox, fn, config), new_request("bench", b"x"), n)
        figures["t1"], figures["cpu1"] = thread_figures(sandbox, fn, n, 1)
        figures["t2"], figures["cpu2"] = thread_figures(sandbox, fn, n, 2)
    finally:
        sandbox.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and print one markdown row per configuration."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.levers", description=__doc__)
    parser.add_argument("configs", nargs="+", help="NAME[:SETTING=VALUE,...]")
    parser.add_argument("--guest", default=str(PYTHON_ECHO), help="echo guest (.wasm or source)")
    parser.add_argument("--n", type=int, default=300, help="invocations per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cache-dir", default=os.environ.get("FLOTILLA_CACHE_DIR", "/tmp/flotilla")
    )
    parser.add_argument("--paired", action="store_true",
                        help="all configurations alive at once, invoked call by call in turn")
    args = parser.parse_args(argv)
    wasm = load_guest(Path(args.guest), args.cache_dir)
    configs = [parse_config(c) for c in args.configs]
    if args.paired:
        results = run_paired(args.cache_dir, wasm, configs, args.n, args.rounds)
        _print_table({name: results[name] for name, _ in configs})
        return 0
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, _ in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[: r % len(configs)]  # rotate the start
        for name, overrides in order:
            samples[name].append(run_one(args.cache_dir, wasm, overrides, args.n))
            print(f"round {r + 1} {name}: {_row(samples[name][-1])}", file=sys.stderr)
    _print_table(
        {name: {k: statistics.median(s[k] for s in samples[name]) for k in COLUMNS}
         for name, _ in configs}
    )
    return 0


def _print_table(rows: dict[str, dict[str, float]]) -> None:
    print("| configuration | faults/inv | user µs/inv | sys µs/inv | p50 full µs | 1 thread/s "
          "| 2 threads/s | CPU µs/inv, 1 thread | CPU µs/inv, 2 threads |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, figures in rows.items():
        print(f"| {name} | {_row(figures)} |")


def _row(figures: dict[str, float]) -> str:
    return " | ".join(
        f"{figures[k]:,.1f}" if k == "minflt_per_inv" else f"{figures[k]:,.0f}" for k in COLUMNS
    )


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "parse_config", "run_one"]
