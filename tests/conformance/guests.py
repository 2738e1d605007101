"""The conformance guests, one per language, each built once per session (cached by content).

`tests/guests/<language>/conformance/` holds each; `flotilla.build.build_source` builds it
with that language's builder. When a language's guest, builder or toolchain is missing,
`test_every_language_is_here` skips locally and FAILS under CI=true (so the suite cannot
pass with a language silently left out) and that language's cases skip; a guest that is
there but does not build fails every case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.build import BuildError, build_source, missing_toolchain

LANGUAGES = ("python", "rust", "js", "ts", "c")
GUESTS = Path(__file__).resolve().parents[1] / "guests"

_built: dict[str, Path | str] = {}  # language -> component, or why its build failed


def guest_dir(language: str) -> Path:
    """Where the conformance guest of `language` lives."""
    return GUESTS / language / "conformance"


def why_unavailable(language: str) -> str | None:
    """Why `language`'s guest cannot be built here (no guest, builder or toolchain), or None."""
    directory = guest_dir(language)
    if not directory.is_dir():
        return f"no {language} conformance guest: {directory} does not exist"
    return missing_toolchain(language)


def conformance_wasm(language: str) -> Path:
    """The built conformance guest of `language` (the test skips when it is unavailable)."""
    reason = why_unavailable(language)
    if reason is not None:
        pytest.skip(reason)
    if language not in _built:
        try:
            # The sandbox's own load checks the world; building is what is cached here.
            _, result = build_source(guest_dir(language), language=language, check=False)
            _built[language] = result.path
        except BuildError as exc:
            _built[language] = f"building the {language} conformance guest failed: {exc}"
    built = _built[language]
    if isinstance(built, str):
        pytest.fail(built, pytrace=False)
    return built
