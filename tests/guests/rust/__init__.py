"""Rust test guests (crates in the folders here) and the Rust examples, built with `flotilla.build.rust`.

`rust_guest("conformance")` builds tests/guests/rust/conformance; `rust_example("echo")`
builds examples/rust/echo. Builds share Flotilla's guest cache, so each crate is built once
per machine per content change (std once per toolchain, ~60 s of CPU; a crate ~5 s). A
machine without the Rust toolchain skips these tests locally and fails them under CI=true.
"""

from __future__ import annotations

from pathlib import Path

from tests.services import unavailable

GUESTS = Path(__file__).resolve().parent
EXAMPLES = GUESTS.parents[2] / "examples" / "rust"
SDK = GUESTS.parents[2] / "sdk" / "rust" / "flotilla"


def build_crate(crate: Path) -> Path:
    """The built component of `crate` (in the shared cache; do not modify it)."""
    from flotilla.build.rust import build_rust, toolchain

    problem = toolchain()
    if problem is not None:
        unavailable(f"cannot build Rust guests: {problem}; run `make toolchains`")
    return build_rust(crate).path


def rust_guest(name: str) -> Path:
    """The built component of test guest `name` (tests/guests/rust/<name>)."""
    return build_crate(GUESTS / name)


def rust_example(name: str) -> Path:
    """The built component of example `name` (examples/rust/<name>)."""
    return build_crate(EXAMPLES / name)
