"""Build the JavaScript, TypeScript and C test guests and examples, cached by content.

`guest("js", "conformance")` builds tests/guests/js/conformance; `example("ts",
"token-vending")` builds examples/ts/token-vending. Builds share Flotilla's guest cache
(`FLOTILLA_CACHE_DIR`), so each is built once per machine per content change. A missing
toolchain skips the test locally and fails it under CI=true (like a missing service).
"""

from __future__ import annotations

from pathlib import Path

from flotilla.build import c as cbuild
from flotilla.build import js as jsbuild
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "tests" / "guests"
EXAMPLES = ROOT / "examples"
LANGUAGES = ("js", "ts", "c")


def require(language: str, engine: str = "quickjs") -> None:
    """Skip (fail under CI) unless the toolchain of `language` is installed."""
    if language == "c":
        problem = cbuild.toolchain()
    else:
        problem = jsbuild.toolchain(engine, typescript=language == "ts")
    if problem is not None:
        unavailable(f"{language} guests cannot be built: {problem}")


def build(source: Path, language: str, engine: str = "quickjs") -> Path:
    """The built component of the guest at `source` (in the shared cache: do not modify)."""
    require(language, engine)
    if language == "c":
        return cbuild.build_c(source).path
    return jsbuild.build_js(source, engine=engine).path


def guest(language: str, name: str) -> Path:
    """The built test guest tests/guests/<language>/<name>."""
    return build(GUESTS / language / name, language)


def example(language: str, name: str) -> Path:
    """The built example examples/<language>/<name>."""
    return build(EXAMPLES / language / name, language)
