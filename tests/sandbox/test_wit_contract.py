"""The host interfaces the linker defines are exactly the ones `wit/flotilla.wit` declares.

The WIT is parsed by wasm-tools (`component wit --json`), so this is the real contract, not a
copy: every imported interface of the `function` world has a registered `Interface` with the
same function names and the same `error` variant cases (and which of them carry a string).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flotilla.hosts.registry import INTERFACES
from flotilla.sandbox.guests import find_wit_dir, wasm_tools
from flotilla.sandbox.linker import PACKAGE, VERSION

BY_NAME = {i.name: i for i in INTERFACES}


def _resolve() -> dict[str, Any]:
    done = subprocess.run(
        [wasm_tools(), "component", "wit", "--json", str(find_wit_dir())],
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def contract() -> dict[str, dict[str, Any]]:
    """Each imported interface: its function names and error cases, as the WIT says."""
    resolve = _resolve()
    world = next(w for w in resolve["worlds"] if w["name"] == "function")
    out: dict[str, dict[str, Any]] = {}
    for item in world["imports"].values():
        if "interface" not in item:
            continue
        iface = resolve["interfaces"][item["interface"]["id"]]
        if not iface["functions"]:
            continue  # `types`: type definitions only, nothing to link
        errors: dict[str, bool] = {}
        if "error" in iface["types"]:
            ty = resolve["types"][iface["types"]["error"]]
            errors = {c["name"]: c["type"] is not None for c in ty["kind"]["variant"]["cases"]}
        out[iface["name"]] = {"funcs": set(iface["functions"]), "errors": errors}
    return out


def test_the_linker_version_is_the_wits(contract: dict[str, dict[str, Any]]) -> None:
    text = (find_wit_dir() / "flotilla.wit").read_text()
    assert f"package {PACKAGE}@{VERSION};" in text


def test_every_imported_interface_is_registered(contract: dict[str, dict[str, Any]]) -> None:
    assert set(contract) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_functions_and_error_cases_match(name: str, contract: dict[str, dict[str, Any]]) -> None:
    registered = BY_NAME[name]
    assert {f.name for f in registered.funcs} == contract[name]["funcs"]
    assert dict(registered.errors) == contract[name]["errors"]
    if registered.errors:
        assert registered.fallback in registered.errors
        assert registered.deadline[0] in registered.errors


def test_wit_file_parses_as_the_linker_expects() -> None:
    resolve = _resolve()
    assert any(p["name"] == f"{PACKAGE}@{VERSION}" for p in resolve["packages"])
    assert Path(find_wit_dir()).is_dir()
