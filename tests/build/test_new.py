"""`flotilla new`: every language's function builds, runs with status 200 and passes its own
test as it comes; existing directories and bad names are refused; templates ship."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flotilla.build import missing_toolchain
from flotilla.cli import main
from flotilla.commands import new
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("python", "rust", "js", "ts", "c")


def flotilla(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `flotilla` command in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "flotilla", *args], cwd=cwd, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("language", LANGUAGES)
def test_new_function_builds_runs_and_passes_its_test(language: str, tmp_path: Path) -> None:
    reason = missing_toolchain(language)
    if reason is not None:
        unavailable(reason)
    created = flotilla("new", "hello", "--lang", language, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    fn = tmp_path / "hello"
    assert {"README.md", "config.json", "test_function.py", ".gitignore"} <= {
        p.name for p in fn.iterdir()
    }
    built = flotilla("build", ".", "-o", "fn.wasm", cwd=fn)
    assert built.returncode == 0, built.stderr
    assert f"({language}, " in built.stdout
    ran = flotilla("run", "fn.wasm", "--data", "hi", cwd=fn)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("status: 200\n")
    assert ran.stdout.endswith("\n\nHello from hello! You sent: hi\n")
    with_config = flotilla("run", "fn.wasm", "--config", "config.json", "--data", "hi", cwd=fn)
    assert with_config.returncode == 0, with_config.stderr
    own_test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=fn,
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert own_test.returncode == 0, own_test.stdout + own_test.stderr
    assert "1 passed" in own_test.stdout


def test_refuses_a_non_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    assert main(["new", str(target)]) == 1
    assert "already exists and is not empty; nothing was written" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    assert main(["new", str(tmp_path / "file")]) == 1


def test_an_empty_directory_is_filled(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert main(["new", str(target), "--lang", "c"]) == 0
    assert (target / "app.c").is_file()
    assert '"name": "empty"' in (target / "config.json").read_text()


@pytest.mark.parametrize("name", ["Hello", "1fn", "has_underscore", "a" * 64])
def test_refuses_names_that_cannot_name_a_function(tmp_path: Path, name: str) -> None:
    assert main(["new", str(tmp_path / name)]) == 1
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_placeholder_is_filled(language: str, tmp_path: Path) -> None:
    target = new.create(tmp_path / "fn-x", language, rust_sdk=tmp_path / "sdk")
    for path in target.rglob("*"):
        if path.is_file():
            assert not re.search(r"__[A-Z_]+__", path.read_text()), path


def test_rust_depends_on_the_sdk_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sdk = tmp_path / 'odd "dir"' / "flotilla"
    (sdk).mkdir(parents=True)
    (sdk / "Cargo.toml").write_text("[package]\n")
    new.create(tmp_path / "a", "rust", rust_sdk=sdk)
    cargo = tomllib.loads((tmp_path / "a" / "Cargo.toml").read_text())
    assert cargo["dependencies"]["flotilla"] == {"path": str(sdk)}
    assert cargo["package"]["name"] == "a"
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("FLOTILLA_RUST_SDK", str(tmp_path / "elsewhere"))
    new.create(tmp_path / "b", "rust")
    cargo = tomllib.loads((tmp_path / "b" / "Cargo.toml").read_text())
    assert cargo["dependencies"]["flotilla"]["path"] == str(tmp_path / "elsewhere")
    assert "no Rust SDK crate at" in capsys.readouterr().err
    monkeypatch.delenv("FLOTILLA_RUST_SDK")
    assert new.find_rust_sdk(None) == ROOT / "sdk" / "rust" / "flotilla"


def test_templates_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["flotilla"]
    shipped = {p for pattern in patterns for p in (ROOT / "flotilla").glob(pattern)}
    templates = {p for p in (ROOT / "flotilla" / "templates").rglob("*") if p.is_file()}
    assert templates and templates <= shipped
