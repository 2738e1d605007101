"""Results of load runs: a JSON document (summary, timeline, machine) and a PNG chart."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from loadtest.runner import RunResult


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, CPU model, memory, load average now."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def document(results: list[RunResult], params: dict[str, Any], bucket_s: float = 1.0
             ) -> dict[str, Any]:
    """The JSON document of one or more runs."""
    return {
        "params": params,
        "machine": machine(),
        "runs": [
            {"summary": r.summary(), "timeline": r.timeline(bucket_s)} for r in results
        ],
    }


def write(doc: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write `out`.json and `out`.png; returns both paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    png_path = out.with_suffix(".png")
    chart(doc, png_path)
    return json_path, png_path


def chart(doc: dict[str, Any], path: Path) -> None:
    """Throughput, latency (p50/p99) and errors over time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_lat, ax_err) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for run in doc["runs"]:
        label = f'{run["summary"]["name"]} c={run["summary"]["concurrency"]}'
        points = run["timeline"]
        t = [p["t"] for p in points]
        ax_rps.plot(t, [p["rps"] for p in points], label=label)
        (line,) = ax_lat.plot(t, [p["p50_ms"] for p in points], label=f"{label} p50")
        ax_lat.plot(t, [p["p99_ms"] for p in points], linestyle="--", color=line.get_color(),
                    label=f"{label} p99")
        ax_err.plot(t, [p["errors"] for p in points], label=label)
    ax_rps.set_ylabel("requests/s")
    ax_lat.set_ylabel("latency ms")
    ax_lat.set_yscale("log")
    ax_err.set_ylabel("errors")
    ax_err.set_xlabel("seconds since start")
    ax_rps.legend(fontsize="x-small", ncol=2)
    ax_lat.legend(fontsize="x-small", ncol=3)
    ax_rps.set_title(str(doc["params"].get("title", "Flotilla load test")))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table of dicts (missing values shown as -)."""
    cells = [[str(r.get(c, "-")) if r.get(c) is not None else "-" for c in columns]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
