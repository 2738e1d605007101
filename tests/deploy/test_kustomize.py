"""The test-side kustomize subset: merge rules, image references, loud failure on the rest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import LAYOUTS
from tests.deploy.kustomize import UnsupportedKustomization, image_name, render, strategic_merge


@pytest.mark.parametrize(
    "base,patch,expected",
    [
        ({"a": 1, "b": 2}, {"b": 3}, {"a": 1, "b": 3}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, {"a": {"x": 1, "y": 3}}),
        ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),
        ({"l": [1, 2]}, {"l": [3]}, {"l": [3]}),
        (
            {"c": [{"name": "w", "image": "i", "r": {"cpu": "1"}}, {"name": "s"}]},
            {"c": [{"name": "w", "r": {"memory": "1Gi"}}]},
            {"c": [{"name": "w", "image": "i", "r": {"cpu": "1", "memory": "1Gi"}},
                   {"name": "s"}]},
        ),
        ({"c": [{"name": "w"}]}, {"c": [{"name": "x"}]}, {"c": [{"name": "w"}, {"name": "x"}]}),
        ({"s": "a = 1\n"}, {"s": "b = 2\n"}, {"s": "b = 2\n"}),
    ],
)
def test_strategic_merge(base: Any, patch: Any, expected: Any) -> None:
    assert strategic_merge(base, patch) == expected


def test_strategic_merge_leaves_inputs_alone() -> None:
    base = {"a": {"x": [1]}}
    strategic_merge(base, {"a": {"x": [2]}})
    assert base == {"a": {"x": [1]}}


@pytest.mark.parametrize(
    "image,name",
    [
        ("flotilla-worker", "flotilla-worker"),
        ("flotilla-worker:dev", "flotilla-worker"),
        ("ghcr.io/flotilla/flotilla-worker:0.1.0", "ghcr.io/flotilla/flotilla-worker"),
        ("registry:5000/flotilla-worker", "registry:5000/flotilla-worker"),
        ("registry:5000/flotilla-worker:1@sha256:ab", "registry:5000/flotilla-worker"),
    ],
)
def test_image_name(image: str, name: str) -> None:
    assert image_name(image) == name


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  template:
    spec:
      containers: [{name: app, image: "app:1", args: [a]}]
---
apiVersion: v1
kind: Namespace
metadata: {name: ns}
"""


def test_render_applies_patches_images_and_namespace(tmp_path: Path) -> None:
    _write(tmp_path, {
        "base/kustomization.yaml": "resources: [app.yaml]\nnamespace: ns\n",
        "base/app.yaml": DEPLOYMENT,
        "over/kustomization.yaml": (
            "resources: [../base]\npatches: [{path: p.yaml}]\n"
            "images: [{name: app, newName: reg/app, newTag: dev}]\n"
        ),
        "over/p.yaml": (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n"
            "spec: {replicas: 2}\n"
        ),
    })
    deployment, namespace = render(tmp_path / "over")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["namespace"] == "ns"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/app:dev"
    assert "namespace" not in namespace["metadata"]


@pytest.mark.parametrize(
    "kustomization,message",
    [
        ("resources: [app.yaml]\ncommonLabels: {a: b}\n", "unsupported fields ['commonLabels']"),
        ("resources: [missing.yaml]\n", "does not exist"),
        ("resources: [app.yaml]\npatches: [{path: p.yaml, target: {kind: X}}]\n",
         "only `patches: - path:`"),
        ("resources: [app.yaml]\npatches: [{path: p.yaml}]\n", "not found"),
        ("resources: [app.yaml, app.yaml]\n", "defined twice"),
    ],
)
def test_render_refuses_what_it_does_not_implement(
    tmp_path: Path, kustomization: str, message: str
) -> None:
    _write(tmp_path, {
        "kustomization.yaml": kustomization,
        "app.yaml": DEPLOYMENT,
        "p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\n",
    })
    with pytest.raises(UnsupportedKustomization, match=message.replace("[", r"\[")):
        render(tmp_path)


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl here to compare with the real kustomize")
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_renders_like_the_real_kustomize(name: str) -> None:
    # Where kubectl exists, its embedded kustomize must render exactly what the subset does.
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(LAYOUTS[name])],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    real = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
        return {(o["apiVersion"], o["kind"], o["metadata"]["name"]): o for o in objects}

    assert by_key(render(LAYOUTS[name])) == by_key(real)
