"""Real builds of the examples and the probe: valid components of the `function` world.

Each guest is built once per machine and content (shared guest cache), so a warm run
takes about a second; a cold one about 13 s of CPU per guest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from flotilla.build import build
from flotilla.config import FunctionConfig
from tests.guests.build import EXAMPLES, guest_source, python_guest

pytestmark = pytest.mark.slow

EXAMPLE_NAMES = ["echo", "cache-readthrough", "token-vending", "s3-dynamodb"]
WASM_TOOLS = str(Path(sys.executable).with_name("wasm-tools"))
HANDLE = "export handle: func(request: request) -> result<response, string>;"


def component_world(path: Path) -> str:
    """The root world of a component, as printed by `wasm-tools component wit`."""
    text = subprocess.run(
        [WASM_TOOLS, "component", "wit", str(path)], check=True, capture_output=True, text=True
    ).stdout
    start = text.index("world root {")
    return text[start : text.index("\n}\n", start)]


@pytest.mark.parametrize("name", [*EXAMPLE_NAMES, "probe"])
def test_guest_is_a_valid_function_component(name: str) -> None:
    path = python_guest(name)
    subprocess.run(
        [WASM_TOOLS, "validate", "--features", "component-model", str(path)],
        check=True,
        capture_output=True,
    )
    world = component_world(path)
    assert HANDLE in world
    imports = re.findall(r"^\s*import ([^;]+);", world, re.MULTILINE)
    assert "flotilla:function/cache@0.1.1" in imports
    assert [i for i in imports if not i.startswith(("wasi:", "flotilla:function/"))] == []


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_has_a_valid_config_and_readme(name: str) -> None:
    config = FunctionConfig.from_dict(json.loads((EXAMPLES / name / "config.json").read_text()))
    assert config.name == name
    assert (EXAMPLES / name / "README.md").read_text().startswith(f"# {name}\n")


def test_rebuilding_a_built_guest_is_a_fast_cache_hit(tmp_path: Path) -> None:
    cached = python_guest("echo")
    inode = cached.stat().st_ino

    def no_compiler(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        raise AssertionError("componentize-py ran on a cache hit")

    result = build(guest_source("echo"), tmp_path / "echo.wasm", run=no_compiler)
    assert result.cached
    assert result.seconds < 2.0
    assert cached.stat().st_ino == inode  # not rewritten
    assert (tmp_path / "echo.wasm").read_bytes() == cached.read_bytes()


def test_flotilla_build_command_writes_the_component(tmp_path: Path) -> None:
    cached = python_guest("echo")
    out = tmp_path / "fn.wasm"
    done = subprocess.run(
        [sys.executable, "-m", "flotilla", "build", str(guest_source("echo")), "-o", str(out)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "cache hit" in done.stdout
    assert out.read_bytes() == cached.read_bytes()
