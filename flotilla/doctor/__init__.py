"""`flotilla doctor`: what this installation, machine and settings give Flotilla.

`diagnose()` gathers versions, the sandbox's call path, the services of the current
settings, guest toolchains, installed extras and the compile cache into one JSON-able
report whose `checks` map every check name to True, False or None (not run). A use
(`USES`) names the checks it cannot do without; `failed()` lists those that did not pass.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from flotilla import __version__
from flotilla.doctor import services as service_probes
from flotilla.doctor import toolchains

CHECKS: dict[str, str] = {
    "settings": "the FLOTILLA_* variables load",
    "wasmtime": "wasmtime-py imports",
    "c-extension": "invocations use the C accelerator (not ctypes)",
    "wit": "Flotilla's WIT files are installed",
    "cache": "the cache directory is writable",
    "rabbitmq": "RabbitMQ (FLOTILLA_AMQP_URL) accepts a connection",
    "redis": "Redis (FLOTILLA_REDIS_URL) answers PING",
    "s3": "S3 (FLOTILLA_AWS_ENDPOINT_URL or AWS) answers for the artifact bucket",
    "componentize-py": "componentize-py runs (Python guests)",
    "wasm-tools": "wasm-tools runs (compiles and WAT guests)",
    "rust": "cargo/rustc can build wasm32-wasip2",
    "clang": "clang has a wasm32-wasi sysroot",
    "node": "node runs",
    "npm": "npm runs",
    "componentize-qjs": "componentize-qjs runs (JavaScript guests, QuickJS)",
    "componentize-js": "componentize-js runs (JavaScript guests, StarlingMonkey)",
    "jco": "jco runs",
    "extra:build": "the [build] extra is installed",
    "extra:dev": "the [dev] extra is installed",
    "extra:loadtest": "the [loadtest] extra is installed",
    "extra:tracing": "the [tracing] extra is installed (OpenTelemetry export)",
}

# What each use cannot do without. c-extension is never implied: the ctypes path is slower
# but correct; require it where you ship (deploy/Dockerfile does).
_PROCESS = ("settings", "wasmtime", "wasm-tools", "cache", "rabbitmq", "redis", "s3")
USES: dict[str, tuple[str, ...]] = {
    "worker": _PROCESS,
    "dispatcher": _PROCESS,
    "build": ("componentize-py", "wasm-tools", "wit"),
    "dev": ("settings", "wasmtime", "wasm-tools", "wit", "cache", "componentize-py",
            "extra:dev"),
}
EXTRAS = ("build", "dev", "loadtest", "tracing")
CTYPES_ENV = "FLOTILLA_SANDBOX_CTYPES"


class UsageError(ValueError):
    """The requested checks cannot be evaluated as asked (e.g. a skipped check is required)."""


def diagnose(*, services: bool = True, timeout: float = 2.0) -> dict[str, Any]:
    """The whole report; `services=False` skips the network checks."""
    settings, settings_error = load_settings()
    path, path_detail = call_path()
    report: dict[str, Any] = {
        "version": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "wasmtime": _dist_version("wasmtime"),
        "call_path": path,
        "call_path_detail": path_detail,
        "settings": {"ok": settings_error is None, "error": settings_error},
        "wit": wit(),
        "services": _services(settings, settings_error, services, timeout),
        "toolchains": {name: tool.as_json() for name, tool in toolchains.find_all().items()},
        "extras": extras(),
        "cache": cache(settings.cache_dir if settings else None),
    }
    report["checks"] = checks(report)
    return report


def load_settings() -> tuple[Any, str | None]:
    """The worker's settings (their shared fields name the services), or None and why not."""
    from flotilla.settings import DispatcherSettings, WorkerSettings

    try:
        DispatcherSettings.from_env()
        return WorkerSettings.from_env(), None
    except Exception as exc:  # noqa: BLE001 - a bad variable is a finding, not a crash
        return None, f"{type(exc).__name__}: {exc}"


def call_path() -> tuple[str | None, str]:
    """How the sandbox would make invocations here, and why: as `Sandbox.__init__` decides."""
    if os.environ.get(CTYPES_ENV, "") in ("1", "true"):
        return "ctypes", f"forced by {CTYPES_ENV}={os.environ[CTYPES_ENV]}"
    try:
        from flotilla.sandbox import fastpath
    except (ImportError, OSError) as exc:  # wasmtime missing or broken: no call path
        return None, f"wasmtime does not load: {type(exc).__name__}: {exc}"
    try:
        from flotilla.sandbox import _fastcall  # type: ignore[attr-defined]
    except ImportError as exc:
        return "ctypes", f"C accelerator not built or not loadable: {exc}"
    if fastpath.load() is None:
        mismatch = fastpath._layout_mismatch(_fastcall)
        return "ctypes", f"C accelerator disagrees with wasmtime-py: {mismatch}"
    return "c-extension", str(_fastcall.__file__)


def wit() -> dict[str, Any]:
    """Where Flotilla's WIT directory is (guest builds need it)."""
    from flotilla.sandbox.guests import GuestAssemblyError, find_wit_dir

    try:
        return {"ok": True, "path": str(find_wit_dir())}
    except GuestAssemblyError as exc:
        return {"ok": False, "path": None, "error": str(exc)}


def _services(
    settings: Any, settings_error: str | None, enabled: bool, timeout: float
) -> dict[str, Any]:
    if not enabled or settings is None:
        why = "skipped (--no-services)" if not enabled else f"settings: {settings_error}"
        return {name: {"target": None, "ok": None if not enabled else False, "error": why}
                for name in service_probes.SERVICES}
    probes = service_probes.probe_all(settings, timeout)
    return {name: probe.as_json() for name, probe in probes.items()}


def extras() -> dict[str, dict[str, Any]]:
    """For each extra of the installed flotilla: installed or not, and what is missing."""
    try:
        requires = metadata.requires("flotilla") or []
    except metadata.PackageNotFoundError:
        return {e: {"ok": False, "missing": ["flotilla (not installed)"]} for e in EXTRAS}
    wanted: dict[str, list[str]] = {e: [] for e in EXTRAS}
    for requirement in requires:
        marker = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if marker and name and marker.group(1) in wanted:
            wanted[marker.group(1)].append(name.group(0))
    report = {}
    for extra, names in wanted.items():
        missing = [n for n in names if _dist_version(n) is None]
        report[extra] = {"ok": not missing, "missing": missing}
    return report


def cache(directory: str | None) -> dict[str, Any]:
    """The compile cache: where, whether it is writable (or creatable), and its size."""
    if directory is None:
        return {"ok": False, "dir": None, "error": "settings do not load"}
    root = Path(directory)
    existing = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    writable = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    parts: dict[str, int] = {}
    files = 0
    for path in root.rglob("*") if root.is_dir() else []:
        try:
            if path.is_file() and not path.is_symlink():
                top = path.relative_to(root).parts[0] if path.parent != root else "(top)"
                parts[top] = parts.get(top, 0) + path.stat().st_size
                files += 1
        except OSError:
            continue  # removed while we walked (another process evicting)
    return {
        "ok": writable,
        "dir": str(root),
        "exists": root.is_dir(),
        "writable": writable,
        "bytes": sum(parts.values()),
        "files": files,
        "parts": dict(sorted(parts.items())),
    }


def checks(report: dict[str, Any]) -> dict[str, bool | None]:
    """Every check of CHECKS: True (passed), False (failed) or None (not run)."""
    results: dict[str, bool | None] = {
        "settings": report["settings"]["ok"],
        "wasmtime": report["call_path"] is not None,
        "c-extension": report["call_path"] == "c-extension",
        "wit": report["wit"]["ok"],
        "cache": report["cache"]["ok"],
    }
    for name, probe in report["services"].items():
        results[name] = probe["ok"]
    for name, tool in report["toolchains"].items():
        results[name] = tool["ok"]
    for name, extra in report["extras"].items():
        results[f"extra:{name}"] = extra["ok"]
    return results


def required(uses: list[str], names: list[str], *, services: bool = True) -> list[str]:
    """The checks that must pass for `uses` plus the explicitly `names`d ones, in order.

    Without services, the service checks a use implies are dropped; naming one is an error.
    """
    unknown = [n for n in names if n not in CHECKS] + [u for u in uses if u not in USES]
    if unknown:
        raise UsageError(f"unknown check or use: {', '.join(unknown)}")
    if not services:
        skipped = [n for n in names if n in service_probes.SERVICES]
        if skipped:
            raise UsageError(f"{', '.join(skipped)} required but --no-services skips it")
    out: list[str] = []
    for name in [n for use in uses for n in USES[use]] + list(names):
        if name not in out and (services or name not in service_probes.SERVICES):
            out.append(name)
    return out


def failed(report: dict[str, Any], needed: list[str]) -> list[str]:
    """The needed checks that did not pass."""
    return [name for name in needed if report["checks"].get(name) is not True]


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
