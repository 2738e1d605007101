"""Where the guest toolchains live: the project-local folder `tools/toolchains/*.sh` fill.

`tools/toolchains/js.sh` installs the npm tools into `<root>/node` and
`tools/toolchains/c.sh` puts the WASI reactor adapter into `<root>/wasi`, where `<root>` is
`$FLOTILLA_TOOLCHAINS` or `<repo>/.toolchains`. Builders look there first, then on PATH,
and name the install command when a tool is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "sdk"
JS_INSTALL = "tools/toolchains/js.sh"
C_INSTALL = "tools/toolchains/c.sh"
ADAPTER_NAME = "wasi_snapshot_preview1.reactor.wasm"


def root() -> Path:
    """The project-local toolchains folder (`$FLOTILLA_TOOLCHAINS` or `<repo>/.toolchains`)."""
    configured = os.environ.get("FLOTILLA_TOOLCHAINS")
    return Path(configured) if configured else REPO / ".toolchains"


def node_tool(name: str) -> str | None:
    """Path of npm executable `name` (`componentize-qjs`, `tsc`...), local folder first."""
    local = root() / "node" / "node_modules" / ".bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def npm_version(tool: str) -> str:
    """The version of the npm package an executable belongs to ("" when not found).

    Read from the package's package.json (starting node takes ~100 ms per `--version`).
    """
    path = Path(tool).resolve().parent
    for folder in (path, *path.parents):
        manifest = folder / "package.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text())
            except (OSError, ValueError):
                return ""
            return f"{data.get('name', '?')}@{data.get('version', '?')}"
        if folder.name == "node_modules":
            break
    return ""


def reactor_adapter() -> Path | None:
    """The WASI preview1 reactor adapter (`$FLOTILLA_WASI_ADAPTER`, c.sh's copy, or jco's)."""
    configured = os.environ.get("FLOTILLA_WASI_ADAPTER")
    candidates = [Path(configured)] if configured else []
    candidates += [
        root() / "wasi" / ADAPTER_NAME,
        root() / "node" / "node_modules" / "@bytecodealliance" / "jco" / "lib" / ADAPTER_NAME,
    ]
    return next((path for path in candidates if path.is_file()), None)


def sdk_dir(language: str) -> Path:
    """The SDK files of `language` shipped in this repository (sdk/js, sdk/c)."""
    return SDK / language
