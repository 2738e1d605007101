"""Build the Python test guests and examples with `flotilla.build`, cached by content.

`python_guest("probe")` builds tests/guests/python/probe/app.py; `python_guest("echo")`
builds examples/echo/app.py (test guests win on a name clash). Builds share Flotilla's
guest cache (`FLOTILLA_CACHE_DIR`, default ~/.cache/flotilla), so each guest is built
once per machine per content change, and concurrent test processes wait for one build.

To use the fixtures from another test directory, import them into its conftest.py:

    from tests.guests.build import probe_wasm, echo_wasm  # noqa: F401
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.build import build_guest

ROOT = Path(__file__).resolve().parents[2]
PYTHON_GUESTS = Path(__file__).resolve().parent / "python"
EXAMPLES = ROOT / "examples"


def guest_source(name: str) -> Path:
    """The app.py of test guest or example `name`."""
    for base in (PYTHON_GUESTS, EXAMPLES):
        app = base / name / "app.py"
        if app.is_file():
            return app
    raise LookupError(f"no Python guest {name!r} in {PYTHON_GUESTS} or {EXAMPLES}")


def python_guest(name: str) -> Path:
    """Path of the built component of guest `name` (in the shared cache; do not modify it)."""
    return build_guest(guest_source(name))


@pytest.fixture(scope="session")
def probe_wasm() -> Path:
    """The probe test guest (see tests/guests/python/probe/app.py for its ops)."""
    return python_guest("probe")


@pytest.fixture(scope="session")
def echo_wasm() -> Path:
    """examples/echo: returns the request's body and headers with status 200."""
    return python_guest("echo")


@pytest.fixture(scope="session")
def cache_readthrough_wasm() -> Path:
    """examples/cache-readthrough."""
    return python_guest("cache-readthrough")


@pytest.fixture(scope="session")
def token_vending_wasm() -> Path:
    """examples/token-vending."""
    return python_guest("token-vending")


@pytest.fixture(scope="session")
def s3_dynamodb_wasm() -> Path:
    """examples/s3-dynamodb."""
    return python_guest("s3-dynamodb")
