"""Process settings: one frozen pydantic-settings model per process, loaded from an
injectable mapping.

Every field maps to one environment variable (`FLOTILLA_<FIELD>`) and one CLI flag
(`--<field-with-dashes>`, `add_flags`); the README's settings table lists them all. Types
and ranges are the fields' own (pydantic parses "3" for an int, "true" for a bool); a bad
value is a `SettingsError` naming the variable: `FLOTILLA_CONCURRENCY: must be >= 0, got -1`.

Constructing a settings object reads nothing but its arguments: the environment comes in
through `from_env(environ)` only (os.environ when none is given), so tests and embedders
decide what a process sees.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from flotilla.cpus import available_cpus
from flotilla.errors import SettingsError

ENV_PREFIX = "FLOTILLA_"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field.upper()


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "flotilla")


def parse_amqp_urls(value: object) -> tuple[str, ...]:
    """Broker URLs from "url,url" (or a list of them): each amqp:// or amqps:// with a host,
    one scheme for all, no duplicate; ValueError saying which one is wrong."""
    if isinstance(value, str):
        parts: list[object] = list(value.split(","))
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ValueError(f"must be a URL or comma-separated URLs, got {value!r}")  # noqa: TRY004 - pydantic reports ValueError only
    urls = tuple(str(p).strip() for p in parts if str(p).strip())
    if not urls:
        raise ValueError("must name at least one amqp:// URL")
    for url in urls:
        try:
            parsed = urlsplit(url)
            parsed.port  # noqa: B018 - raises ValueError when the port is not a number
        except ValueError:
            raise ValueError(f"not a URL: {_mask(url)!r}") from None
        if parsed.scheme not in ("amqp", "amqps") or not parsed.hostname:
            raise ValueError(f"must be amqp://host... or amqps://host..., got {_mask(url)!r}")
    if len({urlsplit(u).scheme for u in urls}) > 1:
        raise ValueError("all URLs must use the same scheme (amqp or amqps)")
    if len(set(urls)) != len(urls):
        raise ValueError("names the same URL twice")
    return urls


def _mask(url: str) -> str:
    """`url` with anything between :// and @ (the credentials) hidden."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


def split_listen(listen: str) -> tuple[str, int]:
    """"host:port" (or "[v6]:port") as (host, port); SettingsError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"listen must be host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Base(BaseSettings):
    """Shared fields and loading; subclasses only declare fields."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid"
    )

    # NoDecode: the variable is "url,url", not JSON (pydantic-settings' default for lists).
    amqp_url: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(DEFAULT_AMQP_URL,),
        description="RabbitMQ URL, or several comma-separated (the nodes of one cluster): "
        "each process connects to one of them, in an order shuffled per process, and moves "
        "to the next when its node goes away",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis URL (cache, registry, jobs)"
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        description="S3/DynamoDB endpoint for local or compatible services (default: AWS)",
    )
    aws_region: str = Field(default="us-east-1", description="AWS region for S3 and DynamoDB")
    artifact_bucket: str = Field(
        default="flotilla-artifacts",
        description="S3 bucket holding components and compiled artifacts",
    )
    artifact_key: str = Field(
        default="",
        description="HMAC-SHA256 key that authenticates compiled artifacts (required outside dev)",
    )
    queue_prefix: str = Field(
        default="flotilla", min_length=1,
        description="Prefix of every queue and exchange name (isolates deployments and tests)",
    )
    cache_dir: str = Field(
        default_factory=_default_cache_dir,
        description="Local directory for compiled artifacts and built guests",
    )
    log_level: str = Field(default="INFO", description="Log level: " + ", ".join(LOG_LEVELS))
    quorum_size: int = Field(
        default=0, ge=0,
        description="Replicas of each quorum queue (x-quorum-initial-group-size; 0: the "
        "broker's default, every cluster node). A queue argument: all processes of one prefix "
        "must agree",
    )
    queue_max_length: int = Field(
        default=100_000, ge=1,
        description="Most envelopes each lane (the sync queue, each function's job queue) "
        "holds; publishes past it are refused (503). Workers and dispatchers of one prefix "
        "must agree: it is a queue argument",
    )
    sync_lane: Literal["quorum", "classic"] = Field(
        default="quorum",
        description="Queue type of the synchronous lane: quorum (replicated, persistent) or "
        "classic (one node, transient messages: lost by a broker restart, seen by the caller "
        "as a timeout). A queue argument: all processes of one prefix must agree",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Log lines as json (one object per line) or text (human-readable)",
    )
    # repr=False: a settings object in a log line or traceback must not carry the key.
    secrets_key: str = Field(
        default="", repr=False,
        description="Keys sealing function secrets, `kid:base64(32 bytes)` comma-separated: "
        "the first seals, every one opens (`flotilla secrets new-key`; empty: secrets are off)",
    )

    tracing: bool | None = Field(
        default=None,
        description="Export OpenTelemetry traces over OTLP/HTTP (unset: on when "
        "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; true without "
        "them: to http://localhost:4318). Needs `pip install 'flotilla[tracing]'`",
    )

    def __init__(self, **values: Any) -> None:
        """Validate `values` (and nothing else: see `from_env`); SettingsError names the
        variable of the first bad one."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments only: no hidden read of os.environ, .env or secret files."""
        return (init_settings,)

    @field_validator("amqp_url", mode="before")
    @classmethod
    def _amqp_urls(cls, value: object) -> tuple[str, ...]:
        return parse_amqp_urls(value)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        return level

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read `FLOTILLA_*` variables from `environ` (default os.environ); overrides that
        are not None win; empty variables count as unset."""
        values = _EnvironSource(cls, os.environ if environ is None else environ)()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return type(self)(**{**self.model_dump(), **changes})


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # before super(): its __init__ loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


# Invocation threads per worker process when a supervisor runs several (FLOTILLA_CONCURRENCY
# 0): one thread per process keeps a CPU-bound guest's core busy (two threads in one process
# buy nothing: page faults and memory resets contend in one address space), the second runs
# while the first is blocked in a host call (docs/performance.md, "A multi-process worker").
PER_PROCESS_CONCURRENCY = 2


class WorkerSettings(_Base):
    """Settings of a worker process."""

    worker_processes: int = Field(
        default=0, ge=0, le=256,
        description="Worker processes run by one supervisor (0: the CPUs this process may use: "
        "its affinity, capped by the cgroup CPU quota)",
        json_schema_extra={"flags": ["--processes"]},
    )
    concurrency: int = Field(
        default=0, ge=0,
        description="Invocations run at once per worker process (0: 2 when several processes "
        "run, else the CPUs this process may use)",
    )
    prefetch: int = Field(
        default=0, ge=0,
        description="Unacked sync-lane deliveries held per process (0: 16 x concurrency); "
        "each function's job lane holds 2 x concurrency",
    )
    poison_runs: int = Field(
        default=3, ge=1,
        description="Starts after which an envelope that keeps killing its worker is "
        "dead-lettered (counted in Redis for redelivered envelopes only)",
    )
    metrics_port: int = Field(
        default=9102, ge=0, le=65535,
        description="Port of the worker's /metrics, /healthz, /readyz (0: any free port)",
    )
    drain_timeout_s: float = Field(
        default=30.0, gt=0,
        description="On SIGTERM, how long in-flight invocations may take to finish",
    )
    max_abandoned_threads: int = Field(
        default=0, ge=0,
        description="Threads left blocked in a host call past their timeout before the worker "
        "stops taking work (0: 2 x concurrency)",
    )

    def effective_processes(self) -> int:
        """Worker processes with 0 resolved to the CPUs this process may use."""
        return self.worker_processes or available_cpus()

    def effective_concurrency(self) -> int:
        """Concurrency per process with 0 resolved: PER_PROCESS_CONCURRENCY when several
        processes run, else the CPUs this process may use."""
        if self.concurrency:
            return self.concurrency
        return PER_PROCESS_CONCURRENCY if self.effective_processes() > 1 else available_cpus()

    def effective_max_abandoned(self) -> int:
        """The cap on abandoned threads with 0 resolved to twice the concurrency."""
        return self.max_abandoned_threads or 2 * self.effective_concurrency()

    def effective_prefetch(self) -> int:
        """Prefetch with 0 resolved to 16 times the concurrency."""
        # Deep: with 2 x concurrency the worker waits on acks more than it works (bench e2e:
        # client/bare 0.66 at 4 vs 1.01 at 16 and 1.07 at 128). RabbitMQ counts a delivery
        # against every unacked envelope of a worker that died, so its delivery limit would
        # dead-letter prefetched innocents when workers die repeatedly; poison envelopes are
        # caught by counting runs instead (worker.handler.RunLedger), and the queue's
        # delivery limit is only a high backstop (flotilla.topology).
        return self.prefetch or 16 * self.effective_concurrency()


class DispatcherSettings(_Base):
    """Settings of a dispatcher process."""

    listen: str = Field(default="127.0.0.1:8080", description="host:port of the HTTP API")
    job_ttl_s: int = Field(
        default=86_400, ge=1, description="How long job results are kept in Redis"
    )
    reply_margin_ms: int = Field(
        default=2_000, ge=0,
        description="How long past a function's timeout a synchronous caller is held",
    )
    insecure: bool = Field(
        default=False, description="Serve without API keys (never in production)"
    )
    admin_key: str = Field(
        default="",
        description="Bootstrap API key holding every scope (create real keys with it, then unset)",
    )
    callback_hosts: str = Field(
        default="", description="Comma-separated hosts that job callbacks may be POSTed to"
    )
    public_rate: float = Field(
        default=10.0, ge=0,
        description="Calls without an API key (public functions) per second per client "
        "address, shared by all replicas (0: no limit)",
    )
    public_burst: int = Field(
        default=20, ge=1, description="Calls without an API key one client address may burst"
    )

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        try:
            split_listen(listen)
        except SettingsError as exc:
            raise ValueError(f"must be host:port with a port of 1-65535, got {listen!r}") from exc
        return listen


S = TypeVar("S", bound=_Base)


def add_flags(parser: argparse.ArgumentParser, cls: type[_Base]) -> None:
    """One `--field-name` flag per settings field, parsed to the field's type, default None
    (unset: the environment variable, then the field's default apply)."""
    for name, field in cls.model_fields.items():
        # A field may add shorter spellings (`"flags"` in its json_schema_extra), shown first.
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flags = [*extra.get("flags", ()), "--" + name.replace("_", "-")]  # type: ignore[misc]
        help_text = f"{field.description} (env {env_name(name)})"
        kind = _scalar(field.annotation)
        if get_origin(field.annotation) in (tuple, list):
            kind = str  # "a,b" as the variable takes it; the field's validator splits it
        if kind is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        elif get_origin(kind) is Literal:
            parser.add_argument(*flags, dest=name, choices=get_args(kind), default=None,
                                help=help_text)
        else:
            parser.add_argument(*flags, dest=name, type=kind, default=None, help=help_text)


def from_args(cls: type[S], args: argparse.Namespace) -> S:
    """The settings object: environment first, flags given on the command line win."""
    return cls.from_env(**{name: getattr(args, name, None) for name in cls.model_fields})


def _scalar(annotation: Any) -> Any:
    """`int` of `int | None`; other annotations as they are."""
    members = [a for a in get_args(annotation) if a is not type(None)]
    return members[0] if get_origin(annotation) is not Literal and members else annotation


def _describe(exc: ValidationError) -> str:
    """The first error, as "VARIABLE: what is wrong, got what"."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    return f"{env_name(field)}: {_problem(error)}"


def _problem(error: ErrorDetails) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        bound = ctx[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "> 0", not "> 0.0", for a float field
        return f"must be {op} {bound}, got {value}"
    if kind.startswith("int_"):
        return f"must be an integer, got {value!r}"
    if kind.startswith("float_"):
        return f"must be a number, got {value!r}"
    if kind.startswith("bool_"):
        return f"must be true or false, got {value!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {value!r}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        return "is not a setting"
    return f"{error['msg']}, got {value!r}"
