"""Function configuration: validated once at deploy time, frozen afterwards."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from flotilla.errors import ConfigError

MIB = 1024 * 1024
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 900_000
DEFAULT_MEMORY_LIMIT_MB = 128
MAX_MEMORY_LIMIT_MB = 4096
# Request and response bodies. Bodies cross the wasm boundary as one byte string (see
# flotilla/sandbox/rawabi.py), which is also where the 8 MiB ceiling comes from; a component
# the byte-string export cannot be added to takes bodies up to 2.5 MB (wasmtime's per-call
# copy budget with per-byte values, docs/performance.md).
DEFAULT_MAX_BODY_BYTES = 6 * MIB
MAX_MAX_BODY_BYTES = 8 * MIB

# Names appear in URLs, queue routing, metric labels and cache prefixes: keep them boring.
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# allowed_hosts entries: exact host, or "*." + domain, optionally ":port".
HOST_PATTERN_RE = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$"
)
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
RESERVED_ENV = ("FLOTILLA_FUNCTION_NAME", "FLOTILLA_INVOCATION_ID")
MAX_ENV_BYTES = 64 * 1024

FIELDS = (
    "name",
    "env",
    "timeout_ms",
    "memory_limit_mb",
    "max_body_bytes",
    "allowed_hosts",
    "cache_namespace",
    "s3_buckets",
    "dynamodb_tables",
)


@dataclass(frozen=True)
class FunctionConfig:
    """Everything the sandbox needs to know about one function besides its code."""

    name: str
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    allowed_hosts: tuple[str, ...] = ()
    cache_namespace: str = ""
    s3_buckets: tuple[str, ...] = ()
    dynamodb_tables: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        object.__setattr__(self, "env", MappingProxyType(_check_env(self.env)))
        _check_int("timeout_ms", self.timeout_ms, 1, MAX_TIMEOUT_MS)
        _check_int("memory_limit_mb", self.memory_limit_mb, 1, MAX_MEMORY_LIMIT_MB)
        _check_int("max_body_bytes", self.max_body_bytes, 0, MAX_MAX_BODY_BYTES)
        hosts = _check_str_list("allowed_hosts", self.allowed_hosts)
        hosts = tuple(h.lower() for h in hosts)
        for h in hosts:
            if not HOST_PATTERN_RE.match(h) or not _port_ok(h):
                raise ConfigError(
                    "allowed_hosts",
                    f"{h!r} is not a host name, '*.domain' or either with ':port'",
                )
        object.__setattr__(self, "allowed_hosts", hosts)
        namespace = self.cache_namespace or self.name
        if not isinstance(namespace, str) or not NAME_RE.match(namespace):
            raise ConfigError(
                "cache_namespace",
                "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
            )
        object.__setattr__(self, "cache_namespace", namespace)
        buckets = _check_str_list("s3_buckets", self.s3_buckets)
        for b in buckets:
            if not BUCKET_RE.match(b):
                raise ConfigError("s3_buckets", f"{b!r} is not a valid S3 bucket name")
        object.__setattr__(self, "s3_buckets", buckets)
        tables = _check_str_list("dynamodb_tables", self.dynamodb_tables)
        for t in tables:
            if not TABLE_RE.match(t):
                raise ConfigError("dynamodb_tables", f"{t!r} is not a valid DynamoDB table name")
        object.__setattr__(self, "dynamodb_tables", tables)

    @classmethod
    def from_dict(cls, data: Any, *, name: str | None = None) -> FunctionConfig:
        """Build a config from decoded JSON; `name` (e.g. from a URL path) overrides the body's."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", "must be a JSON object")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ConfigError(str(unknown[0]), f"unknown field (known: {', '.join(FIELDS)})")
        values = dict(data)
        if name is not None:
            if "name" in values and values["name"] != name:
                raise ConfigError("name", f"{values['name']!r} does not match {name!r}")
            values["name"] = name
        if "name" not in values:
            raise ConfigError("name", "is required")
        for key in ("allowed_hosts", "s3_buckets", "dynamodb_tables"):
            if key in values:
                values[key] = _check_str_list(key, values[key])
        if "env" in values and not isinstance(values["env"], Mapping):
            raise ConfigError("env", "must be an object of string to string")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, the inverse of `from_dict`."""
        out: dict[str, Any] = {name: getattr(self, name) for name in FIELDS}
        out["env"] = dict(self.env)
        for key in ("allowed_hosts", "s3_buckets", "dynamodb_tables"):
            out[key] = list(out[key])
        return out


def _check_name(field_name: str, value: Any) -> None:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigError(
            field_name,
            f"{value!r} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
        )


def _check_int(field_name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field_name, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ConfigError(field_name, f"{value} is out of range {low}..{high}")


def _check_str_list(field_name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(field_name, "must be a list of strings")
    if len(value) > 100:
        raise ConfigError(field_name, "has more than 100 entries")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ConfigError(field_name, f"{item!r} is not a non-empty string")
    return tuple(value)


def _check_env(env: Any) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise ConfigError("env", "must be an object of string to string")
    out: dict[str, str] = {}
    size = 0
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            raise ConfigError("env", f"{key!r} is not a valid variable name")
        if key in RESERVED_ENV:
            raise ConfigError("env", f"{key} is set by Flotilla and cannot be overridden")
        if not isinstance(value, str) or "\x00" in value:
            raise ConfigError("env", f"value of {key} must be a string without NUL bytes")
        size += len(key) + len(value)
        out[key] = value
    if size > MAX_ENV_BYTES:
        raise ConfigError("env", f"is larger than {MAX_ENV_BYTES} bytes")
    return out


def _port_ok(pattern: str) -> bool:
    _, sep, port = pattern.rpartition(":")
    return not sep or 1 <= int(port) <= 65535
