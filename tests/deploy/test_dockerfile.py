"""deploy/Dockerfile, checked statically (no Docker engine here): stages, user, entrypoints."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass, field

import pytest

from flotilla.cli import build_parser
from tests.deploy import checks
from tests.deploy.conftest import REPO
from tests.deploy.kustomize import Manifest, image_name

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
                stage.env = dict(parent.env)
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
    assert "pip install ." in runs


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
