"""The human-readable form of a doctor report: one line per check, failures that matter marked.

Marks: `ok` passed, `FAIL` failed and needed by the requested use, `--` failed but not
needed, `skip` not run.
"""

from __future__ import annotations

from typing import Any

from flotilla.doctor import CHECKS


def format_report(report: dict[str, Any], needed: list[str], failures: list[str]) -> str:
    """The report as text; `needed` and `failures` come from `required()` and `failed()`."""
    python = report["python"]
    header = (
        f"flotilla {report['version']}  Python {python['version']} "
        f"({python['implementation']}, {python['executable']})  "
        f"wasmtime {report['wasmtime'] or 'not installed'}"
    )
    lines = [
        header,
        f"call path: {report['call_path'] or 'none'}",
        "",
    ]
    checks = report["checks"]

    def line(name: str, text: str) -> str:
        return f"  {_mark(checks.get(name), name in needed):<5} {name:<17} {text}".rstrip()

    lines.append("install")
    for name in ("settings", "wasmtime", "c-extension", "wit", "cache"):
        lines.append(line(name, _install_text(report, name)))
    lines.append("services")
    for name, probe in report["services"].items():
        said = probe.get("detail") or probe.get("error") or ""
        took = f" ({probe['seconds'] * 1000:.0f} ms)" if "seconds" in probe else ""
        lines.append(line(name, f"{probe['target'] or ''}  {said}{took}".strip()))
    lines.append("toolchains")
    for name, tool in report["toolchains"].items():
        text = "  ".join(x for x in (tool["version"], tool["path"], tool["note"]) if x)
        lines.append(line(name, text))
    lines.append("extras")
    for name, extra in report["extras"].items():
        lines.append(line(f"extra:{name}", "missing: " + ", ".join(extra["missing"])
                          if extra["missing"] else "installed"))
    lines.append("")
    if not needed:
        lines.append("nothing required (pass --for USE or --require CHECK to make checks fatal)")
    elif failures:
        lines.append("missing: " + "; ".join(f"{n} ({CHECKS[n]})" for n in failures))
    else:
        lines.append(f"all {len(needed)} required checks pass")
    return "\n".join(lines)


def _mark(result: bool | None, needed: bool) -> str:
    if result is None:
        return "skip"
    if result:
        return "ok"
    return "FAIL" if needed else "--"


def _install_text(report: dict[str, Any], name: str) -> str:
    if name == "settings":
        return report["settings"]["error"] or "FLOTILLA_* variables load"
    if name == "wasmtime":
        return report["wasmtime"] or "not installed"
    if name == "c-extension":
        return str(report["call_path_detail"])
    if name == "wit":
        return report["wit"]["path"] or report["wit"].get("error", "")
    cache = report["cache"]
    if cache["dir"] is None:
        return str(cache.get("error", ""))
    state = ("" if cache["exists"] else "not created yet, ") + (
        "writable" if cache["writable"] else "NOT writable")
    parts = ", ".join(f"{k} {_size(v)}" for k, v in cache["parts"].items())
    return f"{cache['dir']}  {_size(cache['bytes'])} in {cache['files']} files" + (
        f" ({parts})" if parts else "") + f"; {state}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
