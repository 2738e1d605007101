"""A tiny kustomize renderer: the subset deploy/k8s uses, so tests run without a binary.

Supported `kustomization.yaml` fields (anything else raises `UnsupportedKustomization`, so a
layout that starts using more of kustomize fails loudly here instead of rendering wrongly):

- `resources`: YAML files (several documents each) and directories holding a kustomization;
- `namespace`: set on every namespaced object (the `Namespace` objects themselves are left alone);
- `images`: `name` matched against the image without its tag; `newName` and/or `newTag`;
- `patches`: `path` to a file with one strategic-merge patch naming its target by
  `apiVersion`, `kind` and `metadata.name`. Maps merge recursively; lists whose items all
  have a `name` merge item by item (containers, env, volumes, ports); other lists and scalars
  are replaced; `null` deletes a key. For custom resources kustomize uses JSON merge patch,
  which agrees with this on everything but lists of named items (our CRD patches have none).

Order as in kustomize: resources (recursively rendered), then patches, then images, then
namespace. `test_kustomize.py` compares the result with `kubectl kustomize` where kubectl exists.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED_FIELDS = frozenset(
    {"apiVersion", "kind", "metadata", "resources", "namespace", "images", "patches"}
)
# Cluster-scoped kinds among those we render: no metadata.namespace for them.
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
     "PersistentVolume", "StorageClass", "PriorityClass"}
)


class UnsupportedKustomization(Exception):
    """The kustomization uses a field or form this subset does not implement."""


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of a file."""
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def render(directory: Path) -> list[Manifest]:
    """Render the kustomization in `directory` into a list of manifests."""
    directory = Path(directory)
    kustomization = _load_kustomization(directory)
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(load_documents(target))
        else:
            raise UnsupportedKustomization(f"{directory}: resource {entry!r} does not exist")
    _check_unique(objects, directory)
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise UnsupportedKustomization(f"{directory}: only `patches: - path:` is supported")
        for patch in load_documents(directory / patch_entry["path"]):
            target = _find(objects, patch, directory / patch_entry["path"])
            merged = strategic_merge(target, patch)
            target.clear()
            target.update(merged)
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    return objects


def strategic_merge(base: Any, patch: Any) -> Any:
    """`patch` merged into a copy of `base` (see the module docstring for the rules)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if _named_list(base) and _named_list(patch):
        out_list = copy.deepcopy(base)
        for item in patch:
            for i, existing in enumerate(out_list):
                if existing["name"] == item["name"]:
                    out_list[i] = strategic_merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def image_name(image: str) -> str:
    """The image reference without its tag or digest (`ghcr.io:443/a/b:1` -> `ghcr.io:443/a/b`)."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


def _load_kustomization(directory: Path) -> Manifest:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise UnsupportedKustomization(f"{directory} has no kustomization.yaml")
    with path.open() as f:
        kustomization = yaml.safe_load(f) or {}
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{path}: unsupported fields {sorted(unknown)}")
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise UnsupportedKustomization(f"{path}: only kind Kustomization is supported")
    return kustomization


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, dict) and "name" in item for item in value
    )


def _key(obj: Manifest) -> tuple[str, str, str]:
    return (obj.get("apiVersion", ""), obj.get("kind", ""), obj.get("metadata", {}).get("name", ""))


def _check_unique(objects: list[Manifest], directory: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        key = _key(obj)
        if key in seen:
            raise UnsupportedKustomization(f"{directory}: {key} is defined twice")
        seen.add(key)


def _find(objects: list[Manifest], patch: Manifest, where: Path) -> Manifest:
    matches = [obj for obj in objects if _key(obj) == _key(patch)]
    if len(matches) != 1:
        raise UnsupportedKustomization(f"{where}: patch target {_key(patch)} not found")
    return matches[0]


def _set_image(objects: list[Manifest], image: Manifest) -> None:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            current = container.get("image", "")
            if image_name(current) != image["name"]:
                continue
            name = image.get("newName", image["name"])
            tag = image.get("newTag")
            if tag is None:
                rest = current[len(image["name"]):]
                container["image"] = name + rest
            else:
                container["image"] = f"{name}:{tag}"
