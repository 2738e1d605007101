"""`flotilla build DIR_OR_FILE -o fn.wasm`: build a guest in any supported language (cached).

The language is told from the files (`app.py` python, `Cargo.toml` rust, `package.json`,
`app.js` or `app.ts` js/ts, `*.c` c; `--lang` settles a mixed directory). The component is
checked against the `function` world before it is written, so a failed or rejected build
leaves nothing at the output path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

LANGUAGES = ("python", "rust", "js", "ts", "c")  # flotilla.build.detect.LANGUAGES (kept light)


def add_parser(subparsers: Any) -> None:
    """Register the `build` subcommand."""
    parser = subparsers.add_parser(
        "build",
        help="build a guest (Python, Rust, JavaScript, TypeScript or C) into a component",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "app", type=Path, metavar="DIR_OR_FILE",
        help="the guest's directory, or its entry file (app.py, Cargo.toml, app.js, app.ts, *.c)",
    )  # fmt: skip
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where to write the component (default: <guest directory name>.wasm)",
    )
    parser.add_argument("--lang", choices=LANGUAGES, help="the guest's language (default: detect)")
    parser.add_argument(
        "--engine",
        choices=("quickjs", "starlingmonkey"),
        help="JavaScript engine for js/ts guests (default: quickjs)",
    )
    parser.add_argument("--wit", type=Path, help="WIT directory (default: Flotilla's own wit/)")
    parser.add_argument(
        "--cache-dir",
        help="cache directory (default: FLOTILLA_CACHE_DIR or ~/.cache/flotilla)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    parser.add_argument(
        "--no-check", action="store_true", help="skip the check against the function world"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, print where the component went, and return the exit status."""
    from flotilla.build import BuildError, build_source, detect_language

    try:
        output = args.output or Path(f"{detect_language(args.app, args.lang).root.name}.wasm")
        source, result = build_source(
            args.app,
            output,
            language=args.lang,
            engine=args.engine,
            wit_dir=args.wit,
            cache_dir=args.cache_dir,
            force=args.force,
            check=not args.no_check,
        )
    except BuildError as exc:
        print(f"flotilla build: error: {exc}", file=sys.stderr)
        return 1
    size_mb = result.path.stat().st_size / 1e6
    how = "cache hit" if result.cached else "built"
    print(
        f"{result.path} ({source.language}, {size_mb:.1f} MB, {how} in {result.seconds:.2f} s, "
        f"key {result.key[:12]})"
    )
    return 0
