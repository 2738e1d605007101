"""deploy/Dockerfile, checked statically (no Docker engine here): stages, user, entrypoints."""

from __future__ import annotations

import argparse
import fnmatch
import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flotilla.cli import build_parser
from tests.deploy import checks, dockerignore
from tests.deploy.conftest import REPO
from tests.deploy.kustomize import Manifest, image_name
from tests.services import unavailable

DOCKERFILE = REPO / "deploy" / "Dockerfile"


@dataclass
class Stage:
    """One build stage with the settings it inherits from its parent stage."""

    name: str
    base: str
    user: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)
    workdir: str = "/"


def _instructions(text: str) -> list[tuple[str, str]]:
    logical, out = "", []
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        if logical.strip():
            keyword, _, rest = logical.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
        logical = ""
    return out


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"use the exec form (JSON list): {value}"
    return [str(p) for p in parsed]


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name, each carrying what a `FROM <earlier stage>` inherits."""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            parent = stages.get(base)
            stage = Stage(name=name, base=parent.base if parent else base)
            if parent:
                stage.user, stage.entrypoint, stage.cmd = parent.user, parent.entrypoint, None
                stage.env, stage.workdir = dict(parent.env), parent.workdir
            stages[name] = stage
        elif stage is None:
            continue
        elif keyword == "USER":
            stage.user = rest
        elif keyword == "ENTRYPOINT":
            stage.entrypoint, stage.cmd = _exec_form(rest), None
        elif keyword == "CMD":
            stage.cmd = _exec_form(rest)
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = value
        elif keyword == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, rest)
        elif keyword == "RUN":
            stage.runs.append(rest)
        elif keyword == "COPY":
            stage.copies.append(rest.split())
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _subcommands() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_every_stage_builds_on_python_311_slim(stages: dict[str, Stage]) -> None:
    assert {s.base for s in stages.values()} == {"python:3.11-slim"}


@pytest.mark.parametrize("target", ["worker", "dispatcher"])
def test_process_stage_runs_a_real_subcommand_as_non_root(
    stages: dict[str, Stage], target: str
) -> None:
    stage = stages[target]
    command = (stage.entrypoint or []) + (stage.cmd or [])
    assert command == ["flotilla", target]
    assert target in _subcommands()
    assert stage.user is not None
    uid = stage.user.split(":")[0]
    # Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0


def test_image_is_installed_with_pip(stages: dict[str, Stage]) -> None:
    runs = " ".join(r for s in stages.values() for r in s.runs)
    # With the tracing extra: operators turn tracing on with an environment variable.
    assert "pip install '.[tracing]'" in runs


def test_copied_sources_exist(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        for words in stage.copies:
            if any(w.startswith("--from") for w in words):
                continue
            for source in [w for w in words[:-1] if not w.startswith("--")]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_the_default_target_is_the_worker() -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    assert list(stages)[-1] == "worker"


def test_manifest_images_and_users_match_the_dockerfile(
    stages: dict[str, Stage], base: list[Manifest]
) -> None:
    for name in checks.PROCESSES:
        deployment = checks.find(base, "Deployment", name)[0]
        pod = checks.pod_spec(deployment)
        target = image_name(pod["containers"][0]["image"]).rsplit("/", 1)[-1]
        assert target.removeprefix("flotilla-") in stages, f"{name}: no stage for {target}"
        stage = stages[target.removeprefix("flotilla-")]
        assert stage.user is not None
        assert pod["securityContext"]["runAsUser"] == int(stage.user.split(":")[0])
        for key in stage.env:
            if key.startswith("FLOTILLA_"):
                assert key in checks.setting_env_names(checks.PROCESSES[name])


def test_parser_follows_inheritance() -> None:
    stages = parse_dockerfile(
        "FROM python:3.11-slim AS a\nUSER 1:1\nENTRYPOINT [\"x\"]\nCMD [\"y\"]\n"
        "FROM a AS b\nCMD [\"z\"]\nFROM a AS c\n"
    )
    assert (stages["b"].user, stages["b"].entrypoint, stages["b"].cmd) == ("1:1", ["x"], ["z"])
    assert stages["c"].cmd is None
    assert stages["c"].base == "python:3.11-slim"


# ---- the image ships the benchmarked code: accelerator compiled, WIT carried, checked ----

DOCKERIGNORE = REPO / "deploy" / "Dockerfile.dockerignore"


@pytest.fixture(scope="module")
def rules() -> list[dockerignore.Rule]:
    return dockerignore.parse(DOCKERIGNORE.read_text())


def _context_copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, absolute destination) of each COPY from the build context."""
    out = []
    for words in stage.copies:
        assert not any(w.startswith("--") for w in words), f"COPY {words}: unexpected flag"
        sources, dest = words[:-1], posixpath.join(stage.workdir, words[-1])
        if len(sources) > 1 or (REPO / sources[0]).is_file():
            assert words[-1].endswith("/"), f"COPY {words}: files go into a directory/"
        out.append((sources, dest))
    return out


def _build_product(path: str) -> bool:
    return any(part == "__pycache__" or part.endswith((".pyc", ".so", ".egg-info"))
               for part in path.split("/"))


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = dockerignore.parse("# c\n**\n!src/\nsrc/**/*.tmp\n!src/keep.tmp\n/top\n")
    assert [r.pattern for r in rules] == ["**", "src", "src/**/*.tmp", "src/keep.tmp", "top"]
    assert dockerignore.excluded(rules, "other/file")
    assert not dockerignore.excluded(rules, "src/a/b.py")
    assert dockerignore.excluded(rules, "src/a.tmp") and dockerignore.excluded(rules, "src/a/b.tmp")
    assert not dockerignore.excluded(rules, "src/keep.tmp")
    assert dockerignore.excluded(rules, "src2/x")  # `src` is a path, not a prefix


def test_dockerignore_lets_every_copied_file_through_and_no_build_product(
    stages: dict[str, Stage], rules: list[dockerignore.Rule]
) -> None:
    for sources, _ in _context_copies(stages["build"]):
        for source in sources:
            present = dockerignore.context_files(REPO, source, [])
            kept = set(dockerignore.context_files(REPO, source, rules))
            assert kept, f"COPY {source}: the .dockerignore leaves nothing of it"
            for path in present:
                assert (path in kept) != _build_product(path), path
    for left_out in ("flotilla/sandbox/_fastcall.cpython-311-x86_64-linux-gnu.so",
                     "flotilla.egg-info/PKG-INFO", "flotilla/__pycache__/cli.cpython-311.pyc",
                     ".venv/bin/python", ".git/HEAD", "tests/conftest.py", "build/lib/x.py"):
        assert dockerignore.excluded(rules, left_out), left_out
    for kept_in in ("setup.py", "flotilla/sandbox/_fastcall.c", "flotilla/wit",
                    "wit/flotilla.wit"):
        assert not dockerignore.excluded(rules, kept_in), kept_in


def test_only_the_build_stage_has_a_compiler(stages: dict[str, Stage]) -> None:
    build = " ".join(stages["build"].runs)
    assert re.search(r"apt-get install [^&]*\bgcc\b", build)
    assert re.search(r"apt-get install [^&]*\blibc6-dev\b", build)
    for name in ("runtime", "dispatcher", "worker"):
        assert not re.search(r"apt-get|\bgcc\b|build-essential", " ".join(stages[name].runs))
        # Nothing from the context either: the runtime gets only the installed venv.
        assert all(w[0] == "--from=build" for w in stages[name].copies), stages[name].copies


def _wheel_files(
    dockerfile: str, rules: list[dockerignore.Rule], tmp: Path
) -> tuple[str, set[str]]:
    """Build the wheel as the build stage would, from exactly what its COPY lines copy."""
    build = parse_dockerfile(dockerfile)["build"]
    root = tmp / "fs"
    for sources, dest in _context_copies(build):
        for source in sources:
            dockerignore.copy_into(REPO, source, root / dest.lstrip("/"), rules)
    assert any(re.search(r"pip install '?\.(\[tracing\])?'?(\s|$)", run) for run in build.runs)
    src = root / build.workdir.lstrip("/")  # `pip install .` runs in the WORKDIR
    assert not list(src.rglob("*.so")), "an in-tree build product reached the context"
    # Build isolation on, as in the image (setuptools comes from the configured index).
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
         str(src)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("flotilla-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return wheel.name, set(archive.namelist())


@pytest.mark.slow
def test_wheel_from_the_build_stage_copies_has_the_accelerator_and_wit(
    rules: list[dockerignore.Rule], tmp_path: Path
) -> None:
    if shutil.which("gcc") is None:
        unavailable("no gcc here: the build stage's accelerator cannot be compiled")
    text = DOCKERFILE.read_text()
    name, files = _wheel_files(text, rules, tmp_path / "image")
    assert [f for f in files if fnmatch.fnmatch(f, "flotilla/sandbox/_fastcall*.so")], name
    assert "-py3-none-any" not in name
    wits = {f"flotilla/wit/{p.name}" for p in (REPO / "wit").glob("*.wit")}
    assert wits and wits <= files
    wats = {p.relative_to(REPO).as_posix() for p in (REPO / "flotilla").rglob("*.wat")}
    assert wats and wats <= files  # the packaged guests (`flotilla bench sandbox`)
    # The control: without setup.py (the old image) the wheel is pure Python, the slow path.
    without = text.replace("setup.py ", "")
    assert without != text
    name, files = _wheel_files(without, rules, tmp_path / "old")
    assert name.endswith("-py3-none-any.whl")
    assert not [f for f in files if f.endswith(".so")]


def test_runtime_stage_refuses_an_image_on_the_ctypes_path(
    stages: dict[str, Stage], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flotilla.cli import main

    checks_ = [r for r in stages["runtime"].runs if r.startswith("flotilla doctor")]
    assert len(checks_) == 1
    text = DOCKERFILE.read_text()
    # As the runtime user, on the venv copied from the build stage.
    assert text.index("COPY --from=build /opt/flotilla") < text.index("USER 10001")
    assert text.index("USER 10001") < text.index(checks_[0])
    argv = shlex.split(checks_[0])[1:]
    assert "--no-services" in argv  # nothing to reach while building
    monkeypatch.setenv("FLOTILLA_SANDBOX_CTYPES", "1")
    assert main(argv) == 1
    assert "missing: c-extension" in capsys.readouterr().out
    monkeypatch.delenv("FLOTILLA_SANDBOX_CTYPES")
    from flotilla.sandbox import fastpath

    if fastpath.load() is None:
        unavailable("flotilla/sandbox/_fastcall was not built (pip install -e . builds it)")
    assert main(argv) == 0
