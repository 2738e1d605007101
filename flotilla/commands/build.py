"""`flotilla build app.py -o fn.wasm`: build a Python guest into a component (cached)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the `build` subcommand."""
    parser = subparsers.add_parser(
        "build",
        help="build a Python guest (app.py) into a WebAssembly component",
        description="Build a Python guest with componentize-py against Flotilla's WIT world "
        "'function'. Builds are cached by content under <cache-dir>/guests.",
    )
    parser.add_argument("app", type=Path, help="the guest's app module, e.g. app.py")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where to write the component (default: <app directory name>.wasm)",
    )
    parser.add_argument("--wit", type=Path, help="WIT directory (default: Flotilla's own wit/)")
    parser.add_argument(
        "--cache-dir",
        help="cache directory (default: FLOTILLA_CACHE_DIR or ~/.cache/flotilla)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, print where the component went, and return the exit status."""
    from flotilla.build import BuildError, build

    output = args.output or Path(f"{args.app.resolve().parent.name}.wasm")
    try:
        result = build(
            args.app, output, wit_dir=args.wit, cache_dir=args.cache_dir, force=args.force
        )
    except BuildError as exc:
        print(f"flotilla build: error: {exc}", file=sys.stderr)
        return 1
    size_mb = result.path.stat().st_size / 1e6
    how = "cache hit" if result.cached else "built"
    print(
        f"{result.path} ({size_mb:.1f} MB, {how} in {result.seconds:.2f} s, key {result.key[:12]})"
    )
    return 0
