"""Process settings: one frozen dataclass per process, loaded from an injectable mapping.

Every field maps to one environment variable (`FLOTILLA_<FIELD>`) and one CLI flag
(`--<field-with-dashes>`); the README's settings table lists them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Self

from flotilla.errors import SettingsError


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "flotilla")


def _setting(default: Any = MISSING, *, help: str, factory: Any = MISSING) -> Any:
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class _Base:
    """Shared loading logic; subclasses only declare fields."""

    amqp_url: str = _setting(
        "amqp://guest:guest@127.0.0.1:5672/", help="RabbitMQ URL (AMQP 0-9-1)"
    )
    redis_url: str = _setting("redis://127.0.0.1:6379/0", help="Redis URL (cache, registry, jobs)")
    aws_endpoint_url: str | None = _setting(
        None, help="S3/DynamoDB endpoint for local or compatible services (default: AWS)"
    )
    aws_region: str = _setting("us-east-1", help="AWS region for S3 and DynamoDB")
    artifact_bucket: str = _setting(
        "flotilla-artifacts", help="S3 bucket holding components and compiled artifacts"
    )
    artifact_key: str = _setting(
        "", help="HMAC-SHA256 key that authenticates compiled artifacts (required outside dev)"
    )
    queue_prefix: str = _setting(
        "flotilla", help="Prefix of every queue and exchange name (isolates deployments and tests)"
    )
    cache_dir: str = _setting(
        help="Local directory for compiled artifacts and built guests", factory=_default_cache_dir
    )
    log_level: str = _setting("INFO", help="Log level: DEBUG, INFO, WARNING, ERROR")
    queue_max_length: int = _setting(
        100_000,
        help="Most envelopes the invocation queue holds; publishes past it are refused (503). "
        "Workers and dispatchers of one prefix must agree: it is a queue argument",
    )
    log_format: str = _setting(
        "json", help="Log lines as json (one object per line) or text (human-readable)"
    )
    # repr=False: a settings object in a log line or traceback must not carry the key.
    secrets_key: str = field(default="", repr=False, metadata={"help": (
        "Keys sealing function secrets, `kid:base64(32 bytes)` comma-separated: the first "
        "seals, every one opens (`flotilla secrets new-key`; empty: secrets are off)"
    )})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read `FLOTILLA_*` variables from `environ` (default os.environ); overrides win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "FLOTILLA_" + f.name.upper()
            if name in env and env[name] != "":
                values[f.name] = _parse(f.name, f.type, env[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise SettingsError(str(exc)) from exc

    def with_(self, **changes: Any) -> Self:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _parse(name: str, type_name: Any, raw: str) -> Any:
    type_text = str(type_name)
    try:
        if type_text.startswith("int"):
            return int(raw)
        if type_text.startswith("float"):
            return float(raw)
        if type_text.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise SettingsError(f"FLOTILLA_{name.upper()}={raw!r} is not a valid {type_text}") from None
    return raw


@dataclass(frozen=True)
class WorkerSettings(_Base):
    """Settings of a worker process."""

    concurrency: int = _setting(
        0, help="Invocations run at once per process (0: number of CPU cores)"
    )
    prefetch: int = _setting(
        0, help="Unacked deliveries held per process (0: 16 x concurrency)"
    )
    poison_runs: int = _setting(
        3,
        help="Starts after which an envelope that keeps killing its worker is dead-lettered "
        "(counted in Redis for redelivered envelopes only)",
    )
    metrics_port: int = _setting(9102, help="Port of the worker's /metrics, /healthz, /readyz")
    drain_timeout_s: float = _setting(
        30.0, help="On SIGTERM, how long in-flight invocations may take to finish"
    )
    max_abandoned_threads: int = _setting(
        0,
        help="Threads left blocked in a host call past their timeout before the worker stops "
        "taking work (0: 2 x concurrency)",
    )

    def effective_concurrency(self) -> int:
        """Concurrency with 0 resolved to the CPU count."""
        return self.concurrency or max(1, os.cpu_count() or 1)

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


@dataclass(frozen=True)
class DispatcherSettings(_Base):
    """Settings of a dispatcher process."""

    listen: str = _setting("127.0.0.1:8080", help="host:port of the HTTP API")
    job_ttl_s: int = _setting(86_400, help="How long job results are kept in Redis")
    reply_margin_ms: int = _setting(
        2_000, help="How long past a function's timeout a synchronous caller is held"
    )
    insecure: bool = _setting(False, help="Serve without API keys (never in production)")
    admin_key: str = _setting(
        "", help="Bootstrap API key holding every scope (create real keys with it, then unset)"
    )
    callback_hosts: str = _setting(
        "", help="Comma-separated hosts that job callbacks may be POSTed to"
    )
