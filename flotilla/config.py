"""Function configuration: validated once at deploy time, frozen afterwards.

`FunctionConfig` is the one source of the config contract: its JSON schema is the OpenAPI
schema of the deploy form's `config` part (`dispatcher/openapi.py`), and its validation is
what the API, the registry and the worker run. Limits are declared once, as field
constraints; the few checks JSON Schema cannot state (the env's byte size, a port's range)
are validators beside them. Every rejection is a `ConfigError` naming the field.

A pydantic dataclass rather than a `BaseModel`: the worker reads `timeout_ms` and
`max_body_bytes` on every invocation, and a `BaseModel`'s `__getattr__` hook makes each read
about three times slower than a plain attribute's (21 ns against 6 ns on Python 3.11); a
dataclass keeps plain attributes, `FrozenInstanceError`, positional `name` and
`dataclasses.replace` (which validates again) as they were.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails, PydanticCustomError

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
MAX_LIST_ENTRIES = 100  # allowed_hosts, s3_buckets, dynamodb_tables
MAX_ENV_BYTES = 64 * 1024  # names and values together
RESERVED_ENV = ("FLOTILLA_FUNCTION_NAME", "FLOTILLA_INVOCATION_ID")

# Names appear in URLs, queue routing, metric labels and cache prefixes: keep them boring.
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
ENV_VALUE_PATTERN = r"^[^\x00]*$"
# allowed_hosts entries: exact host, or "*." + domain, optionally ":port". Entries are
# lower-cased before this is checked; upper case is allowed here so that the schema accepts
# what the server does.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_PATTERN = rf"^(\*\.)?({_LABEL})(\.{_LABEL})*(:[0-9]{{1,5}})?$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
TABLE_PATTERN = r"^[A-Za-z0-9_.-]{3,255}$"


# Topics: dot-separated words; in `publish_topics` patterns a word may be `*` (one word) or
# `#` (any number of words), as in AMQP topic routing.
TOPIC_WORD = r"[a-z0-9_-]{1,64}"
TOPIC_PATTERN = rf"^{TOPIC_WORD}(\.{TOPIC_WORD}){{0,15}}$"
TOPIC_FILTER_PATTERN = rf"^({TOPIC_WORD}|\*|#)(\.({TOPIC_WORD}|\*|#)){{0,15}}$"
MAX_RETRY_ATTEMPTS = 20
MAX_BACKOFF_MS = 86_400_000
MAX_CONCURRENCY = 100_000
# Outcomes a job may be retried on (the others are not the guest's to retry).
RETRYABLE = ("timeout", "trap", "memory_limit", "function_error")

# The integer fields' (ge, le): their constraints and their error messages.
_RANGES = {
    "timeout_ms": (1, MAX_TIMEOUT_MS),
    "memory_limit_mb": (1, MAX_MEMORY_LIMIT_MB),
    "max_body_bytes": (0, MAX_MAX_BODY_BYTES),
    "max_concurrency": (0, MAX_CONCURRENCY),
    "retry.max_attempts": (1, MAX_RETRY_ATTEMPTS),
    "retry.backoff_ms": (0, MAX_BACKOFF_MS),
    "retry.backoff_max_ms": (0, MAX_BACKOFF_MS),
    "rate_limit.burst": (1, 1_000_000),
}


def _count(field: str, default: int, description: str) -> Any:
    # strict: "5" and True are not integers here (lax mode would take both).
    low, high = _RANGES[field]
    return Field(default=default, strict=True, ge=low, le=high, description=description)


def _names(description: str) -> Any:
    return Field(default=(), max_length=MAX_LIST_ENTRIES, description=description)


# Strings are strict: bytes are not text here (pydantic's lax mode would decode them).
Name = Annotated[str, StringConstraints(strict=True, pattern=NAME_PATTERN)]
Namespace = Annotated[str, StringConstraints(strict=True, pattern=r"^([a-z][a-z0-9-]{0,62})?$")]
EnvName = Annotated[str, StringConstraints(strict=True, pattern=ENV_NAME_PATTERN)]
EnvValue = Annotated[str, StringConstraints(strict=True, pattern=ENV_VALUE_PATTERN)]
Host = Annotated[str, StringConstraints(strict=True, min_length=1, pattern=HOST_PATTERN)]
Bucket = Annotated[str, StringConstraints(strict=True, min_length=1, pattern=BUCKET_PATTERN)]
Table = Annotated[str, StringConstraints(strict=True, min_length=1, pattern=TABLE_PATTERN)]
TopicFilter = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=255, pattern=TOPIC_FILTER_PATTERN)
]
Retryable = Annotated[str, Field(strict=True, json_schema_extra={"enum": list(RETRYABLE)})]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RetryPolicy:
    """How a failed job is tried again: exponential backoff with jitter, on some outcomes."""

    max_attempts: int = Field(
        default=1, strict=True, ge=1, le=MAX_RETRY_ATTEMPTS,
        description="Runs in all, the first included (1: never retried)",
    )
    backoff_ms: int = Field(
        default=1_000, strict=True, ge=0, le=MAX_BACKOFF_MS,
        description="Delay before the first retry; doubled each time, with jitter",
    )
    backoff_max_ms: int = Field(
        default=60_000, strict=True, ge=0, le=MAX_BACKOFF_MS, description="Longest delay"
    )
    on: tuple[Retryable, ...] = Field(
        default=("timeout", "trap"), max_length=len(RETRYABLE),
        description=f"Outcomes that are retried, of {', '.join(RETRYABLE)}",
    )

    @field_validator("on", mode="before")
    @classmethod
    def _known_outcomes(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise PydanticCustomError("list_type", "must be a list of outcomes")
        for item in value:
            if item not in RETRYABLE:
                raise ValueError(f"{item!r} is not one of {', '.join(RETRYABLE)}")
        return tuple(dict.fromkeys(value))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {
            "max_attempts": self.max_attempts, "backoff_ms": self.backoff_ms,
            "backoff_max_ms": self.backoff_max_ms, "on": list(self.on),
        }


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RateLimit:
    """Invocations admitted per second across the fleet (a token bucket)."""

    per_second: float = Field(gt=0, le=1_000_000, description="Average admissions per second")
    burst: int = Field(
        default=1, strict=True, ge=1, le=1_000_000, description="Admissions allowed at once"
    )

    @field_validator("per_second", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PydanticCustomError("float_type", "must be a number")
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {"per_second": self.per_second, "burst": self.burst}


NO_RETRY = RetryPolicy()

# What a rejected value is, said to the user, by field (the patterns are not for reading).
_NOT_MATCHING = {
    "name": "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
    "cache_namespace": "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
    "allowed_hosts": "is not a host name, '*.domain' or either with ':port'",
    "s3_buckets": "is not a valid S3 bucket name",
    "dynamodb_tables": "is not a valid DynamoDB table name",
}
_LISTS = ("allowed_hosts", "s3_buckets", "dynamodb_tables", "spawn_functions", "publish_topics")
_NOT_MATCHING.update({
    "spawn_functions": "is not a function name",
    "publish_topics": "is not a topic pattern (words of a-z, 0-9, '_', '-' joined by '.'; "
    "a word may be '*' or '#')",
})
# Added after 0.1.0, with the defaults a digest leaves out (see FunctionConfig.digest_dict).
LATER_DEFAULTS: dict[str, Any] = {
    "retry": NO_RETRY.to_dict(), "max_concurrency": 0, "rate_limit": None,
    "spawn_functions": [], "public": False, "publish_topics": [],
}
_UNKNOWN = ("unexpected_keyword_argument", "unexpected_positional_argument", "extra_forbidden")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FunctionConfig:
    """Everything the sandbox needs to know about one function besides its code."""

    name: Name = Field(description="The function's name (the deploy path gives it)")
    env: Mapping[EnvName, EnvValue] = Field(
        default_factory=lambda: MappingProxyType({}),
        description=f"Environment the guest sees, besides {' and '.join(RESERVED_ENV)} "
        f"(which cannot be set); names and values together at most {MAX_ENV_BYTES} bytes",
        # Names must match the pattern (no other property), and not be reserved.
        json_schema_extra={
            "additionalProperties": False,
            "propertyNames": {"not": {"enum": list(RESERVED_ENV)}},
        },
    )
    timeout_ms: int = _count(
        "timeout_ms", DEFAULT_TIMEOUT_MS, "Wall-clock limit of one invocation, in milliseconds"
    )
    memory_limit_mb: int = _count(
        "memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB, "Cap on the guest's linear memory, in MiB"
    )
    max_body_bytes: int = _count(
        "max_body_bytes", DEFAULT_MAX_BODY_BYTES, "Cap on request and response bodies, in bytes"
    )
    allowed_hosts: tuple[Host, ...] = _names(
        "Hosts `http` may reach: host, '*.domain', either with ':port' (1-65535)"
    )
    cache_namespace: Namespace = Field(
        default="", description="Prefix of the function's cache keys (empty: the function's name)"
    )
    s3_buckets: tuple[Bucket, ...] = _names("S3 buckets the function may use")
    dynamodb_tables: tuple[Table, ...] = _names("DynamoDB tables the function may use")
    # Fields added after 0.1.0: left out of a config's digest while at their default, so
    # versions deployed before them keep their digests (`digest_dict`).
    retry: RetryPolicy = Field(
        default=NO_RETRY, description="How failed jobs are retried (never synchronous calls)"
    )
    max_concurrency: int = _count(
        "max_concurrency", 0,
        "Invocations of the function running at once across the fleet (0: no limit)",
    )
    rate_limit: RateLimit | None = Field(
        default=None, description="Invocations admitted per second across the fleet"
    )
    spawn_functions: tuple[Name, ...] = _names("Functions this one may start as jobs (`spawn`)")
    public: bool = Field(
        default=False, strict=True,
        description="Callers without an API key may invoke it (never deploy or read it)",
    )
    publish_topics: tuple[TopicFilter, ...] = _names(
        "Topics `topics.publish` may reach: words joined by '.', a word may be '*' or '#'"
    )

    def __post_init__(self) -> None:
        if not self.cache_namespace:
            object.__setattr__(self, "cache_namespace", self.name)

    @field_validator("retry", mode="before")
    @classmethod
    def _retry_object(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return RetryPolicy(**value)
        return value

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate_object(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return RateLimit(**value)
        return value

    @field_validator(*_LISTS, mode="before")
    @classmethod
    def _plain_list(cls, value: Any, info: ValidationInfo) -> Any:
        # A list (or tuple) only: lax mode would also take a set, a dict or a generator.
        if not isinstance(value, (list, tuple)):
            raise PydanticCustomError("list_type", "must be a list of strings")
        if info.field_name == "allowed_hosts":
            return [v.lower() if isinstance(v, str) else v for v in value]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _ports_in_range(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            _, sep, port = host.rpartition(":")
            if sep and not 1 <= int(port) <= 65535:
                raise ValueError(f"{host!r} {_NOT_MATCHING['allowed_hosts']}")
        return hosts

    @field_validator("env", mode="before")
    @classmethod
    def _env_mapping(cls, env: Any) -> Any:
        if not isinstance(env, Mapping):
            raise PydanticCustomError("dict_type", "must be an object of string to string")
        return env

    @field_validator("env")
    @classmethod
    def _env_allowed(cls, env: Mapping[str, str]) -> Mapping[str, str]:
        size = 0
        for key, value in env.items():
            if key in RESERVED_ENV:
                raise ValueError(f"{key} is set by Flotilla and cannot be overridden")
            size += len(key) + len(value)
        if size > MAX_ENV_BYTES:
            raise ValueError(f"is larger than {MAX_ENV_BYTES} bytes")
        return MappingProxyType(dict(env))  # read-only: the config is shared across threads

    @field_serializer("env")
    def _env_dict(self, env: Mapping[str, str]) -> dict[str, str]:
        return dict(env)

    @classmethod
    def from_dict(cls, data: Any, *, name: str | None = None) -> FunctionConfig:
        """Build a config from decoded JSON; `name` (e.g. from a URL path) overrides the body's."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", "must be a JSON object")
        values = dict(data)
        if name is not None:
            if "name" in values and values["name"] != name:
                raise ConfigError("name", f"{values['name']!r} does not match {name!r}")
            values["name"] = name
        return cls(**values)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The config's JSON schema (the OpenAPI schema of the deploy form's `config`), with
        the nested objects' definitions inlined: it is embedded in the OpenAPI document,
        where a `#/$defs/...` reference would point at the document's root."""
        schema = _ADAPTER.json_schema()
        defs = schema.pop("$defs", {})
        for prop in schema["properties"].values():
            if "default" in prop and prop["default"] is None:
                del prop["default"]  # absent means null; OpenAPI generators drop it anyway
        return _inline(schema, defs)  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, the inverse of `from_dict` (its JSON is part of the digest)."""
        return {
            "name": self.name,
            "env": dict(self.env),
            "timeout_ms": self.timeout_ms,
            "memory_limit_mb": self.memory_limit_mb,
            "max_body_bytes": self.max_body_bytes,
            "allowed_hosts": list(self.allowed_hosts),
            "cache_namespace": self.cache_namespace,
            "s3_buckets": list(self.s3_buckets),
            "dynamodb_tables": list(self.dynamodb_tables),
            "retry": self.retry.to_dict(),
            "max_concurrency": self.max_concurrency,
            "rate_limit": None if self.rate_limit is None else self.rate_limit.to_dict(),
            "spawn_functions": list(self.spawn_functions),
            "public": self.public,
            "publish_topics": list(self.publish_topics),
        }

    def digest_dict(self) -> dict[str, Any]:
        """`to_dict` without the later fields that hold their defaults: what a digest covers."""
        out = self.to_dict()
        for key, default in LATER_DEFAULTS.items():
            if out[key] == default:
                del out[key]
        return out


FIELDS = tuple(f.name for f in dataclasses.fields(FunctionConfig))
_ADAPTER = TypeAdapter(FunctionConfig)
_VALIDATING_INIT = FunctionConfig.__init__


def _init(self: FunctionConfig, *args: Any, **kwargs: Any) -> None:
    # pydantic's own __init__ validates; its errors become the ConfigError callers expect.
    try:
        _VALIDATING_INIT(self, *args, **kwargs)
    except ValidationError as exc:
        raise _config_error(exc) from None


FunctionConfig.__init__ = _init  # type: ignore[method-assign]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `{"$ref": "#/$defs/X"}` replaced by X's schema (no cycles here)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _config_error(exc: ValidationError) -> ConfigError:
    """The first error of `exc` as a ConfigError naming its field (an unknown field first:
    it is most likely a typo of the field whose other error would be reported)."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    loc = first["loc"]
    field = str(loc[0]) if loc else "config"
    if field in ("retry", "rate_limit") and len(loc) > 1 and isinstance(loc[1], str):
        field = f"{field}.{loc[1]}"  # a nested object's field: name it in full
        loc = (field, *loc[2:])
        first = {**first, "loc": loc}
    return ConfigError(field, _message(field, first))


def _message(field: str, error: ErrorDetails) -> str:
    """What was wrong with `field`, in the words of the checks (not pydantic's)."""
    kind, value, loc = error["type"], error.get("input"), error["loc"]
    if kind in _UNKNOWN:
        return f"unknown field (known: {', '.join(FIELDS)})"
    if kind in ("missing", "missing_argument"):
        return "is required"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if field == "env":
        if loc[-1] == "[key]":
            return f"{loc[1]!r} is not a valid variable name"
        if len(loc) > 1:
            return f"value of {loc[1]} must be a string without NUL bytes"
        return "must be an object of string to string"
    if kind in ("greater_than_equal", "less_than_equal") and field in _RANGES:
        low, high = _RANGES[field]
        return f"{value} is out of range {low}..{high}"
    if kind.startswith("int"):
        return f"must be an integer, got {type(value).__name__}"
    if field in _LISTS:
        if len(loc) == 1:
            if kind == "too_long":
                return f"has more than {MAX_LIST_ENTRIES} entries"
            return "must be a list of strings"
        if kind == "string_pattern_mismatch":
            return f"{value!r} {_NOT_MATCHING[field]}"
        return f"{value!r} is not a non-empty string"
    return f"{value!r} {_NOT_MATCHING.get(field, error['msg'])}"

