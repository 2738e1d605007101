"""Fixtures of the deployment tests: rendered layouts and the Kubernetes schema registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from referencing import Registry

from tests.deploy.crd_schemas import kubernetes_definitions
from tests.deploy.kustomize import Manifest, render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
LAYOUTS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev"}
# The Kubernetes release the manifests are validated against (the oldest we support:
# autoscaling/v2 and policy/v1 are GA there, and its schemas are bundled offline).
KUBERNETES_VERSION = "1.29"


@pytest.fixture(scope="session", params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    """(name, rendered objects) of each kustomize layout."""
    return request.param, render(LAYOUTS[request.param])


@pytest.fixture(scope="session")
def base() -> list[Manifest]:
    """The rendered base."""
    return render(LAYOUTS["base"])


@pytest.fixture(scope="session")
def dev() -> list[Manifest]:
    """The rendered dev overlay."""
    return render(LAYOUTS["dev"])


@pytest.fixture(scope="session")
def k8s_registry() -> Registry:
    """Kubernetes' schema definitions, for the custom resources' nested built-in types."""
    return kubernetes_definitions(KUBERNETES_VERSION)
