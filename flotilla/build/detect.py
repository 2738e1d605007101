"""Which language a guest is written in, whether its toolchain is here, and one build for all.

`flotilla build DIR_OR_FILE` lands here. `detect` tells the language from the files
(`app.py` python, `Cargo.toml` rust, `package.json`/`app.js`/`app.ts` js or ts, `*.c` c);
`build_source` checks the toolchain, calls that language's builder (each in its own module,
imported by name only when used, so a language whose builder is absent costs nothing and
fails with a clear message), checks that the result targets the `function` world, and only
then copies it to the output path.

Every language builder has the Python builder's shape: `build_<lang>(source, output=None, *,
wit_dir=None, cache_dir=None, force=False) -> BuildResult` (the JS one also takes
`engine`), caches by content, and has `toolchain(...) -> str | None`: None when the
toolchain is ready, else a one-line reason it is not.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.build.common import BuildError, BuildResult, copy_atomic, default_cache_dir

INSTALL_HINT = "run `make toolchains` in a Flotilla checkout"


@dataclass(frozen=True)
class Language:
    """A guest language: where its builder lives and how its toolchain is installed."""

    name: str
    module: str  # imported lazily: the builder may not exist in this checkout
    builder: str
    install: str  # one line naming the command that installs the toolchain


LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in (
        Language("python", "flotilla.build.python", "build",
                 "pip install 'flotilla[build]' (componentize-py), or " + INSTALL_HINT),
        Language("rust", "flotilla.build.rust", "build_rust",
                 INSTALL_HINT + " (apt-get install --no-install-recommends rustc-web "
                 "cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc)"),
        Language("js", "flotilla.build.js", "build_js",
                 INSTALL_HINT + " (tools/toolchains/js.sh: npm packages into .toolchains/)"),
        Language("ts", "flotilla.build.js", "build_js",
                 INSTALL_HINT + " (tools/toolchains/js.sh: npm packages into .toolchains/)"),
        Language("c", "flotilla.build.c", "build_c",
                 INSTALL_HINT + " (apt-get install --no-install-recommends clang-22 "
                 "libclang-rt-22-dev-wasm32 wasi-libc lld-22, then tools/toolchains/c.sh)"),
    )
}  # fmt: skip
ENGINES = ("quickjs", "starlingmonkey")
MARKERS = "app.py, Cargo.toml, package.json, app.js, app.ts or a *.c file"


class ToolchainMissing(BuildError):
    """A language's builder or toolchain is not installed; the message says how to get it."""


@dataclass(frozen=True)
class Source:
    """A guest to build: its language, what its builder takes, and its directory."""

    language: str
    path: Path  # python, js, ts: the entry file; rust: the crate directory; c: dir or file
    root: Path  # the guest's directory (names the default output file)


def detect_language(path: str | Path, language: str | None = None) -> Source:
    """The language and entry of the guest at `path` (a directory or a file); BuildError if unclear."""
    if language is not None and language not in LANGUAGES:
        raise BuildError(f"unknown language {language!r} (known: {', '.join(LANGUAGES)})")
    target = Path(path).resolve()
    if not target.exists():
        raise BuildError(f"{path}: no such file or directory")
    found = _from_file(target) if target.is_file() else _from_dir(target)
    if language is not None:
        chosen = [s for s in found if s.language == language]
        if not chosen:
            raise BuildError(f"{path}: no {language} guest here (expected {MARKERS})")
        return chosen[0]
    if not found:
        raise BuildError(f"{path}: cannot tell the guest's language (expected {MARKERS})")
    if len({s.language for s in found}) > 1:
        names = " and ".join(sorted({s.language for s in found}))
        raise BuildError(f"{path}: ambiguous, looks like {names}; pass --lang")
    return found[0]


def _from_file(file: Path) -> list[Source]:
    parent = file.parent
    if file.suffix == ".py":
        return [Source("python", file, parent)]
    if file.name == "Cargo.toml":
        return [Source("rust", parent, parent)]
    if file.suffix == ".rs":
        crate = next((d for d in file.parents if (d / "Cargo.toml").is_file()), None)
        return [Source("rust", crate, crate)] if crate else []
    if file.suffix in (".js", ".mjs"):
        return [Source("js", file, parent)]
    if file.suffix in (".ts", ".mts"):
        return [Source("ts", file, parent)]
    if file.name == "package.json":
        return _js_in(parent)
    if file.suffix == ".c":
        return [Source("c", file, parent)]
    return []


def _from_dir(root: Path) -> list[Source]:
    found = []
    if (root / "app.py").is_file():
        found.append(Source("python", root / "app.py", root))
    if (root / "Cargo.toml").is_file():
        found.append(Source("rust", root, root))
    found += _js_in(root)
    if any(p.is_file() for p in root.glob("*.c")):
        found.append(Source("c", root, root))
    return found


def _js_in(root: Path) -> list[Source]:
    """app.ts, else app.js, else package.json's "main"; ts when the entry is TypeScript."""
    entries = [root / "app.ts", root / "app.js", *_package_main(root)]
    entry = next((e for e in entries if e.is_file()), None)
    if entry is None:
        return []
    return [Source("ts" if entry.suffix in (".ts", ".mts") else "js", entry, root)]


def _package_main(root: Path) -> list[Path]:
    try:
        main = json.loads((root / "package.json").read_text()).get("main")
    except (OSError, ValueError, AttributeError):
        return []
    return [root / main] if isinstance(main, str) and main else []


def builder(language: str) -> Callable[..., BuildResult]:
    """The build function of `language`; ToolchainMissing when this Flotilla lacks it."""
    lang = LANGUAGES[language]
    module = _module(lang)
    fn = getattr(module, lang.builder, None)
    if fn is None:
        raise ToolchainMissing(f"{lang.module} has no {lang.builder}(): cannot build {language}")
    return fn  # type: ignore[no-any-return]


def _module(lang: Language) -> Any:
    try:
        return importlib.import_module(lang.module)
    except ModuleNotFoundError as exc:
        if exc.name != lang.module:
            raise
        raise ToolchainMissing(
            f"this Flotilla cannot build {lang.name} guests yet ({lang.module} is missing)"
        ) from None


def missing_toolchain(language: str, engine: str | None = None) -> str | None:
    """None when `language` can be built here, else a one-line reason and how to install."""
    lang = LANGUAGES[language]
    try:
        module = _module(lang)
    except ToolchainMissing as exc:
        return str(exc)
    if language == "python":
        reason = _componentize_py_missing()
    else:
        probe = getattr(module, "toolchain", None)
        if probe is None:
            return None  # the builder reports what it lacks when it runs
        wanted = {"engine": engine, "language": language, "typescript": language == "ts"}
        reason = probe(**_accepted(probe, **wanted))
    if reason is None:
        return None
    return f"the {language} toolchain is missing ({reason}); to install it: {lang.install}"


def _componentize_py_missing() -> str | None:
    beside = Path(sys.executable).parent / "componentize-py"
    if beside.is_file() or shutil.which("componentize-py"):
        return None
    return "componentize-py is not installed"


def _accepted(fn: Callable[..., Any], **wanted: Any) -> dict[str, Any]:
    """The keyword arguments of `wanted` that `fn` takes (and that are not None)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in wanted.items() if v is not None and k in params}


def build_source(
    path: str | Path,
    output: str | Path | None = None,
    *,
    language: str | None = None,
    engine: str | None = None,
    wit_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    check: bool = True,
) -> tuple[Source, BuildResult]:
    """Detect, build (cached by content), check the world, then copy to `output` if given.

    Nothing is written at `output` unless the component was built and accepted.
    """
    started = time.perf_counter()
    source = detect_language(path, language)
    if engine is not None and source.language not in ("js", "ts"):
        raise BuildError(f"--engine applies to js and ts guests, not {source.language}")
    if engine is not None and engine not in ENGINES:
        raise BuildError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    reason = missing_toolchain(source.language, engine)
    if reason is not None:
        raise ToolchainMissing(reason)
    build = builder(source.language)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    kwargs = _accepted(build, engine=engine, language=source.language)
    result = build(source.path, None, wit_dir=wit_dir, cache_dir=cache, force=force, **kwargs)
    if check:
        problem = world_problem(result.path, cache)
        if problem is not None:
            result.path.unlink(missing_ok=True)  # never serve a rejected build from the cache
            raise BuildError(f"{path}: the built component was rejected: {problem}")
    path_out = result.path
    if output is not None:
        copy_atomic(result.path, Path(output))
        path_out = Path(output)
    # The seconds include the world check: the time the caller waited.
    return source, dataclasses.replace(
        result, path=path_out, seconds=time.perf_counter() - started
    )


def world_problem(wasm: Path, cache_dir: str | Path) -> str | None:
    """Why the sandbox would refuse `wasm` (not a component, wrong world, unlinkable), or None.

    It is the worker's own check: a compile through a host-less Sandbox, whose artifact
    lands in the same cache `flotilla run` reads, so the compile is not paid twice.
    """
    from flotilla.errors import FlotillaError
    from flotilla.sandbox import Sandbox
    from flotilla.sandbox.components import check_binary

    data = wasm.read_bytes()
    try:
        check_binary(data)
    except FlotillaError as exc:
        return str(exc)
    sandbox = Sandbox(None, cache_dir=cache_dir)
    try:
        sandbox.load(data)
    except FlotillaError as exc:
        return str(exc)
    finally:
        sandbox.close()
    return None
