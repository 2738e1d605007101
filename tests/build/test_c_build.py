"""The C builder (flotilla/build/c.py) and sdk/c/flotilla.h.

Builds run the real clang-22 and wasm-tools with the project-local reactor adapter; the
results run in the real Sandbox (over fake hosts here; tests/build/test_js_c_run.py runs
the C conformance guest against the real services).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.build import toolchains
from flotilla.build.c import CLANG, build_c, find_sources, toolchain
from flotilla.build.common import BuildError
from flotilla.sandbox import Sandbox
from flotilla.sandbox.results import Outcome
from tests.build.js_c_guests import EXAMPLES, GUESTS, ROOT, require
from tests.build.test_js_build import PROTOCOL_OPS
from tests.sandbox.conftest import FakeHosts, config, persistent_cache_dir, req

ECHO = (EXAMPLES / "c" / "echo" / "echo.c").read_text()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    """A scratch C guest directory (the C toolchain required)."""
    require("c")
    folder = tmp_path / "app"
    folder.mkdir()
    yield folder


def test_sources_are_the_c_files_outside_hidden_and_build_folders(tmp_path: Path) -> None:
    for name in ("a.c", "sub/b.c", "sub/b.h", ".hidden/c.c", "build/d.c", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in find_sources(tmp_path)] == [
        "a.c", "sub/b.c",
    ]  # fmt: skip
    with pytest.raises(BuildError, match="not a C source file"):
        find_sources(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="holds no .c files"):
        find_sources(tmp_path / "empty")


def test_missing_toolchain_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_TOOLCHAINS", str(tmp_path / "none"))
    monkeypatch.delenv("FLOTILLA_WASI_ADAPTER", raising=False)
    problem = toolchain()
    assert problem is not None and "WASI reactor adapter" in problem
    assert toolchains.C_INSTALL in problem and "\n" not in problem
    (tmp_path / "a.c").write_text(ECHO)
    with pytest.raises(BuildError, match="tools/toolchains/c.sh"):
        build_c(tmp_path, tmp_path / "out.wasm", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out.wasm").exists()


def test_build_runs_in_the_sandbox_and_is_cached_by_content(app: Path, tmp_path: Path) -> None:
    (app / "echo.c").write_text(ECHO)
    cache = tmp_path / "cache"
    first = build_c(app, tmp_path / "a.wasm", cache_dir=cache)
    again = build_c(app / "echo.c", cache_dir=cache)  # one file or its folder: same build
    assert not first.cached and again.cached and first.key == again.key
    assert first.path.stat().st_size < 200_000
    (app / "extra.h").write_text("/* a header is part of the key */\n")
    assert build_c(app, cache_dir=cache).key != first.key
    assert build_c(app, cache_dir=cache, cflags=["-O3"]).key != first.key
    sandbox = Sandbox(FakeHosts(), cache_dir=persistent_cache_dir())
    try:
        fn = sandbox.load((tmp_path / "a.wasm").read_bytes())
        assert fn.raw is not None  # a plain canon lift: the byte-string export is added
        body = bytes(range(256)) * 1024
        result = sandbox.invoke(fn, config(), req(body, (("a", "1"), ("a", "2"))))
        assert result.outcome is Outcome.OK, result.error
        assert result.response is not None and result.response.body == body
        assert result.response.headers == (("a", "1"), ("a", "2"))
    finally:
        sandbox.close()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("int x = ;\n", "clang failed"),
        ('#include "flotilla.h"\nint unrelated(void) { return 1; }\n', "flotilla_handle"),
    ],
    ids=["syntax-error", "no-flotilla_handle"],
)
def test_failed_builds_say_why_and_leave_nothing_behind(
    app: Path, tmp_path: Path, source: str, message: str
) -> None:
    (app / "bad.c").write_text(source)
    out = tmp_path / "out.wasm"
    out.write_bytes(b"previous build")
    with pytest.raises(BuildError, match=message):
        build_c(app, out, cache_dir=tmp_path / "cache")
    assert out.read_bytes() == b"previous build"
    leftovers = [p.name for p in (tmp_path / "cache" / "guests").iterdir()]
    assert not [n for n in leftovers if n.endswith((".wasm", ".tmp"))], leftovers


def test_error_returns_reach_the_caller(app: Path, tmp_path: Path) -> None:
    (app / "fail.c").write_text(
        '#include "flotilla.h"\n'
        "bool flotilla_handle(const flotilla_request_t *q, flotilla_response_t *r,\n"
        "                     flotilla_string_t *error) {\n"
        '  (void)q; (void)r; *error = FLOTILLA_STR("caf\\xc3\\xa9 failed"); return false;\n'
        "}\n"
    )
    built = build_c(app, cache_dir=tmp_path / "cache")
    sandbox = Sandbox(FakeHosts(), cache_dir=persistent_cache_dir())
    try:
        result = sandbox.invoke(sandbox.load(built.path.read_bytes()), config(), req(b""))
        assert (result.outcome, result.error) == (Outcome.FUNCTION_ERROR, "caf\u00e9 failed")
    finally:
        sandbox.close()


def test_header_compiles_cleanly_with_strict_warnings(tmp_path: Path) -> None:
    require("c")
    done = subprocess.run(
        [CLANG, "--target=wasm32-wasi", "-Wno-deprecated", "-std=c11", "-Wall", "-Wextra",
         "-pedantic", "-Werror", "-c", str(ROOT / "sdk" / "c" / "flotilla.c"),
         "-o", str(tmp_path / "f.o")],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_header_declares_every_wit_function() -> None:
    header = (ROOT / "sdk" / "c" / "flotilla.h").read_text()
    imports = set(re.findall(r'FLOTILLA_IMPORT\("([a-z0-9-]+)", "([a-z0-9-]+)"\)', header))
    wit = (ROOT / "wit" / "flotilla.wit").read_text()
    declared = set()
    for interface, body in re.findall(
        r"^interface ([a-z0-9-]+) \{(.*?)^\}", wit, re.MULTILINE | re.DOTALL
    ):
        for name in re.findall(r"^  ([a-z0-9-]+): func\(", body, re.MULTILINE):
            declared.add((interface, name))
    assert imports == declared


def test_c_conformance_guest_implements_every_op_of_the_protocol() -> None:
    source = (GUESTS / "c" / "conformance" / "conformance.c").read_text()
    assert PROTOCOL_OPS <= set(re.findall(r'"([a-z0-9-]+)"', source))
