"""Every `flotilla` command builds the whole parser: it must not pull in the heavy libraries.

`flotilla worker --help` (and the worker's own start) should not pay for FastAPI, httpx,
wasmtime or boto3; the commands import what they need when they run.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("fastapi", "starlette", "httpx", "wasmtime", "boto3", "botocore", "fakeredis",
         "moto", "matplotlib", "aio_pika", "redis")


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import json, sys; from flotilla.cli import build_parser; build_parser(); "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout) == []
