"""Rust guests: a crate built into a `function`-world component, offline, cached by content.

A Rust guest is a library crate (`Cargo.toml` + `src/lib.rs`) that uses the `flotilla` SDK
crate (`sdk/rust/flotilla`) and calls `flotilla::export!(handler)`. It is built with
Debian's Rust (`/usr/bin/cargo`, `/usr/bin/rustc`; rustup's may come first on PATH and
lacks the target) for `wasm32-wasip2`:

- std is rebuilt for the target (`-Zbuild-std=std,panic_abort`, `RUSTC_BOOTSTRAP=1`) from
  the `rust-web-src` sources, whose dependencies are vendored: crates.io is replaced by that
  vendor directory, so nothing is downloaded. Debian stripped a prebuilt archive from the
  vendored wit-bindgen; an empty one stands in for it in a copy of the sources under the
  cache (`<cache_dir>/rust/std-*`: symlinks to /usr, a real copy of that one crate).
- `cargo rustc --crate-type cdylib` links with `wasm-component-ld`, given the world's WIT
  (`--component-type`), which wraps the core module into a component; the release profile
  defaults to small code (opt-level "s", lto, strip, one codegen unit) and panics abort.
- One Cargo target directory, `<cache_dir>/rust/target`, serves every crate, so std is built
  once per machine and toolchain (~60 s of CPU); a crate after that builds in seconds.

The result is cached as `<cache_dir>/guests/<key>.wasm`, the key a sha256 of the files of
every local package the crate uses (itself, the SDK, other path dependencies; `target/`
and hidden entries skipped), the Cargo.lock, the WIT files, the profile defaults and the
toolchain's versions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.build.common import (
    BUILD_TIMEOUT_S,
    BuildError,
    BuildResult,
    cached_build,
    copy_atomic,
    default_cache_dir,
    feed,
    find_wit_dir,
    locked,
    wit_files,
)

# Bump when the key's recipe or the build command changes meaning.
KEY_FORMAT = b"flotilla-rust-build/1"
TARGET = "wasm32-wasip2"
CARGO = Path("/usr/bin/cargo")
RUSTC = Path("/usr/bin/rustc")
WASI_LIBC = Path("/usr/lib/wasm32-wasi")
STRIPPED_ARCHIVE = Path("src/rt/libwit_bindgen_cabi.a")  # inside vendor/wit-bindgen-*
EMPTY_ARCHIVE = b"!<arch>\n"
VENDOR_SOURCE = "flotilla-std-vendor"
# Release-profile defaults: small and fast to instantiate. A crate's own [profile.release]
# keys win; panics always abort (std is built with panic_abort).
PROFILE_DEFAULTS = {"opt-level": '"s"', "lto": "true", "strip": "true", "codegen-units": "1"}
# Environment that would change the build without being part of the cache key.
SCRUBBED_ENV = (
    "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTUP_TOOLCHAIN",
)  # fmt: skip

CargoRunner = Callable[[Sequence[str], Path, dict[str, str]], "subprocess.CompletedProcess[str]"]
"""Runs a command in a directory with an environment (injectable for tests)."""


@dataclass(frozen=True)
class Toolchain:
    """Where Debian's Rust for wasm32-wasip2 lives, and its versions (part of the key)."""

    cargo: Path
    rustc: Path
    library: Path  # std's sources (rust-web-src): library/ with its Cargo.toml and vendor/
    linker: Path  # wasm-component-ld
    version: str


def toolchain() -> str | None:
    """None when Rust guests can be built here, else a one-line reason naming what is missing."""
    try:
        find_toolchain()
    except BuildError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=1)
def find_toolchain() -> Toolchain:
    """The Rust toolchain for wasm32-wasip2; BuildError naming the missing Debian package."""
    for path, package in ((CARGO, "cargo-web"), (RUSTC, "rustc-web")):
        if not path.is_file():
            raise BuildError(f"{path} not found (Debian package {package})")
    described = _output([str(RUSTC), "-vV"])
    host = re.search(r"^host: (\S+)$", described, re.MULTILINE)
    sysroot = Path(_output([str(RUSTC), "--print", "sysroot"]).strip())
    library = sysroot / "lib/rustlib/src/rust/library"
    if not (library / "Cargo.toml").is_file() or not (library / "vendor").is_dir():
        raise BuildError(f"Rust's std sources not found in {library} (Debian package rust-web-src)")
    linker = sysroot / "lib/rustlib" / (host.group(1) if host else "") / "bin/wasm-component-ld"
    if not linker.is_file():
        raise BuildError(f"wasm-component-ld not found at {linker} (Debian package rust-web-llvm)")
    libc = WASI_LIBC / "libc.a"
    if not libc.is_file():
        raise BuildError(f"{libc} not found (Debian package wasi-libc)")
    stat = libc.stat()
    version = "\n".join(
        [
            described.strip(),
            _output([str(CARGO), "-V"]).strip(),
            _output([str(linker), "--version"]).strip(),
            f"wasi-libc {stat.st_size} {stat.st_mtime_ns}",
        ]
    )
    return Toolchain(CARGO, RUSTC, library, linker, version)


def sdk_dir() -> Path:
    """The `flotilla` SDK crate's directory, for a new crate's path dependency.

    It is `sdk/rust/flotilla` of a checkout (an editable install), or the same path inside
    the `flotilla` package when a distribution ships it there; BuildError when neither exists.
    """
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "sdk/rust/flotilla", package / "sdk/rust/flotilla"):
        if (candidate / "Cargo.toml").is_file():
            return candidate
    raise BuildError(f"the Rust SDK crate (sdk/rust/flotilla) is not shipped near {package}")


def _output(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise BuildError(f"{argv[0]} cannot run: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed: {done.stderr.strip()[:500]}")
    return done.stdout


def build_rust(
    source: str | Path,
    output: str | Path | None = None,
    *,
    wit_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    work_dir: str | Path | None = None,
    run: CargoRunner | None = None,
) -> BuildResult:
    """Build the crate at `source` (its directory or Cargo.toml), or reuse the cached build,
    and copy the component to `output` if given.

    `force` rebuilds even on a cache hit. `work_dir` holds std's sources and Cargo's target
    directory (default `<cache_dir>/rust`; share it to build std once). `run` executes cargo
    (default: a subprocess with a timeout). Nothing is written at `output` unless the build
    succeeded.
    """
    started = time.perf_counter()
    crate = _crate_dir(Path(source))
    tools = find_toolchain()
    cache = Path(cache_dir if cache_dir is not None else default_cache_dir())
    rust_dir = Path(work_dir) if work_dir is not None else cache / "rust"
    library = std_sources(tools, rust_dir)
    wit = Path(wit_dir).resolve() if wit_dir is not None else find_wit_dir()
    wits = wit_files(wit)
    runner = run or _run
    meta = metadata(tools, crate, library, runner)
    profile = profile_defaults(crate)
    key = cache_key(meta, wits, profile=profile, toolchain_version=tools.version)

    def build(target: Path) -> None:
        wit_copy = _wit_snapshot(wits, wit, rust_dir)
        _cargo_build(tools, crate, meta, library, wit_copy, profile, rust_dir, target, runner)

    return cached_build(cache / "guests", key, build, output=output, force=force, started=started)


def _crate_dir(source: Path) -> Path:
    crate = source.resolve()
    if crate.is_file() and crate.name == "Cargo.toml":
        crate = crate.parent
    if not (crate / "Cargo.toml").is_file():
        raise BuildError(f"{source}: no Cargo.toml (expected a Rust crate's directory)")
    return crate


def std_sources(tools: Toolchain, rust_dir: Path) -> Path:
    """A buildable copy of std's sources under `rust_dir`, made once per toolchain.

    Symlinks to the originals, except the vendored wit-bindgen, copied with the empty
    archive Debian's build stripped (its build script copies that file and fails without).
    """
    tag = hashlib.sha256(tools.version.encode()).hexdigest()[:16]
    target = rust_dir / f"std-{tag}" / "library"
    if (target / ".complete").exists():
        return target
    rust_dir.mkdir(parents=True, exist_ok=True)
    with locked(rust_dir / f"std-{tag}.lock"):
        if (target / ".complete").exists():
            return target
        shutil.rmtree(target.parent, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".std-{tag}.", dir=rust_dir))
        try:
            _farm(tools.library, staging / "library")
            (staging / "library" / ".complete").touch()
            os.replace(staging, target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _farm(original: Path, copy: Path) -> None:
    (copy / "vendor").mkdir(parents=True)
    for entry in original.iterdir():
        if entry.name != "vendor":
            (copy / entry.name).symlink_to(entry)
    for crate in (original / "vendor").iterdir():
        if (crate / STRIPPED_ARCHIVE.parent).is_dir() and crate.name.startswith("wit-bindgen-"):
            shutil.copytree(crate, copy / "vendor" / crate.name, symlinks=True)
            archive = copy / "vendor" / crate.name / STRIPPED_ARCHIVE
            if not archive.exists():
                archive.write_bytes(EMPTY_ARCHIVE)
        else:
            (copy / "vendor" / crate.name).symlink_to(crate)


def _source_config(library: Path) -> list[str]:
    """cargo --config arguments that resolve crates.io from std's vendored crates."""
    vendor = json.dumps(str(library / "vendor"))
    return [
        "--config", f'source.crates-io.replace-with="{VENDOR_SOURCE}"',
        "--config", f"source.{VENDOR_SOURCE}.directory={vendor}",
    ]  # fmt: skip


def _env(tools: Toolchain, library: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(
        RUSTC=str(tools.rustc),
        RUSTDOC=str(tools.rustc.with_name("rustdoc")),
        RUSTC_BOOTSTRAP="1",  # -Z build-std on a stable toolchain
        __CARGO_TESTS_ONLY_SRC_ROOT=str(library),  # build std from the patched copy
        CARGO_TERM_COLOR="never",
        RUST_BACKTRACE="0",
    )
    return env


@dataclass(frozen=True)
class CrateMeta:
    """What `cargo metadata` says about the crate: its lib target and its local packages."""

    name: str
    lib_name: str
    local_packages: tuple[Path, ...]  # directories of path packages, the crate first
    lock_file: Path


def metadata(tools: Toolchain, crate: Path, library: Path, run: CargoRunner) -> CrateMeta:
    """Resolve the crate's packages offline; BuildError when it has no library target."""
    argv = [
        str(tools.cargo), "metadata", "--format-version", "1", "--offline",
        "--filter-platform", TARGET, "--manifest-path", str(crate / "Cargo.toml"),
        *_source_config(library),
    ]  # fmt: skip
    done = run(argv, crate, _env(tools, library))
    if done.returncode != 0:
        raise BuildError(f"cargo metadata failed on {crate}:\n{_errors(done.stderr)}")
    data: dict[str, Any] = json.loads(done.stdout)
    manifest = str(crate / "Cargo.toml")
    root = next((p for p in data["packages"] if p["manifest_path"] == manifest), None)
    if root is None:
        raise BuildError(f"{crate}: cargo metadata does not list the crate itself")
    lib = next((t for t in root["targets"] if _is_lib(t["kind"])), None)
    if lib is None:
        raise BuildError(
            f"{crate}: no library target; a Flotilla function is a library (src/lib.rs) "
            "that calls flotilla::export!(handler)"
        )
    local = [Path(p["manifest_path"]).parent for p in data["packages"] if p["source"] is None]
    local.sort(key=lambda p: (p != crate, str(p)))
    lock = Path(data["workspace_root"]) / "Cargo.lock"
    return CrateMeta(root["name"], lib["name"].replace("-", "_"), tuple(local), lock)


def _is_lib(kinds: list[str]) -> bool:
    return any(k in ("lib", "rlib", "cdylib", "dylib", "staticlib") for k in kinds)


def profile_defaults(crate: Path) -> dict[str, str]:
    """The release-profile settings to impose: the defaults the crate does not set itself."""
    try:
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{crate / 'Cargo.toml'}: {exc}") from exc
    own = manifest.get("profile", {}).get("release", {})
    imposed = {k: v for k, v in PROFILE_DEFAULTS.items() if k not in own}
    imposed["panic"] = '"abort"'
    return imposed


def package_files(package: Path) -> Iterator[Path]:
    """The files of a local package that can change its build: all but `target/` and hidden."""
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "target")
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def cache_key(
    meta: CrateMeta, wit_files: Sequence[Path], *, profile: dict[str, str], toolchain_version: str
) -> str:
    """sha256 over the local packages' files, the lock file, WIT, profile and toolchain."""
    digest = hashlib.sha256(KEY_FORMAT)
    feed(digest, b"toolchain", toolchain_version.encode())
    feed(digest, b"profile", json.dumps(profile, sort_keys=True).encode())
    feed(digest, b"lib", meta.lib_name.encode())
    for index, package in enumerate(meta.local_packages):
        for path in package_files(package):
            label = f"pkg{index}:{path.relative_to(package).as_posix()}"
            feed(digest, label.encode(), path.read_bytes())
    if meta.lock_file.is_file():
        feed(digest, b"lock", meta.lock_file.read_bytes())
    for path in wit_files:
        feed(digest, b"wit:" + path.name.encode(), path.read_bytes())
    return digest.hexdigest()


def _wit_snapshot(wits: Sequence[Path], wit: Path, rust_dir: Path) -> Path:
    # cargo does not track files named in link arguments: a content-addressed copy changes
    # the argument (and so relinks) whenever the WIT changes.
    digest = hashlib.sha256()
    for path in wits:
        feed(digest, path.relative_to(wit).as_posix().encode(), path.read_bytes())
    snapshot = rust_dir / "wit" / digest.hexdigest()[:16]
    if not snapshot.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".wit.", dir=rust_dir))
        for path in wits:
            copy = staging / path.relative_to(wit)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, snapshot)
        except OSError:  # another build put the same snapshot in place first
            shutil.rmtree(staging, ignore_errors=True)
    return snapshot


def _cargo_build(
    tools: Toolchain,
    crate: Path,
    meta: CrateMeta,
    library: Path,
    wit: Path,
    profile: dict[str, str],
    rust_dir: Path,
    target: Path,
    run: CargoRunner,
) -> None:
    target_dir = rust_dir / "target"
    argv = [
        str(tools.cargo), "rustc", "--release", "--lib", "--crate-type", "cdylib",
        "--target", TARGET, "-Zbuild-std=std,panic_abort", "--offline",
        "--manifest-path", str(crate / "Cargo.toml"), "--target-dir", str(target_dir),
        *_source_config(library),
        *(a for k, v in profile.items() for a in ("--config", f"profile.release.{k}={v}")),
        "--", "-L", f"native={WASI_LIBC}", "-C", f"link-arg=--component-type={wit}",
    ]  # fmt: skip
    built = target_dir / TARGET / "release" / f"{meta.lib_name}.wasm"
    # One Cargo target directory serves every crate: hold it from the build until the
    # component is copied out, so a same-named crate cannot replace it in between.
    with locked(rust_dir / "target.lock"):
        try:
            done = run(argv, crate, _env(tools, library))
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"cargo took over {exc.timeout:.0f} s on {crate}") from exc
        if done.returncode != 0:
            raise BuildError(_failure(crate, done))
        if not built.is_file() or built.read_bytes()[:8] != b"\0asm\x0d\x00\x01\x00":
            raise BuildError(f"cargo built no component at {built} for {crate}")
        copy_atomic(built, target)


# Link errors that have one usual cause, and what to do about it.
HINTS = (
    ("failed to find export of function `handle`",
     "call flotilla::export!(your_handler) once at the crate's top level"),
    ("undefined symbol: socket",
     ("std::net is not available: Debian's wasi-libc is WASI preview 1, without sockets; "
      "use flotilla::http for outbound requests")),
)  # fmt: skip


def _failure(crate: Path, done: subprocess.CompletedProcess[str]) -> str:
    details = _errors(done.stderr)
    hints = "".join(f"\nhint: {hint}" for marker, hint in HINTS if marker in done.stderr)
    return f"cargo failed on {crate} (exit {done.returncode}):\n{details}{hints}"


# Lines of cargo's output that only bury the error: progress, the linker's command line.
NOISE = ("Compiling ", '= note:  "', "= note: some arguments are omitted")


def _errors(stderr: str, limit: int = 80) -> str:
    """cargo's output from the first error on (noise dropped), at most `limit` lines."""
    lines = [line for line in stderr.splitlines() if not line.lstrip(" |").startswith(NOISE)]
    first = next((i for i, line in enumerate(lines) if "error" in line), 0)
    kept = lines[first : first + limit]
    return "\n".join(kept).strip()


def _run(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
