"""The `secrets` host interface: a function reads its own secrets, nobody else's.

The client is a `SecretReader` looking values up by (function, name); the function is always
the invocation's own (`ctx.config.name`), so another function's secrets are unreachable from a
guest. A worker built without a secret store answers `unavailable`.

`RedisSecrets` is the reader of a worker with FLOTILLA_SECRETS_KEY: one HGET per call on the
worker's shared sync Redis pool, then AES-GCM open (`flotilla.secrets.SecretBox`). Nothing is
cached, so a secret set or deleted through the API is what the next call sees. Redis down or a
value that does not open (its key is missing here) is `unavailable`; an invalid name is none.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import redis

from flotilla.hosts import interface as wit
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.observe import Meter, Observe
from flotilla.secrets import Keyring, SecretBox, SecretUnreadable, check_name

if TYPE_CHECKING:
    from flotilla.settings import DispatcherSettings, WorkerSettings

log = logging.getLogger(__name__)


class SecretReader(Protocol):
    """Reads a function's decrypted secret; HostError("unavailable", ...) when it cannot."""

    def get(self, ctx: InvocationContext, name: str) -> str | None:
        """The value of the invocation's function's secret `name`, or None."""


class RedisSecrets:
    """The worker's SecretReader: sealed values in Redis, opened with the process's keyring."""

    def __init__(
        self, client: redis.Redis, box: SecretBox, *, observe: Observe | None = None
    ) -> None:
        self._client = client
        self._box = box
        self._meter = Meter("secrets", observe)

    @classmethod
    def from_settings(
        cls, settings: WorkerSettings | DispatcherSettings, client: redis.Redis, *,
        observe: Observe | None = None,
    ) -> RedisSecrets | None:
        """The reader of a process's settings; None when FLOTILLA_SECRETS_KEY is not set."""
        if not settings.secrets_key:
            return None
        box = SecretBox(Keyring.parse(settings.secrets_key), settings.queue_prefix)
        return cls(client, box, observe=observe)

    def get(self, ctx: InvocationContext, name: str) -> str | None:
        """The invocation's own function's secret `name`, or None when it has none."""
        with self._meter.measure("get"):
            if check_name(name) is not None:
                return None  # no secret can have that name
            if ctx.remaining() <= 0:
                raise HostError("unavailable", "the invocation's deadline has passed")
            function = ctx.config.name
            try:
                record: Any = self._client.hget(self._box.hash_key(function), name)
            except redis.RedisError as exc:
                raise HostError("unavailable", f"the secret store is unavailable: {exc}") from None
            if record is None:
                return None
            try:
                return self._box.open(function, name, record)
            except SecretUnreadable as exc:
                log.warning("%s", exc)  # an operator's problem (keys out of step): say so
                raise HostError("unavailable", str(exc)) from None


def _get(host: SecretReader, ctx: InvocationContext, a: Any) -> wit.Writer:
    return wit.ok(wit.opt_string(host.get(ctx, wit.arg_string(a, 0))))


INTERFACE = wit.Interface(
    "secrets",
    (wit.HostFunc("get", _get),),
    errors={"unavailable": True},
    client="secrets",
)
