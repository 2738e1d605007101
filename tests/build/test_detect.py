"""flotilla.build.detect: telling a guest's language, missing builders and toolchains, the
world check before anything is written, and `flotilla build` on a directory."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from flotilla.build import BuildError, BuildResult, ToolchainMissing, detect_language
from flotilla.build import detect as detect_mod
from flotilla.build.detect import Language, build_source, missing_toolchain
from flotilla.cli import main
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo"


def make(root: Path, *files: str) -> Path:
    """A directory holding empty `files` (paths relative to it)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}" if name.endswith(".json") else "")
    return root


@pytest.mark.parametrize(
    ("files", "given", "language", "entry"),
    [
        (["app.py"], ".", "python", "app.py"),
        (["app.py", "lib.py"], "app.py", "python", "app.py"),
        (["Cargo.toml", "src/lib.rs"], ".", "rust", "."),
        (["Cargo.toml", "src/lib.rs"], "Cargo.toml", "rust", "."),
        (["Cargo.toml", "src/lib.rs"], "src/lib.rs", "rust", "."),
        (["package.json", "app.js"], ".", "js", "app.js"),
        (["app.js"], ".", "js", "app.js"),
        (["package.json", "app.ts"], ".", "ts", "app.ts"),
        (["package.json", "app.ts", "app.js"], ".", "ts", "app.ts"),  # app.js: tsc's output
        (["app.ts"], "app.ts", "ts", "app.ts"),
        (["package.json", "app.js"], "package.json", "js", "app.js"),
        (["main.c", "util.c"], ".", "c", "."),
        (["main.c"], "main.c", "c", "main.c"),
        (["README.md", "app.py", "test_function.py"], ".", "python", "app.py"),
    ],
)
def test_detects_the_language_and_entry(
    tmp_path: Path, files: list[str], given: str, language: str, entry: str
) -> None:
    root = make(tmp_path / "fn", *files)
    source = detect_language(root / given)
    assert (source.language, source.path, source.root) == (
        language, (root / entry).resolve(), root.resolve()
    )  # fmt: skip


def test_package_json_main_names_the_entry(tmp_path: Path) -> None:
    root = make(tmp_path / "fn", "src/index.js")
    (root / "package.json").write_text('{"main": "src/index.js"}')
    assert detect_language(root).path == (root / "src" / "index.js").resolve()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "cannot tell the guest's language"),
        (["README.md"], "cannot tell the guest's language"),
        (["package.json"], "cannot tell the guest's language"),  # no entry file
        (["app.py", "Cargo.toml"], "ambiguous, looks like python and rust; pass --lang"),
    ],
)
def test_unclear_guests_are_build_errors(tmp_path: Path, files: list[str], message: str) -> None:
    with pytest.raises(BuildError, match=message):
        detect_language(make(tmp_path / "fn", *files))


def test_lang_settles_a_mixed_directory(tmp_path: Path) -> None:
    root = make(tmp_path / "fn", "app.py", "Cargo.toml")
    assert detect_language(root, "rust").language == "rust"
    with pytest.raises(BuildError, match="no c guest here"):
        detect_language(root, "c")
    with pytest.raises(BuildError, match="unknown language 'go'"):
        detect_language(root, "go")


def test_missing_path_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no such file or directory"):
        detect_language(tmp_path / "nowhere")


@pytest.fixture
def fake_lang(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A language `c` whose builder is the module `fake_builder` (installed in sys.modules)."""
    module = types.ModuleType("fake_builder")
    monkeypatch.setitem(sys.modules, "fake_builder", module)
    monkeypatch.setitem(
        detect_mod.LANGUAGES, "c", Language("c", "fake_builder", "build_c", "make toolchains")
    )
    return module


def test_an_absent_builder_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        detect_mod.LANGUAGES, "c", Language("c", "flotilla.build.nonexistent", "build_c", "x")
    )
    reason = missing_toolchain("c")
    assert reason == "this Flotilla cannot build c guests yet (flotilla.build.nonexistent is missing)"


def test_toolchain_reason_names_the_install_command(fake_lang: types.ModuleType) -> None:
    fake_lang.toolchain = lambda: "clang-22 not found"  # type: ignore[attr-defined]
    assert missing_toolchain("c") == (
        "the c toolchain is missing (clang-22 not found); to install it: make toolchains"
    )
    fake_lang.toolchain = lambda: None  # type: ignore[attr-defined]
    assert missing_toolchain("c") is None


def test_missing_toolchain_is_one_line_on_the_cli(
    tmp_path: Path, fake_lang: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_lang.toolchain = lambda: "clang-22 not found"  # type: ignore[attr-defined]
    root = make(tmp_path / "fn", "app.c")
    out = tmp_path / "fn.wasm"
    assert main(["build", str(root), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make toolchains" in err and "clang-22 not found" in err
    assert not out.exists()


def fake_builder(output: bytes, seen: list[dict[str, Any]]) -> Any:
    """A build_c that writes `output` to a cached file and records its arguments."""

    def build_c(source: Path, out: Path | None = None, **kwargs: Any) -> BuildResult:
        seen.append({"source": source, "out": out, **kwargs})
        cached = Path(kwargs["cache_dir"]) / "guest.wasm"
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(output)
        return BuildResult(cached, "k" * 64, False, 0.0)

    return build_c


def test_a_build_outside_the_world_leaves_nothing_at_the_output(
    tmp_path: Path, fake_lang: types.ModuleType
) -> None:
    seen: list[dict[str, Any]] = []
    fake_lang.build_c = fake_builder(b"\0asm\x01\0\0\0", seen)  # type: ignore[attr-defined]
    out = tmp_path / "fn.wasm"
    with pytest.raises(BuildError, match="rejected: this is a core WebAssembly module"):
        build_source(make(tmp_path / "fn", "app.c"), out, cache_dir=tmp_path / "cache")
    assert not out.exists()
    assert not (tmp_path / "cache" / "guest.wasm").exists()  # not served again from the cache
    assert seen[0]["out"] is None and seen[0]["force"] is False


def test_engine_only_for_js(tmp_path: Path, fake_lang: types.ModuleType) -> None:
    with pytest.raises(BuildError, match="--engine applies to js and ts guests, not c"):
        build_source(make(tmp_path / "fn", "app.c"), engine="quickjs")


def test_engine_reaches_a_builder_that_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("fake_js")
    seen: list[dict[str, Any]] = []
    base = fake_builder(b"x", seen)

    def build_js(source: Path, out: Path | None = None, *, engine: str = "quickjs",
                 **kw: Any) -> BuildResult:
        return base(source, out, engine=engine, **kw)  # type: ignore[no-any-return]

    module.build_js = build_js  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_js", module)
    monkeypatch.setitem(detect_mod.LANGUAGES, "ts", Language("ts", "fake_js", "build_js", "x"))
    root = make(tmp_path / "fn", "app.ts")
    build_source(root, engine="starlingmonkey", cache_dir=tmp_path, check=False)
    assert seen[0]["engine"] == "starlingmonkey" and seen[0]["source"] == root / "app.ts"


@pytest.mark.slow
def test_cli_builds_a_directory_and_checks_the_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["build", str(ECHO)]) == 0  # a directory; default output named after it
    assert (tmp_path / "echo.wasm").read_bytes()[:4] == b"\0asm"
    assert "(python, " in capsys.readouterr().out


def test_toolchain_missing_is_a_build_error() -> None:
    assert issubclass(ToolchainMissing, BuildError)


def test_typescript_asks_the_js_toolchain_for_tsc(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fake_js_tools")
    asked: list[dict[str, Any]] = []

    def toolchain(engine: str = "quickjs", *, typescript: bool = False) -> str | None:
        asked.append({"engine": engine, "typescript": typescript})
        return "tsc not installed" if typescript else None

    module.toolchain = toolchain  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_js_tools", module)
    for lang in ("js", "ts"):
        monkeypatch.setitem(
            detect_mod.LANGUAGES, lang, Language(lang, "fake_js_tools", "build_js", "x")
        )
    assert missing_toolchain("js") is None
    assert "tsc not installed" in (missing_toolchain("ts", "starlingmonkey") or "")
    assert asked == [
        {"engine": "quickjs", "typescript": False},
        {"engine": "starlingmonkey", "typescript": True},
    ]


def test_toolchains_script_is_silent_when_everything_is_installed() -> None:
    packages = ["rustc-web", "cargo-web", "rust-web-src", "rust-web-llvm", "lld-22",
                "wasi-libc", "clang-22", "libclang-rt-22-dev-wasm32"]
    query = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}\\n", *packages],
                           capture_output=True, text=True, check=False)
    if query.stdout.split() != ["installed"] * len(packages):
        unavailable("the guest toolchains' Debian packages are not all installed")
    done = subprocess.run([str(ROOT / "tools" / "toolchains" / "debian.sh")],
                          capture_output=True, text=True, check=False, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
