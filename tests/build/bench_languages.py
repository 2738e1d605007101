"""Full-invocation cost of the JS (QuickJS), TS, C and StarlingMonkey echoes beside the WAT echo.

    python -m tests.build.bench_languages [--json] [--starlingmonkey] [-n 2000]

Every echo runs in one Sandbox in the same run, measured with loadtest.sandbox's machinery
(new store, instantiate, call, post-return; body "x"), so the ratios to the WAT echo hold
whatever else the machine is doing. Prints p50/p99 in microseconds and component sizes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from flotilla.build import c as cbuild
from flotilla.build import js as jsbuild
from flotilla.config import FunctionConfig
from flotilla.sandbox.guests import packaged
from flotilla.sandbox.sandbox import Sandbox, new_request
from flotilla.settings import WorkerSettings
from loadtest.sandbox import flotilla_runner, measure

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def components(cache_dir: str, starlingmonkey: bool) -> dict[str, bytes]:
    """The echo of each language, built (or taken from the cache)."""
    built = {
        "wat": packaged("echo", cache_dir),
        "js": jsbuild.build_js(EXAMPLES / "js" / "echo", cache_dir=cache_dir).path.read_bytes(),
        "ts": jsbuild.build_js(EXAMPLES / "ts" / "echo", cache_dir=cache_dir).path.read_bytes(),
        "c": cbuild.build_c(EXAMPLES / "c" / "echo", cache_dir=cache_dir).path.read_bytes(),
    }
    if starlingmonkey:
        path = jsbuild.build_js(
            EXAMPLES / "js" / "echo", cache_dir=cache_dir, engine="starlingmonkey"
        )
        built["js_starlingmonkey"] = path.path.read_bytes()
    return built


def bench(n: int, starlingmonkey: bool) -> dict[str, Any]:
    """p50/p99 and size per language, measured one after another in one Sandbox."""
    cache_dir = os.environ.get("FLOTILLA_CACHE_DIR") or WorkerSettings.from_env().cache_dir
    wasm = components(cache_dir, starlingmonkey)
    config = FunctionConfig(name="bench", timeout_ms=10_000)
    sandbox = Sandbox(None, cache_dir=cache_dir)
    try:
        runners = {k: flotilla_runner(sandbox, sandbox.load(v), config) for k, v in wasm.items()}
        results: dict[str, Any] = {"call_path": sandbox.call_path, "n": n}
        request = new_request("bench", b"x")
        for name, run in runners.items():
            count = n // 10 if name == "js_starlingmonkey" else n
            figures = measure(run, request, count)
            results[f"{name}_p50_us"] = round(figures["p50_us"], 1)
            results[f"{name}_p99_us"] = round(figures["p99_us"], 1)
            results[f"{name}_instantiate_p50_us"] = round(figures["instantiate_p50_us"], 1)
            results[f"{name}_bytes"] = len(wasm[name])
            results[f"{name}_raw_export"] = sandbox.load(wasm[name]).raw is not None
    finally:
        sandbox.close()
    for name in wasm:
        if name != "wat":
            results[f"{name}_vs_wat"] = round(results[f"{name}_p50_us"] / results["wat_p50_us"], 2)
    return results


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--starlingmonkey", action="store_true", help="also the SM echo")
    parser.add_argument("-n", type=int, default=2000, help="invocations per language")
    args = parser.parse_args()
    results = bench(args.n, args.starlingmonkey)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
