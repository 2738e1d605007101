"""`flotilla bench sandbox`, per language: a full invocation of each language's echo, same run.

Adds `python_p50_us`, `rust_p50_us`, `js_p50_us` (QuickJS), `ts_p50_us` and `c_p50_us` beside
the sandbox figures, and under `languages` each one's p50/p99, component size and source,
with the WAT echo measured alongside as the baseline. A language whose echo or toolchain is
missing is null, with the reason under `languages`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.build import BuildError, build_source, missing_toolchain
from flotilla.config import FunctionConfig
from flotilla.errors import FlotillaError
from flotilla.sandbox.sandbox import LoadedFunction, Sandbox, new_request

REPO_ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ("python", "rust", "js", "ts", "c")
# Where each language's echo example may live; the first that exists is measured.
ECHO_CANDIDATES = {
    lang: [f"examples/echo/{lang}", f"examples/{lang}/echo", f"examples/echo-{lang}"]
    for lang in LANGUAGES
}
ECHO_CANDIDATES["python"] = ["examples/echo/app.py"]
BODY = b"hello"


@dataclass(frozen=True)
class Counts:
    """Invocations measured per guest (after a warm-up of a tenth, at most 20)."""

    compiled: int = 2000  # WAT, Rust, C, JS, TS: tens of microseconds each
    python: int = 200  # about 2 ms each


def find_echo(language: str, root: Path = REPO_ROOT) -> Path | None:
    """The first existing echo example of `language`, or None."""
    return next((root / c for c in ECHO_CANDIDATES[language] if (root / c).exists()), None)


def p50_p99(sandbox: Sandbox, fn: LoadedFunction, n: int) -> tuple[float, float]:
    """Median and 99th percentile of `n` full invocations (store, instantiate, call, post)."""
    config = FunctionConfig(name="bench")
    request = new_request("bench", BODY)
    totals = []
    for i in range(min(20, max(1, n // 10)) + n):
        result = sandbox.invoke(fn, config, request)
        if not result.ok:
            raise RuntimeError(f"echo failed: {result.outcome.value}: {result.error}")
        totals.append(result.timings.invocation_us)
    measured = sorted(totals[-n:])
    return statistics.median(measured), measured[min(len(measured) - 1, round(0.99 * n))]


def measure_languages(cache_dir: str | Path, *, quick: bool = False) -> dict[str, Any]:
    """`<lang>_p50_us` for every language (None when unavailable) and a `languages` table."""
    from flotilla.sandbox.guests import packaged

    counts = Counts(100, 10) if quick else Counts()
    table: dict[str, dict[str, Any]] = {}
    sandbox = Sandbox(None, cache_dir=cache_dir)
    try:
        wat = sandbox.load(packaged("echo", cache_dir))
        p50, p99 = p50_p99(sandbox, wat, counts.compiled)
        table["wat"] = {"p50_us": p50, "p99_us": p99, "source": "flotilla/sandbox/wat/echo.wat"}
        for language in LANGUAGES:
            table[language] = _one(sandbox, language, cache_dir, counts)
    finally:
        sandbox.close()
    out: dict[str, Any] = {f"{lang}_p50_us": table[lang].get("p50_us") for lang in LANGUAGES}
    out["languages"] = table
    return out


def _one(sandbox: Sandbox, language: str, cache_dir: str | Path, counts: Counts) -> dict[str, Any]:
    echo = find_echo(language)
    if echo is None:
        looked = ", ".join(ECHO_CANDIDATES[language])
        return {"p50_us": None, "reason": f"no {language} echo example (looked in {looked})"}
    reason = missing_toolchain(language)
    if reason is not None:
        return {"p50_us": None, "reason": reason}
    try:
        _, built = build_source(echo, language=language, cache_dir=cache_dir, check=False)
        fn = sandbox.load(built.path.read_bytes())
    except (BuildError, FlotillaError) as exc:
        return {"p50_us": None, "reason": str(exc).splitlines()[0]}
    n = counts.python if language == "python" else counts.compiled
    p50, p99 = p50_p99(sandbox, fn, n)
    return {
        "p50_us": p50,
        "p99_us": p99,
        "size_bytes": built.path.stat().st_size,
        "raw_export": fn.raw is not None,  # bodies cross in one copy (rawabi)
        "source": str(echo.relative_to(REPO_ROOT)),
    }


def format_languages(results: dict[str, Any]) -> str:
    """A table: language, p50, p99, size, or why it was not measured."""
    lines = [f"{'echo by language':28}{'p50 (us)':>14}{'p99 (us)':>14}{'size (MB)':>14}"]
    for language, row in results["languages"].items():
        if row.get("p50_us") is None:
            lines.append(f"{language:28}{'-':>14}  {row.get('reason', '')}")
            continue
        size = row.get("size_bytes")
        shown = f"{size / 1e6:>14.2f}" if size else f"{'-':>14}"
        lines.append(f"{language:28}{row['p50_us']:>14.1f}{row['p99_us']:>14.1f}{shown}")
    return "\n".join(lines)
