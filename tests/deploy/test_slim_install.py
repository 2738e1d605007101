"""`pip install .` into an empty venv: the worker, dispatcher and client only, on the C path.

The repository is copied (without build products) and installed into a venv made without
pip, by this interpreter's pip (`pip --python`), offline from a wheelhouse of the
dependencies fetched once per machine: a few seconds plus the accelerator's compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.services import unavailable

EXTRAS_ONLY = ("componentize-py", "matplotlib", "fakeredis", "lupa", "moto", "celery")
IGNORED = (".git", ".venv", "build", "*.egg-info", "__pycache__", "*.so", "*.pyc",
           ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules")

# Builds what a worker and a dispatcher build at start (without connecting: the clients
# connect lazily), compiles the packaged WAT echo like a deploy does, and says which
# modules a dev-only or build-only import would have pulled in.
PROCESS_PATHS = """
import asyncio, json, sys
from dispatcher.service import compile_step
from flotilla.metrics import WorkerMetrics
from flotilla.sandbox.guests import packaged
from flotilla.settings import WorkerSettings
from worker.service import sandbox_runtime

settings = WorkerSettings.from_env()
runtime = sandbox_runtime(settings, asyncio.new_event_loop(), WorkerMetrics())
runtime.close()
sandbox, compile = compile_step(settings.cache_dir)
artifact = compile(packaged("echo", settings.cache_dir))
import flotilla
print(json.dumps({"call_path": sandbox.call_path, "artifact_bytes": len(artifact),
                  "flotilla": flotilla.__file__,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                                   ("fakeredis", "moto", "componentize_py", "matplotlib",
                                    "lupa", "celery"))}))
"""


def wheelhouse() -> Path:
    """Wheels of the runtime dependencies (and the build backend), fetched once per machine.

    Kept under FLOTILLA_CACHE_DIR, keyed by the dependency list and the interpreter, so the
    install itself runs offline (`--no-index`) in seconds.
    """
    with open(REPO / "pyproject.toml", "rb") as handle:
        pyproject = tomllib.load(handle)
    requirements = [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]
    key = hashlib.sha256(
        "\n".join([sys.version, sysconfig.get_platform(), *requirements]).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("FLOTILLA_CACHE_DIR") or tempfile.gettempdir())
    target = cache / "test-wheelhouse" / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(partial), *requirements],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    try:
        partial.rename(target)  # atomic: a concurrent run either wins or finds it complete
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return target


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """(bin directory of a venv holding `pip install <repository>`, environment for it)."""
    if shutil.which("gcc") is None:
        unavailable("no gcc here: the C accelerator cannot be compiled")
    tmp = tmp_path_factory.mktemp("slim")
    source, venv = tmp / "src", tmp / "venv"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    wheels = wheelhouse()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", "--no-index", "--find-links", str(wheels), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"slim install: {time.perf_counter() - started:.1f} s")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FLOTILLA_SANDBOX_CTYPES", "PYTHONPATH")}
    env |= {"FLOTILLA_CACHE_DIR": str(tmp / "cache"), "FLOTILLA_ARTIFACT_KEY": "k" * 64,
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    yield venv / "bin", env


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command of the slim venv; fail with its stderr if it fails."""
    # Not from the repository: `python -c` would import the checkout in the working directory.
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          cwd=env["FLOTILLA_CACHE_DIR"].rsplit("/", 1)[0], check=False)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_installs_no_extra(slim: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = slim
    listed = run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "list",
                  "--format=json"], env)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"flotilla", "wasmtime", "fastapi", "aio-pika", "boto3"} <= installed
    assert installed.isdisjoint(EXTRAS_ONLY), installed & set(EXTRAS_ONLY)


@pytest.mark.slow
def test_doctor_reports_the_c_extension_and_no_extras(
    slim: tuple[Path, dict[str, str]]
) -> None:
    bin_dir, env = slim
    report = json.loads(run([str(bin_dir / "flotilla"), "doctor", "--json", "--no-services"],
                            env).stdout)
    assert report["call_path"] == "c-extension", report["call_path_detail"]
    assert str(bin_dir.parent) in report["call_path_detail"]  # the venv's own build
    assert {name: e["ok"] for name, e in report["extras"].items()} == {
        "build": False, "dev": False, "loadtest": False, "tracing": False
    }
    assert report["toolchains"]["componentize-py"]["ok"] is False
    assert report["toolchains"]["wasm-tools"]["path"] == str(bin_dir / "wasm-tools")
    assert report["wit"]["ok"] and str(bin_dir.parent) in report["wit"]["path"]
    # The image's build-time check passes on such an install.
    run([str(bin_dir / "flotilla"), "doctor", "--no-services", "--require", "c-extension",
         "--require", "wit"], env)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["worker", "dispatcher"])
def test_process_commands_start(slim: tuple[Path, dict[str, str]], command: str) -> None:
    bin_dir, env = slim
    out = run([str(bin_dir / "flotilla"), command, "--help"], env).stdout
    assert out.startswith(f"usage: flotilla {command}") and "--amqp-url" in out


@pytest.mark.slow
def test_worker_and_dispatcher_build_their_runtime_without_extras(
    slim: tuple[Path, dict[str, str]]
) -> None:
    bin_dir, env = slim
    result = json.loads(run([str(bin_dir / "python"), "-c", PROCESS_PATHS], env).stdout)
    assert result["call_path"] == "c-extension"
    assert result["artifact_bytes"] > 0
    assert result["loaded"] == []
    assert result["flotilla"].startswith(str(bin_dir.parent))  # the install, not the checkout
