"""FunctionConfig validation: every field's bad values are rejected with the field named."""

import pytest

from flotilla.config import DEFAULT_MAX_BODY_BYTES, FunctionConfig
from flotilla.errors import ConfigError


def test_defaults() -> None:
    cfg = FunctionConfig.from_dict({}, name="echo")
    assert cfg.timeout_ms == 30_000
    assert cfg.memory_limit_mb == 128
    assert cfg.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert cfg.allowed_hosts == ()
    assert cfg.cache_namespace == "echo"
    assert dict(cfg.env) == {}


def test_round_trip() -> None:
    data = {
        "name": "fn",
        "env": {"A": "1"},
        "timeout_ms": 5000,
        "allowed_hosts": ["API.example.com", "*.example.org:8443"],
        "s3_buckets": ["my-bucket"],
        "dynamodb_tables": ["Users"],
        "cache_namespace": "shared-ns",
    }
    cfg = FunctionConfig.from_dict(data)
    assert cfg.allowed_hosts == ("api.example.com", "*.example.org:8443")
    assert FunctionConfig.from_dict(cfg.to_dict()) == cfg


def test_frozen() -> None:
    cfg = FunctionConfig(name="fn")
    with pytest.raises(AttributeError):
        cfg.timeout_ms = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.env["X"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "../etc"}, "name"),
        ({"name": "fn", "timeout_ms": 0}, "timeout_ms"),
        ({"name": "fn", "timeout_ms": 900_001}, "timeout_ms"),
        ({"name": "fn", "timeout_ms": "5"}, "timeout_ms"),
        ({"name": "fn", "timeout_ms": True}, "timeout_ms"),
        ({"name": "fn", "memory_limit_mb": -1}, "memory_limit_mb"),
        ({"name": "fn", "max_body_bytes": -1}, "max_body_bytes"),
        ({"name": "fn", "env": []}, "env"),
        ({"name": "fn", "env": {"1X": "a"}}, "env"),
        ({"name": "fn", "env": {"A": 1}}, "env"),
        ({"name": "fn", "env": {"FLOTILLA_INVOCATION_ID": "x"}}, "env"),
        ({"name": "fn", "allowed_hosts": "example.com"}, "allowed_hosts"),
        ({"name": "fn", "allowed_hosts": ["http://example.com"]}, "allowed_hosts"),
        ({"name": "fn", "allowed_hosts": ["example.com:99999"]}, "allowed_hosts"),
        ({"name": "fn", "allowed_hosts": ["*"]}, "allowed_hosts"),
        ({"name": "fn", "cache_namespace": "A B"}, "cache_namespace"),
        ({"name": "fn", "s3_buckets": ["Bad_Bucket"]}, "s3_buckets"),
        ({"name": "fn", "dynamodb_tables": ["a"]}, "dynamodb_tables"),
        ({"name": "fn", "surprise": 1}, "surprise"),
        ({}, "name"),
    ],
)
def test_invalid_field_is_named(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        FunctionConfig.from_dict(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_path_name_must_match_body_name() -> None:
    with pytest.raises(ConfigError, match="name"):
        FunctionConfig.from_dict({"name": "a"}, name="b")


def test_not_an_object() -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        FunctionConfig.from_dict([1, 2])
