"""The OpenAPI document's deploy form carries `FunctionConfig`'s own JSON schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import fakeredis

from dispatcher.app import create_app
from flotilla.artifacts import ArtifactStore, LocalBackend
from flotilla.config import FunctionConfig
from flotilla.jobs import JobStore
from flotilla.registry import Deployer, Registry
from tests.api.conftest import FakeTransport, fake_compile


def _deploy_config_schema(tmp_path: Path) -> dict[str, Any]:
    redis = fakeredis.FakeAsyncRedis()
    registry = Registry(redis, prefix="schema")
    app = create_app(
        registry=registry,
        deployer=Deployer(registry, ArtifactStore(LocalBackend(str(tmp_path)), "k"),
                          compile=fake_compile, engine_fingerprint="eng"),
        jobs=JobStore(redis, prefix="schema", ttl_s=60),
        transport=FakeTransport(),
    )
    put = app.openapi()["paths"]["/v1/functions/{name}"]["put"]
    form = put["requestBody"]["content"]["multipart/form-data"]["schema"]
    return form["properties"]["config"]  # type: ignore[no-any-return]


def test_deploy_config_schema_is_the_models_with_name_optional(tmp_path: Path) -> None:
    expected = copy.deepcopy(FunctionConfig.json_schema())
    assert expected.pop("required") == ["name"]  # the path names the function
    assert _deploy_config_schema(tmp_path) == expected
