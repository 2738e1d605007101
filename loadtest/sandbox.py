"""`flotilla bench sandbox`: invocation cost of the Sandbox beside a naive wasmtime-py baseline.

Both sides run the same components in the same process: the trivial WAT echo, the Python
echo example and any extra echo guest (`--guest NAME=PATH`, or `EXTRA_GUESTS`). The baseline
is wasmtime-py's public API used the obvious way (default Config, Linker.instantiate,
Func.__call__ with Record values, post_return). Each guest's loop also reports its minor page
faults and CPU time per invocation (`loadtest.sandbox_scaling.counters`), and the Python echo
loop is run in 1 thread, 2 threads and 2 processes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime.component import Component, Linker, Record

from flotilla.config import MAX_MAX_BODY_BYTES, FunctionConfig
from flotilla.sandbox.engine import EngineSettings
from flotilla.sandbox.results import Request
from flotilla.sandbox.sandbox import LoadedFunction, Sandbox, new_request
from loadtest.sandbox_scaling import counters, loop_rates

SIZES_KIB = (1, 64, 1024)
PHASES = ("store_us", "instantiate_us", "call_us", "post_return_us")
# Echo guests measured beside the WAT and Python echoes, by name: a built component
# (`.wasm`) or anything `flotilla build` accepts. Every one must answer 200 with the
# request's body. Keys become JSON prefixes: `<name>_full_p50_us`, `<name>_minflt_per_inv`.
EXTRA_GUESTS: dict[str, Path] = {}
# Per-guest figures also copied to the top level of the JSON (the headline keys).
HEADLINE = ("minflt_per_inv", "full_p50_us")


@dataclass(frozen=True)
class Plan:
    """How many invocations each measurement takes."""

    trivial: int = 2000
    python: int = 200
    per_size: tuple[int, ...] = (300, 30, 4)
    baseline_scale: float = 0.25  # the baseline is slower; run fewer of its invocations
    scaling: int = 600  # Python echo invocations per thread/process in the 1-vs-2 loops (0: skip)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


Runner = Callable[[Request], dict[str, float]]


def measure(run: Runner, request: Request, n: int) -> dict[str, float]:
    """p50/p99 of the total and p50 of each phase over `n` invocations (after a warm-up).

    The total (`p50_us`) is new store, instantiate, call, post-return; dropping the store
    afterwards is reported apart (`teardown_p50_us`), for both sides alike, and
    `full_p50_us` is the median of the two together. `minflt_per_inv`, `user_us_per_inv`
    and `sys_us_per_inv` are this thread's minor page faults and CPU time over the loop.
    """
    for _ in range(min(20, max(1, n // 10))):
        run(request)
    before = counters()
    samples = [run(request) for _ in range(max(1, n))]
    usage = before.per_call(counters(), len(samples))
    totals = [s["total_us"] for s in samples]
    out = {"p50_us": statistics.median(totals), "p99_us": percentile(totals, 99)}
    out["full_p50_us"] = statistics.median(s["total_us"] + s["teardown_us"] for s in samples)
    for phase in PHASES:
        out[f"{phase[:-3]}_p50_us"] = statistics.median(s.get(phase, 0.0) for s in samples)
    out["teardown_p50_us"] = statistics.median(s["teardown_us"] for s in samples)
    out.update(usage)
    return out


USAGE_KEYS = ("full_p50_us", "minflt_per_inv", "user_us_per_inv", "sys_us_per_inv")
PHASE_NAMES = ("store", "instantiate", "call", "post_return", "teardown")


def guest_figures(name: str, figures: dict[str, float]) -> dict[str, Any]:
    """`measure`'s figures for one guest under `<name>_` keys (phases in one sub-dict)."""
    out: dict[str, Any] = {
        f"{name}_p50_us": figures["p50_us"],
        f"{name}_p99_us": figures["p99_us"],
        f"{name}_phases_p50_us": {
            k: v for k, v in figures.items() if k.endswith("_p50_us") and k[:-7] in PHASE_NAMES
        },
    }
    out.update({f"{name}_{key}": figures[key] for key in USAGE_KEYS})
    return out



def flotilla_runner(sandbox: Sandbox, fn: LoadedFunction, config: FunctionConfig) -> Runner:
    """One Sandbox.invoke; phases from its own timings."""

    def run(request: Request) -> dict[str, float]:
        result = sandbox.invoke(fn, config, request)
        if not result.ok:
            raise RuntimeError(f"bench invocation failed: {result.outcome}: {result.error}")
        t = result.timings
        return {
            "total_us": t.invocation_us,
            "teardown_us": t.teardown_us,
            "store_us": t.store_us,
            "instantiate_us": t.instantiate_us,
            "call_us": t.call_us,
            "post_return_us": t.post_return_us,
        }

    return run


class Naive:
    """wasmtime-py's public API with default settings: the baseline."""

    def __init__(self) -> None:
        self.engine = wasmtime.Engine()
        self.linker = Linker(self.engine)
        self.linker.add_wasip2()
        # The echo guests never call a host; the world's imports only need to link.
        from flotilla.hosts.registry import INTERFACES
        from flotilla.sandbox.linker import interface_name

        with self.linker.root() as root:
            for iface in INTERFACES:
                with root.add_instance(interface_name(iface.name)) as inst:
                    for fn in iface.funcs:
                        inst.add_func(fn.name, _unused_host_func)

    def runner(self, wasm: bytes) -> Runner:
        """A runner for `wasm` (compiled once, like any sensible embedder)."""
        component = Component(self.engine, wasm)

        def run(request: Request) -> dict[str, float]:
            p = time.perf_counter
            t0 = p()
            store = wasmtime.Store(self.engine)
            store.set_wasi(wasmtime.WasiConfig())
            t1 = p()
            instance = self.linker.instantiate(store, component)
            handle = instance.get_func(store, "handle")
            assert handle is not None
            t2 = p()
            record = Record()
            setattr(record, "invocation-id", request.invocation_id)
            setattr(record, "function-name", request.function_name)
            record.headers = list(request.headers)  # type: ignore[attr-defined]
            record.body = request.body  # type: ignore[attr-defined]
            response = handle(store, record)
            t3 = p()
            handle.post_return(store)
            t4 = p()
            assert response.status == 200
            store.close()
            return {
                "total_us": (t4 - t0) * 1e6,
                "teardown_us": (p() - t4) * 1e6,
                "store_us": (t1 - t0) * 1e6,
                "instantiate_us": (t2 - t1) * 1e6,
                "call_us": (t3 - t2) * 1e6,
                "post_return_us": (t4 - t3) * 1e6,
            }

        return run


def _unused_host_func(store: Any, *args: Any) -> None:
    raise RuntimeError("the bench guests make no host calls")


def summarize(
    trivial: Runner,
    python: Runner | None,
    plan: Plan,
    scale: float,
    extra: dict[str, Runner] | None = None,
) -> dict[str, Any]:
    """The figures for one side (flotilla or baseline)."""
    n = lambda k: max(1, int(k * scale))
    small = measure(trivial, new_request("bench", b""), n(plan.trivial))
    out = guest_figures("trivial", small)
    echoes = {"python": python, **(extra or {})}
    for name, runner in echoes.items():
        if runner is not None:
            figures = measure(runner, new_request("bench", b"x"), n(plan.python))
            out.update(guest_figures(name, figures))
    per_kib = {}
    for kib, count in zip(SIZES_KIB, plan.per_size):
        body = bytes(range(256)) * (kib * 4)  # every byte value, not just ASCII
        sized = measure(trivial, new_request("bench", body), n(count))
        per_kib[str(kib)] = max(0.0, (sized["p50_us"] - small["p50_us"]) / kib)
    out["per_kib_us"] = per_kib
    return out


def load_guest(source: Path, cache_dir: str | Path) -> bytes:
    """Component bytes of an echo guest: a `.wasm` file as is, anything else built."""
    if source.suffix == ".wasm":
        return source.read_bytes()
    from flotilla.build import build_guest

    return build_guest(source, cache_dir=cache_dir).read_bytes()


def run_bench(
    cache_dir: str | Path,
    *,
    python_app: Path | None,
    plan: Plan | None = None,
    baseline: bool = True,
    guests: dict[str, Path] | None = None,
    engine_settings: EngineSettings | None = None,
) -> dict[str, Any]:
    """Measure both sides: {"flotilla": {...}, "baseline": {...}} and the headline keys.

    `guests` adds echo guests to EXTRA_GUESTS; `engine_settings` replaces the Sandbox's
    defaults (to measure a setting; the baseline keeps wasmtime's defaults).
    """
    from flotilla.sandbox.guests import packaged

    plan = plan or Plan()
    echo = packaged("echo", cache_dir)
    python_wasm = load_guest(python_app, cache_dir) if python_app is not None else None
    sources = {**EXTRA_GUESTS, **(guests or {})}
    extra = {name: load_guest(path, cache_dir) for name, path in sources.items()}
    config = FunctionConfig(name="bench", max_body_bytes=MAX_MAX_BODY_BYTES)
    sandbox = Sandbox(None, cache_dir=cache_dir, engine_settings=engine_settings)
    try:
        run = lambda wasm: flotilla_runner(sandbox, sandbox.load(wasm), config)
        results: dict[str, Any] = {
            "flotilla": summarize(
                run(echo),
                run(python_wasm) if python_wasm else None,
                plan,
                1.0,
                {name: run(wasm) for name, wasm in extra.items()},
            )
        }
        results["flotilla"]["call_path"] = sandbox.call_path  # "c-extension" or "ctypes"
    finally:
        sandbox.close()
    if python_wasm and plan.scaling > 0:
        rates = loop_rates(cache_dir, python_wasm, engine_settings, plan.scaling)
        results["flotilla"].update({f"python_{k}": v for k, v in rates.items()})
    if baseline:
        naive = Naive()
        results["baseline"] = summarize(
            naive.runner(echo),
            naive.runner(python_wasm) if python_wasm else None,
            plan,
            plan.baseline_scale,
            {name: naive.runner(wasm) for name, wasm in extra.items()},
        )
    results.update(headline(results["flotilla"], ["trivial", "python", *extra]))
    return results


def headline(side: dict[str, Any], guests: list[str]) -> dict[str, float]:
    """The Sandbox's per-guest fault and full-invocation figures and loop rates, flat."""
    keys = [f"{g}_{k}" for g in guests for k in HEADLINE]
    keys += [f"python_{k}" for k in ("1thread_inv_per_s", "2thread_inv_per_s", "2proc_inv_per_s")]
    return {k: side[k] for k in keys if k in side}


SIDES = ("flotilla", "baseline")


def format_table(results: dict[str, Any]) -> str:
    """Human-readable figures, flotilla beside baseline."""
    sides = [s for s in SIDES if s in results]
    guests = ["trivial", "python"] + sorted(
        {k[: -len("_full_p50_us")] for k in results["flotilla"] if k.endswith("_full_p50_us")}
        - {"trivial", "python"}
    )
    rows = []
    for g in guests:
        rows += [
            (f"{g} p50 (us)", f"{g}_p50_us"),
            (f"{g} p99 (us)", f"{g}_p99_us"),
            (f"{g} full p50, teardown incl. (us)", f"{g}_full_p50_us"),
            (f"{g} minor faults / inv", f"{g}_minflt_per_inv"),
            (f"{g} user CPU / inv (us)", f"{g}_user_us_per_inv"),
            (f"{g} system CPU / inv (us)", f"{g}_sys_us_per_inv"),
        ]
    width = 36
    lines = [f"{'':{width}}" + "".join(f"{s:>14}" for s in sides)]
    for label, key in rows:
        lines.append(f"{label:{width}}" + "".join(_cell(results[s].get(key)) for s in sides))
    for which in guests:
        for phase in PHASE_NAMES:
            key = f"{phase}_p50_us"
            cells = [_cell(results[s].get(f"{which}_phases_p50_us", {}).get(key)) for s in sides]
            lines.append(f"{which + ' ' + phase + ' p50 (us)':{width}}" + "".join(cells))
    for kib in SIZES_KIB:
        cells = [_cell(results[s]["per_kib_us"].get(str(kib))) for s in sides]
        lines.append(f"{f'per KiB at {kib} KiB (us)':{width}}" + "".join(cells))
    for label, key in (
        ("python echo, 1 thread (inv/s)", "python_1thread_inv_per_s"),
        ("python echo, 2 threads (inv/s)", "python_2thread_inv_per_s"),
        ("python echo, 2 processes (inv/s)", "python_2proc_inv_per_s"),
    ):
        if key in results["flotilla"]:
            lines.append(f"{label:{width}}{_cell(results['flotilla'][key])}")
    path = results.get("flotilla", {}).get("call_path")
    if path:
        lines.append(f"{'flotilla call path':{width}}{path:>14}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:>14.1f}" if isinstance(value, (int, float)) else f"{'-':>14}"
