"""`flotilla bench sandbox`: invocation cost of the Sandbox beside a naive wasmtime-py baseline.

Both sides run the same components in the same process: the trivial WAT echo and the Python
echo example. The baseline is wasmtime-py's public API used the obvious way (default Config,
Linker.instantiate, Func.__call__ with Record values, post_return).
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
from flotilla.sandbox.results import Request
from flotilla.sandbox.sandbox import LoadedFunction, Sandbox, new_request

SIZES_KIB = (1, 64, 1024)
PHASES = ("store_us", "instantiate_us", "call_us", "post_return_us")


@dataclass(frozen=True)
class Plan:
    """How many invocations each measurement takes."""

    trivial: int = 2000
    python: int = 200
    per_size: tuple[int, ...] = (300, 30, 4)
    baseline_scale: float = 0.25  # the baseline is slower; run fewer of its invocations


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


Runner = Callable[[Request], dict[str, float]]


def measure(run: Runner, request: Request, n: int) -> dict[str, float]:
    """p50/p99 of the total and p50 of each phase over `n` invocations (after a warm-up).

    The total is what the issue calls a full invocation: new store, instantiate, call,
    post-return. Dropping the store afterwards is reported apart (`teardown_p50_us`), for
    both sides alike.
    """
    for _ in range(min(20, max(1, n // 10))):
        run(request)
    samples = [run(request) for _ in range(max(1, n))]
    totals = [s["total_us"] for s in samples]
    out = {"p50_us": statistics.median(totals), "p99_us": percentile(totals, 99)}
    for phase in PHASES:
        out[f"{phase[:-3]}_p50_us"] = statistics.median(s.get(phase, 0.0) for s in samples)
    out["teardown_p50_us"] = statistics.median(s["teardown_us"] for s in samples)
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


def summarize(trivial: Runner, python: Runner | None, plan: Plan, scale: float) -> dict[str, Any]:
    """The figures for one side (flotilla or baseline)."""
    n = lambda k: max(1, int(k * scale))
    small = measure(trivial, new_request("bench", b""), n(plan.trivial))
    out: dict[str, Any] = {
        "trivial_p50_us": small["p50_us"],
        "trivial_p99_us": small["p99_us"],
        "trivial_phases_p50_us": {k: v for k, v in small.items() if k not in ("p50_us", "p99_us")},
    }
    if python is not None:
        py = measure(python, new_request("bench", b"x"), n(plan.python))
        out.update(
            {
                "python_p50_us": py["p50_us"],
                "python_p99_us": py["p99_us"],
                "python_phases_p50_us": {
                    k: v for k, v in py.items() if k not in ("p50_us", "p99_us")
                },
            }
        )
    per_kib = {}
    for kib, count in zip(SIZES_KIB, plan.per_size):
        body = bytes(range(256)) * (kib * 4)  # every byte value, not just ASCII
        sized = measure(trivial, new_request("bench", body), n(count))
        per_kib[str(kib)] = max(0.0, (sized["p50_us"] - small["p50_us"]) / kib)
    out["per_kib_us"] = per_kib
    return out


def run_bench(
    cache_dir: str | Path,
    *,
    python_app: Path | None,
    plan: Plan | None = None,
    baseline: bool = True,
) -> dict[str, Any]:
    """Measure both sides; returns {"flotilla": {...}, "baseline": {...}}."""
    from flotilla.sandbox.guests import packaged

    plan = plan or Plan()
    echo = packaged("echo", cache_dir)
    python_wasm = None
    if python_app is not None:
        from flotilla.build import build_guest

        python_wasm = build_guest(python_app, cache_dir=cache_dir).read_bytes()
    config = FunctionConfig(name="bench", max_body_bytes=MAX_MAX_BODY_BYTES)
    sandbox = Sandbox(None, cache_dir=cache_dir)
    try:
        trivial = flotilla_runner(sandbox, sandbox.load(echo), config)
        python = (
            flotilla_runner(sandbox, sandbox.load(python_wasm), config) if python_wasm else None
        )
        results: dict[str, Any] = {"flotilla": summarize(trivial, python, plan, 1.0)}
        results["flotilla"]["call_path"] = sandbox.call_path  # "c-extension" or "ctypes"
    finally:
        sandbox.close()
    if baseline:
        naive = Naive()
        results["baseline"] = summarize(
            naive.runner(echo),
            naive.runner(python_wasm) if python_wasm else None,
            plan,
            plan.baseline_scale,
        )
    return results


def format_table(results: dict[str, Any]) -> str:
    """Human-readable figures, flotilla beside baseline."""
    sides = list(results)
    rows = [
        ("trivial p50 (us)", "trivial_p50_us"),
        ("trivial p99 (us)", "trivial_p99_us"),
        ("python echo p50 (us)", "python_p50_us"),
        ("python echo p99 (us)", "python_p99_us"),
    ]
    lines = [f"{'':28}" + "".join(f"{s:>14}" for s in sides)]
    for label, key in rows:
        lines.append(f"{label:28}" + "".join(_cell(results[s].get(key)) for s in sides))
    for which in ("trivial", "python"):
        for phase in ("store", "instantiate", "call", "post_return", "teardown"):
            key = f"{phase}_p50_us"
            cells = [_cell(results[s].get(f"{which}_phases_p50_us", {}).get(key)) for s in sides]
            lines.append(f"{which + ' ' + phase + ' p50 (us)':28}" + "".join(cells))
    for kib in SIZES_KIB:
        cells = [_cell(results[s]["per_kib_us"].get(str(kib))) for s in sides]
        lines.append(f"{f'per KiB at {kib} KiB (us)':28}" + "".join(cells))
    path = results.get("flotilla", {}).get("call_path")
    if path:
        lines.append(f"{'flotilla call path':28}{path:>14}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:>14.1f}" if isinstance(value, (int, float)) else f"{'-':>14}"
