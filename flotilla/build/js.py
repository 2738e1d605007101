"""JavaScript and TypeScript guests: QuickJS (componentize-qjs, the default) or StarlingMonkey.

A JS guest is an ES module exporting `handle(request)` (see sdk/js/README.md). `source` is
the module itself or its directory (entry: package.json's `main`, else app.ts, app.js,
app.mjs, index.ts, index.js, index.mjs). TypeScript is compiled with tsc first (strict, ES2022,
no DOM, `Symbol.dispose`, against sdk/js/*.d.ts); type errors fail the build. A tsconfig.json
beside the sources is for editors: the build always uses TSC_OPTIONS.

Both engines build against a world that extends `function` with the WASI 0.2 interfaces a
guest may import itself (environment, stdio, clocks, random, preopens: sdk/js/wit/deps),
so `import { getEnvironment } from "wasi:cli/environment@0.2.12"` works. QuickJS lacks
`console`, `TextEncoder` and `TextDecoder`: a prelude (sdk/js/prelude.js) evaluated before
the guest's modules provides them. QuickJS guests may span several modules (relative
imports, and bare ones from the directory's node_modules); StarlingMonkey takes one file.

Components are cached by content like every guest (see `common`): the key covers the
sources (*.js, *.mjs, *.cjs, *.ts, *.mts, *.json outside node_modules and hidden folders),
the WIT, the SDK files that go in, the engine, the world and the tools' versions. Packages
under node_modules are not part of the key: pin them with package-lock.json (which is).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from flotilla.build import toolchains
from flotilla.build.common import (
    BUILD_TIMEOUT_S,
    DEFAULT_WORLD,
    BuildError,
    BuildResult,
    Runner,
    cached_build,
    default_cache_dir,
    feed,
    find_wit_dir,
    wit_files,
)

KEY_FORMAT = b"flotilla-js-build/1"  # bump when the recipe or the commands change meaning
ENGINES = ("quickjs", "starlingmonkey")
ENTRY_NAMES = ("app.ts", "app.js", "app.mjs", "index.ts", "index.js", "index.mjs")
SOURCE_SUFFIXES = (".js", ".mjs", ".cjs", ".ts", ".mts", ".json")
TS_SUFFIXES = (".ts", ".mts")
TOOLS = {"quickjs": "componentize-qjs", "starlingmonkey": "componentize-js"}
WASI_VERSION = "0.2.12"
WASI_IMPORTS = (
    "wasi:cli/environment", "wasi:cli/stdin", "wasi:cli/stdout", "wasi:cli/stderr",
    "wasi:clocks/monotonic-clock", "wasi:clocks/wall-clock", "wasi:random/random",
    "wasi:filesystem/preopens", "wasi:filesystem/types",
)  # fmt: skip
ENTRY_MODULE = "__flotilla_entry__.js"
PRELUDE_MODULE = "__flotilla_prelude__.js"
# The module componentize-qjs builds: the prelude first, then the guest, whose `handle` is
# wrapped so that running out of memory traps (memory_limit) instead of answering err(...).
ENTRY_TEMPLATE = """\
import {{ fatal }} from "./{prelude}";
import {{ handle as guestHandle }} from "./{app}";
export * from "./{app}";
export function handle(request) {{
  try {{
    return guestHandle(request);
  }} catch (e) {{
    if (e instanceof InternalError && e.message === "out of memory") fatal("out of memory");
    throw e;
  }}
}}
"""
TSC_OPTIONS = (
    "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler",
    "--lib", "es2022,esnext.disposable", "--types", "", "--strict", "--skipLibCheck", "--noEmitOnError",
    "--allowJs", "--pretty", "false", "--ignoreConfig",
)  # fmt: skip
DECLARATIONS = ("flotilla.d.ts", "globals.d.ts", "wasi.d.ts")


def toolchain(engine: str = "quickjs", *, typescript: bool = False) -> str | None:
    """None when `engine` (and tsc, for TypeScript) can run here, else a one-line problem."""
    if engine not in ENGINES:
        return f"unknown JavaScript engine {engine!r} (choose {' or '.join(ENGINES)})"
    needed = [TOOLS[engine]] + (["tsc"] if typescript else [])
    missing = [name for name in needed if toolchains.node_tool(name) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed: run {toolchains.JS_INSTALL} "
            "(make toolchains), which installs the pinned npm packages into .toolchains/node"
        )
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    return None


def find_entry(source: Path) -> Path:
    """The guest's entry module: `source` itself, or the one its directory names."""
    if source.is_file():
        if source.suffix not in (".js", ".mjs", ".ts", ".mts"):
            raise BuildError(f"{source}: not a JavaScript or TypeScript module")
        return source
    if not source.is_dir():
        raise BuildError(f"{source}: no such file or directory")
    manifest = source / "package.json"
    if manifest.is_file():
        try:
            main = json.loads(manifest.read_text()).get("main")
        except ValueError as exc:
            raise BuildError(f"{manifest}: not valid JSON: {exc}") from exc
        if isinstance(main, str) and (source / main).is_file():
            return (source / main).resolve()
    for name in ENTRY_NAMES:
        if (source / name).is_file():
            return (source / name).resolve()
    raise BuildError(
        f"{source}: no entry module (package.json `main`, or one of {', '.join(ENTRY_NAMES)})"
    )


def check_entry(entry: Path) -> None:
    """BuildError unless the entry module visibly exports `handle`."""
    text = entry.read_text(errors="replace")
    if not re.search(r"\bexport\b[^;]*\bhandle\b", text):
        raise BuildError(
            f"{entry}: exports no `handle`; define `export function handle(request)` "
            "returning { status, headers, body }"
        )


def source_files(root: Path) -> list[Path]:
    """The files of the guest's directory that go into the key (no node_modules, no dot dirs)."""
    files = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p == "node_modules" for p in parts):
            continue
        if path.suffix in SOURCE_SUFFIXES and path.is_file():
            files.append(path)
    return sorted(files)


def cache_key(
    entry: Path, wits: Sequence[Path], *, engine: str, world: str, tools: Sequence[str]
) -> str:
    """sha256 over the sources, WIT, SDK files, engine, world, entry name and tool versions."""
    digest = hashlib.sha256(KEY_FORMAT)
    for label, value in (("engine", engine), ("world", world), ("entry", entry.name)):
        feed(digest, label.encode(), value.encode())
    for tool in tools:
        feed(digest, b"tool", tool.encode())
    root = entry.parent
    for path in source_files(root):
        feed(digest, b"src:" + path.relative_to(root).as_posix().encode(), path.read_bytes())
    sdk = toolchains.sdk_dir("js")
    for path in sorted([sdk / "prelude.js", *(sdk / name for name in DECLARATIONS)]):
        feed(digest, b"sdk:" + path.name.encode(), path.read_bytes())
    for path in sorted((sdk / "wit").rglob("*.wit")):
        feed(digest, b"sdkwit:" + path.relative_to(sdk).as_posix().encode(), path.read_bytes())
    for path in wits:
        feed(digest, b"wit:" + path.name.encode(), path.read_bytes())
    return digest.hexdigest()


def build_js(
    source: str | Path,
    output: str | Path | None = None,
    *,
    wit_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    engine: str = "quickjs",
    world: str = DEFAULT_WORLD,
    run: Runner | None = None,
) -> BuildResult:
    """Build the JS/TS guest `source` (or reuse its cached build); copy it to `output` if given.

    `force` rebuilds even on a cache hit. `run` executes the tools (tests inject it).
    """
    started = time.perf_counter()
    entry = find_entry(Path(source).resolve())
    check_entry(entry)
    typescript = entry.suffix in TS_SUFFIXES
    problem = toolchain(engine, typescript=typescript)
    if problem is not None:
        raise BuildError(problem)
    wit = Path(wit_dir).resolve() if wit_dir is not None else find_wit_dir()
    wits = wit_files(wit)
    tool = toolchains.node_tool(TOOLS[engine])
    tsc = toolchains.node_tool("tsc") if typescript else None
    assert tool is not None  # toolchain() checked
    versions = [toolchains.npm_version(t) for t in (tool, tsc) if t is not None]
    key = cache_key(entry, wits, engine=engine, world=world, tools=versions)
    guests = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "guests"
    steps = _Steps(entry, wit, world, engine, tool, tsc, run or _run)
    return cached_build(guests, key, steps.build, output=output, force=force, started=started)


def world_wit(wits: Sequence[Path], world: str) -> str:
    """The builder's world: `world` of the Flotilla package plus the WASI imports."""
    package = None
    for path in wits:
        found = re.search(r"^\s*package\s+([\w:.@+-]+)\s*;", path.read_text(), re.MULTILINE)
        if found:
            package = found.group(1)
            break
    if package is None or "@" not in package:
        raise BuildError("the WIT declares no versioned package (`package ns:name@x.y.z;`)")
    name, version = package.split("@", 1)
    imports = "".join(f"  import {i}@{WASI_VERSION};\n" for i in WASI_IMPORTS)
    return (
        "package flotilla:js-guest;\n\n"
        f"world {world} {{\n  include {name}/{world}@{version};\n{imports}}}\n"
    )


class _Steps:
    """One build in a scratch directory: stage the sources, tsc, componentize, move into place."""

    def __init__(
        self,
        entry: Path,
        wit: Path,
        world: str,
        engine: str,
        tool: str,
        tsc: str | None,
        run: Runner,
    ) -> None:
        self.entry, self.wit, self.world, self.engine = entry, wit, world, engine
        self.tool, self.tsc, self.run = tool, tsc, run

    def build(self, target: Path) -> None:
        """Build into `target` atomically (a temporary name renamed into place)."""
        with tempfile.TemporaryDirectory(prefix="flotilla-js-") as scratch:
            stage = Path(scratch)
            wit = self.stage_wit(stage / "wit")
            out = stage / "out"
            entry = self.compile_ts(out) if self.tsc else self.copy_js(out)
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent
            )
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                if self.engine == "quickjs":
                    self.quickjs(wit, out, entry, tmp)
                else:
                    self.starlingmonkey(wit, out, entry, tmp)
                os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    def stage_wit(self, into: Path) -> Path:
        """A WIT directory: the builder's world, the Flotilla package and WASI as deps."""
        deps = into / "deps"
        shutil.copytree(toolchains.sdk_dir("js") / "wit" / "deps", deps)
        own = deps / "flotilla-function"
        own.mkdir()
        for path in self.wit.glob("*.wit"):
            shutil.copyfile(path, own / path.name)
        if (self.wit / "deps").is_dir():
            shutil.copytree(self.wit / "deps", deps, dirs_exist_ok=True)
        (into / "world.wit").write_text(world_wit(sorted(self.wit.glob("*.wit")), self.world))
        return into

    def copy_js(self, out: Path) -> Path:
        """The JavaScript sources copied into `out`; the staged entry module."""
        root = self.entry.parent
        for path in source_files(root):
            target = out / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return out / self.entry.name

    def compile_ts(self, out: Path) -> Path:
        """tsc over the entry (and what it imports) into `out`; the compiled entry module."""
        assert self.tsc is not None
        root = self.entry.parent
        sdk = toolchains.sdk_dir("js")
        argv = [
            self.tsc, *TSC_OPTIONS, "--rootDir", str(root), "--outDir", str(out),
            str(self.entry), *(str(sdk / name) for name in DECLARATIONS),
        ]  # fmt: skip
        done = self._call(argv, root, "tsc")
        if done.returncode != 0:
            raise BuildError(f"TypeScript errors in {self.entry}:\n{_output(done)}")
        for path in source_files(root):  # tsc emits code only: keep the JSON beside it
            if path.suffix == ".json":
                target = out / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        compiled = out / self.entry.with_suffix(".js").name
        if not compiled.is_file():
            raise BuildError(f"tsc produced no {compiled.name} for {self.entry}")
        return compiled

    def quickjs(self, wit: Path, out: Path, entry: Path, target: Path) -> None:
        """componentize-qjs over a wrapper that evaluates the prelude, then the guest."""
        shutil.copyfile(toolchains.sdk_dir("js") / "prelude.js", out / PRELUDE_MODULE)
        relative = entry.relative_to(out).as_posix()
        (out / ENTRY_MODULE).write_text(ENTRY_TEMPLATE.format(prelude=PRELUDE_MODULE, app=relative))
        modules = self.entry.parent / "node_modules"
        if modules.is_dir() and not (out / "node_modules").exists():
            (out / "node_modules").symlink_to(modules, target_is_directory=True)
        argv = [
            self.tool, "--wit", str(wit), "--world", self.world, "--js", str(out / ENTRY_MODULE),
            "--module-root", str(out), "--sync", "-o", str(target),
        ]  # fmt: skip
        self._componentize(argv, out, target)

    def starlingmonkey(self, wit: Path, out: Path, entry: Path, target: Path) -> None:
        """componentize-js over the (single-file) entry, without wasi:http and fetch-event."""
        argv = [
            self.tool, str(entry), "--wit", str(wit), "--world-name", self.world,
            "--disable", "http", "fetch-event", "--out", str(target),
        ]  # fmt: skip
        self._componentize(argv, out, target)

    def _componentize(self, argv: list[str], cwd: Path, target: Path) -> None:
        done = self._call(argv, cwd, Path(argv[0]).name)
        if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            raise BuildError(
                f"{Path(argv[0]).name} failed on {self.entry} (exit {done.returncode}):\n"
                f"{_output(done)}"
            )

    def _call(self, argv: list[str], cwd: Path, name: str) -> subprocess.CompletedProcess[str]:
        try:
            return self.run(argv, cwd)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{name} took over {exc.timeout:.0f} s on {self.entry}") from exc
        except OSError as exc:
            raise BuildError(f"{name} could not run: {exc}") from exc


def _output(done: subprocess.CompletedProcess[str]) -> str:
    text = ((done.stderr or "") + "\n" + (done.stdout or "")).strip()
    return text[-8000:]  # the end says what failed; a wizer trace can be very long


def _run(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
