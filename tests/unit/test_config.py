"""FunctionConfig validation: every field's bad values are rejected with the field named; its
JSON schema (the OpenAPI schema of the deploy form's config) agrees with the server."""

import dataclasses
from typing import Any

import jsonschema
import pytest

from flotilla.config import (
    DEFAULT_MAX_BODY_BYTES,
    FIELDS,
    MAX_ENV_BYTES,
    MAX_MAX_BODY_BYTES,
    MAX_MEMORY_LIMIT_MB,
    MAX_TIMEOUT_MS,
    FunctionConfig,
)
from flotilla.errors import ConfigError
from flotilla.registry import canonical_config, version_digest


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


def test_version_digests_of_known_configs_are_pinned() -> None:
    # Deployed versions are addressed by digests over the canonical config JSON: a change of
    # that JSON would orphan every existing deployment.
    full = FunctionConfig.from_dict({
        "name": "fn", "env": {"B": "2", "A": "1"}, "timeout_ms": 5000, "memory_limit_mb": 64,
        "max_body_bytes": 1024, "allowed_hosts": ["API.example.com", "*.example.org:8443"],
        "cache_namespace": "shared-ns", "s3_buckets": ["my-bucket"], "dynamodb_tables": ["Users"],
    })
    assert canonical_config(full) == (
        '{"allowed_hosts":["api.example.com","*.example.org:8443"],"cache_namespace":"shared-ns",'
        '"dynamodb_tables":["Users"],"env":{"A":"1","B":"2"},"max_body_bytes":1024,'
        '"memory_limit_mb":64,"name":"fn","s3_buckets":["my-bucket"],"timeout_ms":5000}'
    )
    assert version_digest("ab" * 32, full) == (
        "4c44af5398b14a1f6f3d974992b4f2a919ebe5c87c94f9bb9eb53b497899f04f"
    )
    assert version_digest("ab" * 32, FunctionConfig(name="echo")) == (
        "dc7a4a15e19736405b3d38cb1be672da197a17ad047f7d1a80d2a42fb900e3b9"
    )


def test_reads_are_plain_attribute_reads() -> None:
    # The worker reads the config per invocation: no __getattr__ hook (a pydantic BaseModel
    # has one, ~3x slower per read: tests/unit/bench_config_attrs.py), values in __dict__.
    cfg = FunctionConfig("echo")
    assert not hasattr(FunctionConfig, "__getattr__")
    assert vars(cfg)["timeout_ms"] == cfg.timeout_ms


def test_positional_name_and_validated_replace() -> None:
    cfg = FunctionConfig("echo", timeout_ms=1234)
    assert (cfg.name, cfg.timeout_ms, cfg.cache_namespace) == ("echo", 1234, "echo")
    capped = dataclasses.replace(cfg, timeout_ms=10)  # what the worker does near a deadline
    assert (capped.timeout_ms, cfg.timeout_ms, capped.env) == (10, 1234, cfg.env)
    with pytest.raises(ConfigError, match="timeout_ms"):
        dataclasses.replace(cfg, timeout_ms=0)


def _env(entries: int, value: str = "v") -> dict[str, str]:
    return {f"K{i}": value for i in range(entries)}


SCHEMA_CASES: list[tuple[str, dict[str, Any], bool, bool]] = [
    # (case, config, the schema accepts it, the server accepts it)
    ("minimal", {"name": "fn"}, True, True),
    ("no name", {}, False, False),
    ("bad name", {"name": "Fn"}, False, False),
    ("unknown field", {"name": "fn", "surprise": 1}, False, False),
    ("env of 100", {"name": "fn", "env": _env(100)}, True, True),
    ("env of 150", {"name": "fn", "env": _env(150)}, True, True),  # no count limit
    ("env bad name", {"name": "fn", "env": {"1X": "a"}}, False, False),
    ("env reserved", {"name": "fn", "env": {"FLOTILLA_FUNCTION_NAME": "a"}}, False, False),
    ("env NUL", {"name": "fn", "env": {"A": "a\x00b"}}, False, False),
    ("env number", {"name": "fn", "env": {"A": 1}}, False, False),
    # Bytes are not countable in JSON Schema: the description says it, the server checks.
    ("env too big", {"name": "fn", "env": _env(2, "x" * 40_000)}, True, False),
    ("timeout 1", {"name": "fn", "timeout_ms": 1}, True, True),
    ("timeout 0", {"name": "fn", "timeout_ms": 0}, False, False),
    ("timeout max", {"name": "fn", "timeout_ms": MAX_TIMEOUT_MS}, True, True),
    ("timeout max+1", {"name": "fn", "timeout_ms": MAX_TIMEOUT_MS + 1}, False, False),
    ("timeout text", {"name": "fn", "timeout_ms": "5"}, False, False),
    ("timeout bool", {"name": "fn", "timeout_ms": True}, False, False),
    ("timeout float", {"name": "fn", "timeout_ms": 5.5}, False, False),
    ("memory max", {"name": "fn", "memory_limit_mb": MAX_MEMORY_LIMIT_MB}, True, True),
    ("memory max+1", {"name": "fn", "memory_limit_mb": MAX_MEMORY_LIMIT_MB + 1}, False, False),
    ("body 0", {"name": "fn", "max_body_bytes": 0}, True, True),
    ("body max+1", {"name": "fn", "max_body_bytes": MAX_MAX_BODY_BYTES + 1}, False, False),
    ("host upper case", {"name": "fn", "allowed_hosts": ["API.example.com"]}, True, True),
    ("host wildcard port", {"name": "fn", "allowed_hosts": ["*.example.org:8443"]}, True, True),
    ("host url", {"name": "fn", "allowed_hosts": ["http://example.com"]}, False, False),
    # A port's range is not in the pattern: the description says it, the server checks.
    ("host port 99999", {"name": "fn", "allowed_hosts": ["example.com:99999"]}, True, False),
    ("hosts as text", {"name": "fn", "allowed_hosts": "example.com"}, False, False),
    ("hosts 100", {"name": "fn", "allowed_hosts": ["a.com"] * 100}, True, True),
    ("hosts 101", {"name": "fn", "allowed_hosts": ["a.com"] * 101}, False, False),
    ("namespace empty", {"name": "fn", "cache_namespace": ""}, True, True),
    ("namespace bad", {"name": "fn", "cache_namespace": "A B"}, False, False),
    ("bucket", {"name": "fn", "s3_buckets": ["my-bucket"]}, True, True),
    ("bucket bad", {"name": "fn", "s3_buckets": ["Bad_Bucket"]}, False, False),
    ("table", {"name": "fn", "dynamodb_tables": ["Users"]}, True, True),
    ("table bad", {"name": "fn", "dynamodb_tables": ["a"]}, False, False),
]


@pytest.mark.parametrize(
    ("config", "schema_ok", "server_ok"),
    [case[1:] for case in SCHEMA_CASES],
    ids=[case[0] for case in SCHEMA_CASES],
)
def test_json_schema_and_server_agree(
    config: dict[str, Any], schema_ok: bool, server_ok: bool
) -> None:
    validator = jsonschema.Draft202012Validator(FunctionConfig.json_schema())
    try:
        FunctionConfig.from_dict(config)
        accepted = True
    except ConfigError:
        accepted = False
    assert (validator.is_valid(config), accepted) == (schema_ok, server_ok)


def test_schema_states_every_limit_of_the_model() -> None:
    props = FunctionConfig.json_schema()["properties"]
    assert set(props) == set(FIELDS)
    assert (props["timeout_ms"]["minimum"], props["timeout_ms"]["maximum"]) == (1, MAX_TIMEOUT_MS)
    assert props["memory_limit_mb"]["maximum"] == MAX_MEMORY_LIMIT_MB
    assert props["max_body_bytes"]["maximum"] == MAX_MAX_BODY_BYTES
    assert "maxProperties" not in props["env"]  # the server counts bytes, not entries
    assert str(MAX_ENV_BYTES) in props["env"]["description"]
    for key in ("allowed_hosts", "s3_buckets", "dynamodb_tables"):
        assert props[key]["maxItems"] == 100


# ---- fields added after 0.1.0 (retry, limits, spawn, public, topics) ------------------


def test_later_fields_default_and_stay_out_of_the_digest() -> None:
    plain = FunctionConfig(name="echo")
    assert (plain.retry.max_attempts, plain.retry.on, plain.max_concurrency, plain.rate_limit,
            plain.spawn_functions, plain.public, plain.publish_topics) == (
        1, ("timeout", "trap"), 0, None, (), False, ())
    assert "retry" not in canonical_config(plain) and "public" not in canonical_config(plain)
    shown = plain.to_dict()
    assert shown["retry"] == {"max_attempts": 1, "backoff_ms": 1000, "backoff_max_ms": 60000,
                              "on": ["timeout", "trap"]}
    assert shown["rate_limit"] is None and shown["public"] is False


def test_later_fields_round_trip_and_change_the_digest() -> None:
    data = {
        "name": "jobs",
        "retry": {"max_attempts": 5, "backoff_ms": 10, "backoff_max_ms": 100,
                  "on": ["function_error", "timeout"]},
        "max_concurrency": 3,
        "rate_limit": {"per_second": 2.5, "burst": 4},
        "spawn_functions": ["other"],
        "public": True,
        "publish_topics": ["orders.*", "audit.#"],
    }
    config = FunctionConfig.from_dict(data)
    assert FunctionConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["rate_limit"] == {"per_second": 2.5, "burst": 4}
    assert config.retry.on == ("function_error", "timeout")
    digest = version_digest("ab" * 32, config)
    assert digest != version_digest("ab" * 32, FunctionConfig(name="jobs"))
    assert version_digest("ab" * 32, FunctionConfig.from_dict(config.to_dict())) == digest


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts", "out of range 1..20"),
        ({"retry": {"max_attempts": 21}}, "retry.max_attempts", "out of range"),
        ({"retry": {"on": ["ok"]}}, "retry.on", "'ok' is not one of"),
        ({"retry": {"on": "timeout"}}, "retry.on", "list"),
        ({"retry": {"backoff_ms": -1}}, "retry.backoff_ms", "out of range"),
        ({"retry": {"tries": 3}}, "retry.tries", "unknown"),
        ({"retry": 3}, "retry", ""),
        ({"max_concurrency": -1}, "max_concurrency", "out of range 0..100000"),
        ({"max_concurrency": "2"}, "max_concurrency", "integer"),
        ({"rate_limit": {"per_second": 0}}, "rate_limit.per_second", ""),
        ({"rate_limit": {"per_second": "1"}}, "rate_limit.per_second", "number"),
        ({"rate_limit": {"per_second": 1, "burst": 0}}, "rate_limit.burst", "out of range"),
        ({"rate_limit": {}}, "rate_limit.per_second", "required"),
        ({"spawn_functions": ["Bad"]}, "spawn_functions", "not a function name"),
        ({"public": "yes"}, "public", ""),
        ({"publish_topics": ["a..b"]}, "publish_topics", "not a topic pattern"),
        ({"publish_topics": ["Orders"]}, "publish_topics", "not a topic pattern"),
        ({"publish_topics": "orders"}, "publish_topics", "list"),
    ],
)
def test_later_fields_are_checked(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        FunctionConfig.from_dict({"name": "fn", **data})
    assert info.value.field == field
    assert words in str(info.value)
