"""The `secrets` host interface: a function reads its own secrets, nobody else's.

The client is a `SecretReader` looking values up by (function, name); the function is always
the invocation's own, so another function's secrets are unreachable from a guest. A worker
built without a secret store answers `unavailable`.
"""

from __future__ import annotations

from typing import Any, Protocol

from flotilla.hosts import interface as wit
from flotilla.hosts.base import InvocationContext


class SecretReader(Protocol):
    """Reads a function's decrypted secret; HostError("unavailable", ...) when it cannot."""

    def get(self, ctx: InvocationContext, name: str) -> str | None:
        """The value of the invocation's function's secret `name`, or None."""


def _get(host: SecretReader, ctx: InvocationContext, a: Any) -> wit.Writer:
    return wit.ok(wit.opt_string(host.get(ctx, wit.arg_string(a, 0))))


INTERFACE = wit.Interface(
    "secrets",
    (wit.HostFunc("get", _get),),
    errors={"unavailable": True},
    client="secrets",
)
