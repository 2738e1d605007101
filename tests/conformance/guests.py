"""The conformance guests, one per language, each built once per session (cached by content).

`tests/guests/<language>/conformance/` holds each; `flotilla.build.build_source` builds it
with that language's builder. A language whose guest, builder or toolchain is missing is
skipped locally and FAILS under CI=true, so the suite cannot pass once everything is merged
with a language silently left out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.build import BuildError, build_source, missing_toolchain
from tests.services import unavailable

LANGUAGES = ("python", "rust", "js", "ts", "c")
GUESTS = Path(__file__).resolve().parents[1] / "guests"

_built: dict[str, Path | str] = {}  # language -> component, or why its build failed


def guest_dir(language: str) -> Path:
    """Where the conformance guest of `language` lives."""
    return GUESTS / language / "conformance"


def conformance_wasm(language: str) -> Path:
    """The built conformance guest of `language` (skipped locally when it cannot be built)."""
    directory = guest_dir(language)
    if not directory.is_dir():
        unavailable(f"no {language} conformance guest: {directory} does not exist")
    reason = missing_toolchain(language)
    if reason is not None:
        unavailable(reason)
    if language not in _built:
        try:
            # The sandbox's own load checks the world; building is what is cached here.
            _, result = build_source(directory, language=language, check=False)
            _built[language] = result.path
        except BuildError as exc:
            _built[language] = f"building the {language} conformance guest failed: {exc}"
    built = _built[language]
    if isinstance(built, str):
        pytest.fail(built, pytrace=False)
    return built
