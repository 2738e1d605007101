"""`flotilla.build.rust`: the content-addressed cache, failures, and the SDK's Rust unit tests.

Builds run the real toolchain (std is built once per machine, ~60 s of CPU; each crate
after that takes a few seconds) on crates written into a temporary directory that depend
on the SDK by absolute path.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from flotilla.build import BuildError
from flotilla.build import rust as rust_build
from tests.guests.rust import EXAMPLES, SDK
from tests.services import unavailable

pytestmark = pytest.mark.slow

# std's build and Cargo's target directory are shared with every other build on the machine
# (building std takes a minute); guests go to each test's own cache.
WORK = Path(rust_build.default_cache_dir()) / "rust"

HANDLER = """
use flotilla::{Request, Response};

pub fn handle(request: Request) -> Response {
    Response::ok(request.body).with_header("x-version", "VERSION")
}

flotilla::export!(handle);
"""


@pytest.fixture(autouse=True)
def _toolchain() -> None:
    problem = rust_build.toolchain()
    if problem is not None:
        unavailable(f"cannot build Rust guests: {problem}")


def crate(root: Path, name: str = "probe", source: str = HANDLER, manifest_extra: str = "") -> Path:
    """A crate `name` under `root` depending on the SDK; returns its directory."""
    directory = root / name
    (directory / "src").mkdir(parents=True)
    (directory / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
        f'[dependencies]\nflotilla = {{ path = "{SDK}" }}\n{manifest_extra}'
    )
    # A fresh comment keeps the key unique: the work directory is shared between runs.
    (directory / "src" / "lib.rs").write_text(f"// {uuid.uuid4()}\n{source}")
    return directory


def test_toolchain_is_found_and_versioned() -> None:
    tools = rust_build.find_toolchain()
    assert "rustc 1." in tools.version and "wasm-component-ld" in tools.version
    assert (tools.library / "Cargo.toml").is_file() and tools.linker.is_file()


def test_the_sdk_crate_is_found() -> None:
    assert rust_build.sdk_dir() == SDK


def test_missing_toolchain_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rust_build, "CARGO", Path("/nonexistent/cargo"))
    rust_build.find_toolchain.cache_clear()
    try:
        assert rust_build.toolchain() == "/nonexistent/cargo not found (Debian package cargo-web)"
        with pytest.raises(BuildError, match="cargo-web"):
            rust_build.build_rust(EXAMPLES / "echo", work_dir=WORK)
    finally:
        rust_build.find_toolchain.cache_clear()


def test_std_sources_stand_in_for_the_stripped_archive(tmp_path: Path) -> None:
    library = rust_build.std_sources(rust_build.find_toolchain(), tmp_path)
    archives = list((library / "vendor").glob("wit-bindgen-*/src/rt/libwit_bindgen_cabi.a"))
    assert archives and all(a.read_bytes().startswith(b"!<arch>\n") for a in archives)
    assert (library / "std").is_symlink() and (library / ".complete").exists()
    assert rust_build.std_sources(rust_build.find_toolchain(), tmp_path) == library


def test_builds_are_cached_by_content(tmp_path: Path) -> None:
    source = crate(tmp_path / "src")
    cache = tmp_path / "cache"
    first = rust_build.build_rust(
        source, tmp_path / "out" / "fn.wasm", cache_dir=cache, work_dir=WORK
    )
    wasm = (tmp_path / "out" / "fn.wasm").read_bytes()
    assert not first.cached and wasm[:8] == b"\0asm\x0d\x00\x01\x00"
    again = rust_build.build_rust(source, cache_dir=cache, work_dir=WORK)
    assert (again.cached, again.key, again.path.read_bytes()) == (True, first.key, wasm)
    forced = rust_build.build_rust(source, cache_dir=cache, force=True, work_dir=WORK)
    assert forced.cached is False and forced.key == first.key

    (source / "src" / "lib.rs").write_text(HANDLER.replace("VERSION", "2"))  # new content
    changed = rust_build.build_rust(source, cache_dir=cache, work_dir=WORK)
    assert not changed.cached and changed.key != first.key
    assert b"x-version" in changed.path.read_bytes()


def test_the_key_covers_path_dependencies_and_skips_target(tmp_path: Path) -> None:
    tools = rust_build.find_toolchain()
    library = rust_build.std_sources(tools, tmp_path / "cache" / "rust")
    source = crate(tmp_path)
    meta = rust_build.metadata(tools, source, library, rust_build._run)
    assert meta.local_packages == (source, SDK) and meta.lib_name == "probe"
    wits = [Path(__file__).resolve().parents[2] / "wit" / "flotilla.wit"]
    key = lambda: rust_build.cache_key(meta, wits, profile={}, toolchain_version="v")
    before = key()
    (source / "target").mkdir()
    (source / "target" / "junk").write_text("ignored")
    assert key() == before
    (source / "build.rs").write_text("fn main() {}")
    assert key() != before


def test_profile_defaults_yield_to_the_crate(tmp_path: Path) -> None:
    source = crate(tmp_path, manifest_extra="\n[profile.release]\nopt-level = 3\n")
    imposed = rust_build.profile_defaults(source)
    assert "opt-level" not in imposed
    assert imposed["panic"] == '"abort"' and imposed["lto"] == "true"


@pytest.mark.parametrize(
    ("source", "manifest_extra", "message"),
    [
        ("pub fn oops( {", "", "error: "),
        ("pub fn handle() {}", "", "hint: call flotilla::export!"),
        ("", '\n[[bin]]\nname = "x"\npath = "src/lib.rs"\n[lib]\npath = "nope.rs"\n', "can't find lib"),
    ],
)
def test_failures_leave_nothing_at_the_output(
    tmp_path: Path, source: str, manifest_extra: str, message: str
) -> None:
    output = tmp_path / "fn.wasm"
    output.write_bytes(b"previous")
    broken = crate(tmp_path, source=source, manifest_extra=manifest_extra)
    with pytest.raises(BuildError, match=message):
        rust_build.build_rust(broken, output, cache_dir=tmp_path / "cache", work_dir=WORK)
    assert output.read_bytes() == b"previous"
    assert not list((tmp_path / "cache" / "guests").glob("*.wasm"))


def test_not_a_crate(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no Cargo.toml"):
        rust_build.build_rust(tmp_path)


def test_a_crate_without_a_library_is_refused(tmp_path: Path) -> None:
    binary = crate(tmp_path)
    (binary / "src" / "lib.rs").rename(binary / "src" / "main.rs")
    with pytest.raises(BuildError, match="no library target"):
        rust_build.build_rust(binary, cache_dir=tmp_path / "cache", work_dir=WORK)


@pytest.mark.parametrize("crate_dir", [SDK, EXAMPLES / "s3-dynamodb"], ids=["sdk", "json"])
def test_rust_unit_tests_pass_on_the_build_machine(crate_dir: Path) -> None:
    # The SDK's pure parts (layouts, error variants, builders) and the example's JSON parser,
    # compiled for the build machine's own target.
    tools = rust_build.find_toolchain()
    env = {
        **os.environ,
        "RUSTC": str(tools.rustc),
        "RUSTDOC": str(tools.rustc.with_name("rustdoc")),
        "CARGO_TARGET_DIR": str(WORK / "host-target"),
    }
    done = subprocess.run(
        [str(tools.cargo), "test", "--offline", "--quiet"],
        cwd=crate_dir, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"test result: ok\. [1-9]\d* passed", done.stdout), done.stdout
