"""`flotilla new NAME --lang python|rust|js|ts|c`: a function ready to build, run and test.

Creates the directory NAME with the function's source, its build files, `config.json`, a
README with the commands, and `test_function.py` (pytest: builds it and runs it in the
sandbox). As it comes, `flotilla build . -o fn.wasm && flotilla run fn.wasm --data hi`
answers 200. An existing non-empty directory is never touched.

Rust functions depend on Flotilla's SDK crate by path: `--rust-sdk`, else
FLOTILLA_RUST_SDK, else the `sdk/rust/flotilla` of the Flotilla checkout this command runs
from; the path written into Cargo.toml is absolute, so the function may live anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

LANGUAGES = ("python", "rust", "js", "ts", "c")
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, for an editable install
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")  # flotilla.config's function name rule
RENAMED = {"gitignore": ".gitignore"}  # package data leaves dotfiles out

LANGUAGE_NAMES = {
    "python": ("Python", "app.py"),
    "rust": ("Rust", "src/lib.rs"),
    "js": ("JavaScript (QuickJS)", "app.js"),
    "ts": ("TypeScript (QuickJS)", "app.ts"),
    "c": ("C", "app.c"),
}
SETUP = {
    "python": "Needs componentize-py: `pip install 'flotilla[build]'` (or `make toolchains` in a "
    "Flotilla checkout).",
    "rust": "Needs Rust for wasm32-wasip2 (`make toolchains` in a Flotilla checkout). "
    "Cargo.toml points at Flotilla's SDK crate by absolute path; fix it if you move the "
    "checkout.",
    "js": "Needs the JavaScript toolchain (componentize-qjs from npm: `make toolchains` in a "
    "Flotilla checkout). Build with `--engine starlingmonkey` for the fuller runtime.",
    "ts": "Needs the JavaScript toolchain and tsc (from npm: `make toolchains` in a Flotilla "
    "checkout); the TypeScript is compiled to JavaScript, then to a QuickJS component.",
    "c": "Needs clang-22 with the wasm32-wasi sysroot (`make toolchains` in a Flotilla "
    "checkout).",
}


def add_parser(subparsers: Any) -> None:
    """Register `flotilla new`."""
    parser = subparsers.add_parser(
        "new",
        help="create a new function (source, build files, config, README, test)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", type=Path, help="directory to create; its name names the function")
    parser.add_argument("--lang", choices=LANGUAGES, default="python", help="default: python")
    parser.add_argument(
        "--rust-sdk", type=Path, help="path of Flotilla's Rust SDK crate (rust functions)"
    )
    parser.set_defaults(func=run)


class NewError(Exception):
    """The function cannot be created here; the message says why."""


def run(args: argparse.Namespace) -> int:
    """Create the function; print what to do next."""
    try:
        target = create(args.name, args.lang, rust_sdk=args.rust_sdk)
    except NewError as exc:
        print(f"flotilla new: error: {exc}", file=sys.stderr)
        return 1
    print(f"created {target} ({LANGUAGE_NAMES[args.lang][0]})")
    print(f"  cd {args.name} && flotilla build . -o fn.wasm && flotilla run fn.wasm --data hi")
    return 0


def create(directory: Path, language: str, *, rust_sdk: Path | None = None) -> Path:
    """Write the `language` template into `directory` (new or empty); its path."""
    name = directory.resolve().name
    if not NAME_RE.match(name):
        raise NewError(
            f"{name!r} cannot name a function: use 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter"
        )
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise NewError(f"{directory} already exists and is not empty; nothing was written")
    values = {
        "__NAME__": name,
        "__LANGUAGE__": LANGUAGE_NAMES[language][0],
        "__SOURCE__": LANGUAGE_NAMES[language][1],
        "__SETUP__": SETUP[language],
    }
    if language == "rust":
        sdk = find_rust_sdk(rust_sdk)
        # json.dumps gives a valid TOML basic string; strip its quotes, the template has them
        values["__RUST_SDK__"] = json.dumps(str(sdk))[1:-1]
        if not (sdk / "Cargo.toml").is_file():
            print(
                f"flotilla new: warning: no Rust SDK crate at {sdk}; pass --rust-sdk or edit "
                "the flotilla dependency in Cargo.toml",
                file=sys.stderr,
            )
    files = _template_files(language)
    directory.mkdir(parents=True, exist_ok=True)
    for relative, source in files.items():
        text = source.read_text()
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        out = directory / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return directory


def _template_files(language: str) -> dict[Path, Path]:
    """Output path (relative) -> template file: the common files, then the language's own."""
    files: dict[Path, Path] = {}
    for base in (TEMPLATES / "_common", TEMPLATES / language):
        for source in sorted(base.rglob("*")):
            if source.is_file() and "__pycache__" not in source.parts:
                relative = source.relative_to(base)
                files[relative.with_name(RENAMED.get(relative.name, relative.name))] = source
    if not files:
        raise NewError(f"Flotilla's templates are missing from {TEMPLATES}")
    return files


def find_rust_sdk(given: Path | None) -> Path:
    """Where the Rust SDK crate is: `given`, FLOTILLA_RUST_SDK, or this checkout's sdk/."""
    if given is not None:
        return given.resolve()
    from_env = os.environ.get("FLOTILLA_RUST_SDK")
    if from_env:
        return Path(from_env).resolve()
    return CHECKOUT / "sdk" / "rust" / "flotilla"
