"""flotilla.build without componentize-py: cache keys, app checks, caching, errors, CLI.

The compiler is replaced by a fake runner that writes a few bytes where `-o` points, so
these tests take milliseconds; test_examples.py covers real builds.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from flotilla.build import (
    BuildError,
    build,
    build_guest,
    cache_key,
    check_app,
    evictions,
    find_wit_dir,
)
from flotilla.build import common as build_common
from flotilla.build import python as build_mod
from flotilla.cli import main

APP = """\
import wit_world
from wit_world.imports import types

class WitWorld(wit_world.WitWorld):
    def handle(self, request):
        return types.Response(status=200, headers=[], body=request.body)
"""
REPO_WIT = Path(__file__).resolve().parents[2] / "wit"


class FakeCompiler:
    """Stands in for componentize-py: counts calls, writes `output` to the -o path."""

    def __init__(
        self, output: bytes = b"\0asm-component", returncode: int = 0, stderr: str = ""
    ) -> None:
        self.output, self.returncode, self.stderr = output, returncode, stderr
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        with self.lock:
            self.calls.append(list(argv))
        target = Path(argv[argv.index("-o") + 1])
        target.write_bytes(self.output)
        return subprocess.CompletedProcess(list(argv), self.returncode, "", self.stderr)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A minimal guest app in its own directory."""
    path = tmp_path / "fn" / "app.py"
    path.parent.mkdir()
    path.write_text(APP)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """An empty cache directory."""
    return tmp_path / "cache"


def key_of(app: Path, wit: Path = REPO_WIT, version: str = "0.25.1") -> str:
    return cache_key(app, sorted(wit.glob("*.wit")), world="function", tool_version=version)


def test_find_wit_dir_is_the_repositorys() -> None:
    assert find_wit_dir() == REPO_WIT


@pytest.mark.parametrize(
    ("change", "key_changes"),
    [
        (lambda d: (d / "app.py").write_text(APP + "\n# edited\n"), True),
        (lambda d: (d / "helper.py").write_text("X = 1\n"), True),
        (lambda d: (d / "pkg").mkdir() or (d / "pkg" / "mod.py").write_text("Y = 2\n"), True),
        (lambda d: (d / "README.md").write_text("docs\n"), False),
        (lambda d: (d / "config.json").write_text("{}\n"), False),
        (
            lambda d: (d / "__pycache__").mkdir() or (d / "__pycache__" / "x.py").write_text(""),
            False,
        ),
        (lambda d: (d / ".venv").mkdir() or (d / ".venv" / "y.py").write_text(""), False),
    ],
    ids=["app.py", "new-module", "subpackage", "readme", "json", "pycache", "hidden-dir"],
)
def test_cache_key_covers_python_sources_only(app: Path, change, key_changes: bool) -> None:
    before = key_of(app)
    change(app.parent)
    assert (key_of(app) != before) is key_changes


def test_cache_key_covers_wit_tool_version_and_module_name(app: Path, tmp_path: Path) -> None:
    wit = tmp_path / "wit"
    wit.mkdir()
    (wit / "flotilla.wit").write_text((REPO_WIT / "flotilla.wit").read_text())
    base = key_of(app, wit)
    assert key_of(app, wit) == base
    assert key_of(app, wit, version="0.26.0") != base
    (wit / "flotilla.wit").write_text((REPO_WIT / "flotilla.wit").read_text() + "\n")
    assert key_of(app, wit) != base
    other = app.with_name("handler.py")
    other.write_text(APP)
    assert key_of(other, wit) != key_of(app, wit)


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("missing.py", None, "no such file"),
        ("app.txt", APP, "Python module named like 'app.py'"),
        ("my-app.py", APP, "Python module named like 'app.py'"),
        ("wit_world.py", APP, "'wit_world' is the bindings' module name"),
        ("app.py", "def handle(:\n", "app.py:1: syntax error"),
        ("app.py", "class Other:\n    pass\n", "defines no top-level 'class WitWorld"),
        ("app.py", "def f():\n    class WitWorld: pass\n", "defines no top-level 'class WitWorld"),
    ],
)
def test_check_app_rejects_bad_apps(
    tmp_path: Path, name: str, source: str | None, message: str
) -> None:
    path = tmp_path / name
    if source is not None:
        path.write_text(source)
    with pytest.raises(BuildError, match=re.escape(message)):
        check_app(path)


def test_check_app_accepts_a_guest(app: Path) -> None:
    check_app(app)


def test_second_build_is_a_cache_hit(app: Path, cache: Path, tmp_path: Path) -> None:
    compiler = FakeCompiler()
    first = build(app, tmp_path / "out1.wasm", cache_dir=cache, run=compiler)
    second = build(app, tmp_path / "out2.wasm", cache_dir=cache, run=compiler)
    assert len(compiler.calls) == 1
    assert (first.cached, second.cached) == (False, True)
    assert first.key == second.key
    assert (tmp_path / "out2.wasm").read_bytes() == compiler.output
    assert (cache / "guests" / f"{first.key}.wasm").read_bytes() == compiler.output


def test_build_invokes_componentize_py_with_the_world_and_app(app: Path, cache: Path) -> None:
    compiler = FakeCompiler()
    build(app, cache_dir=cache, run=compiler)
    argv = compiler.calls[0]
    assert Path(argv[0]).name == "componentize-py"
    assert argv[argv.index("-d") + 1] == str(REPO_WIT)
    assert argv[argv.index("-w") + 1] == "function"
    assert argv[argv.index("-p") + 1] == str(app.parent)
    assert argv[argv.index("componentize") + 3] == "app"


def test_editing_the_app_rebuilds(app: Path, cache: Path) -> None:
    compiler = FakeCompiler()
    first = build(app, cache_dir=cache, run=compiler)
    app.write_text(APP + "\n# v2\n")
    second = build(app, cache_dir=cache, run=compiler)
    assert len(compiler.calls) == 2
    assert first.key != second.key and not second.cached


def test_force_rebuilds_on_a_hit(app: Path, cache: Path) -> None:
    compiler = FakeCompiler()
    build(app, cache_dir=cache, run=compiler)
    result = build(app, cache_dir=cache, run=compiler, force=True)
    assert len(compiler.calls) == 2 and not result.cached


def test_build_guest_without_output_returns_the_cached_file(
    app: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_mod, "_run", FakeCompiler())
    path = build_guest(app, cache_dir=cache)
    assert path.parent == cache / "guests" and path.suffix == ".wasm"


def test_cache_dir_defaults_to_the_worker_setting(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_CACHE_DIR", str(tmp_path / "from-env"))
    monkeypatch.setattr(build_mod, "_run", FakeCompiler())
    assert build_guest(app).parent == tmp_path / "from-env" / "guests"


def test_concurrent_builds_of_one_key_run_the_compiler_once(app: Path, cache: Path) -> None:
    compiler = FakeCompiler()
    results: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(build(app, cache_dir=cache, run=compiler).cached)
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(compiler.calls) == 1
    assert sorted(results) == [False, True, True, True]
    assert not [p for p in (cache / "guests").iterdir() if p.suffix == ".tmp"]


def test_compiler_failure_shows_its_stderr_and_caches_nothing(app: Path, cache: Path) -> None:
    compiler = FakeCompiler(
        returncode=1, stderr="Traceback ...\nModuleNotFoundError: No module named 'nope'"
    )
    with pytest.raises(
        BuildError,
        match=r"componentize-py failed on .*app.py \(exit 1\):\n"
        r"Traceback ...\nModuleNotFoundError: No module named 'nope'",
    ):
        build(app, cache_dir=cache, run=compiler)
    assert [p.suffix for p in (cache / "guests").iterdir()] == [".lock"]


def test_empty_compiler_output_is_an_error(app: Path, cache: Path) -> None:
    with pytest.raises(BuildError, match="componentize-py failed"):
        build(app, cache_dir=cache, run=FakeCompiler(output=b""))


def test_compiler_timeout_is_a_build_error(app: Path, cache: Path) -> None:
    def slow(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(list(argv), 600)

    with pytest.raises(BuildError, match="took over 600 s"):
        build(app, cache_dir=cache, run=slow)


def test_missing_wit_dir_is_a_build_error(app: Path, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="WIT directory does not exist"):
        build(app, wit_dir=tmp_path / "nowhere", cache_dir=cache, run=FakeCompiler())


def test_cli_builds_to_the_output(
    app: Path,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(build_mod, "_run", FakeCompiler())
    out = tmp_path / "fn.wasm"
    # The fake output is no component: the world check has its own tests (test_detect.py).
    argv = ["build", str(app), "-o", str(out), "--cache-dir", str(cache), "--no-check"]
    assert main(argv) == 0
    assert "built in" in capsys.readouterr().out
    assert main(argv) == 0
    assert "cache hit in" in capsys.readouterr().out
    assert out.read_bytes() == b"\0asm-component"


def test_cli_default_output_is_named_after_the_directory(
    app: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_mod, "_run", FakeCompiler())
    monkeypatch.chdir(tmp_path)
    assert main(["build", str(app), "--cache-dir", str(cache), "--no-check"]) == 0
    assert (tmp_path / "fn.wasm").is_file()


def test_cli_reports_errors_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(tmp_path / "app.py"), "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flotilla build: error: ") and "no such file" in err


@pytest.mark.parametrize(
    ("entries", "max_bytes", "expected"),
    [
        ([], 10, []),
        ([("a", 5, 100.0), ("b", 5, 200.0)], 10, []),
        ([("a", 5, 100.0), ("b", 5, 200.0), ("c", 5, 300.0)], 10, ["a"]),
        ([("c", 5, 300.0), ("a", 5, 100.0), ("b", 5, 200.0)], 5, ["a", "b"]),
        # used within the grace period: kept even over budget
        ([("a", 5, 100.0), ("new", 50, 950.0)], 10, ["a"]),
        ([("a", 50, 990.0)], 10, []),
    ],
)
def test_evictions_drop_least_recently_used_first(
    entries: list[tuple[str, int, float]], max_bytes: int, expected: list[str]
) -> None:
    assert evictions(entries, max_bytes=max_bytes, now=1000.0, grace_s=100.0) == expected


def test_a_fresh_build_evicts_old_guests_over_budget(
    app: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guests = cache / "guests"
    guests.mkdir(parents=True)
    old = guests / ("0" * 64 + ".wasm")
    old.write_bytes(b"x" * 100)
    os.utime(old, (1_000_000, 1_000_000))
    monkeypatch.setattr(build_common, "MAX_CACHE_BYTES", 50)
    result = build(app, cache_dir=cache, run=FakeCompiler())
    assert not old.exists()
    assert (guests / f"{result.key}.wasm").exists()


def test_a_cache_hit_marks_the_guest_used(app: Path, cache: Path) -> None:
    first = build(app, cache_dir=cache, run=FakeCompiler())
    os.utime(first.path, (1_000_000, 1_000_000))
    build(app, cache_dir=cache, run=FakeCompiler())
    assert first.path.stat().st_mtime > 1_000_000
