"""Idempotency keys of job submissions: the same key for the same function within 24 h
returns the first submission's job instead of starting another.

Redis: `<prefix>:idem:<function>:<sha256 of the key>` holds JSON `{job_id, fingerprint}`
for IDEMPOTENCY_TTL_S; `fingerprint` is the SHA-256 of the request body. `claim` is one
SET NX: of two concurrent submissions exactly one claims the key, the other gets the
winner's job (status 200). A body that differs from the first one is a conflict (409). A
submission that fails after claiming (queue full, broker down) releases the key, so the
caller's retry with the same key is not answered with a job that never ran.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from flotilla.errors import InvalidRequest, Unavailable

IDEMPOTENCY_TTL_S = 86_400
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255

# KEYS[1] = the idempotency key; ARGV[1] = the value this submission stored.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def check_key(key: str) -> str:
    """The key as given, or InvalidRequest (422): 1-255 printable ASCII characters."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(32 < ord(c) < 127 for c in key):
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters "
            "without spaces (a UUID is a good choice)"
        )
    return key


def fingerprint(body: bytes) -> str:
    """What a repeated submission must match: the SHA-256 of its body."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Earlier:
    """The submission that claimed a key first."""

    job_id: str
    fingerprint: str


class IdempotencyKeys:
    """Claims and releases idempotency keys in Redis (see the module docstring)."""

    def __init__(self, redis: Any, *, prefix: str, ttl_s: int = IDEMPOTENCY_TTL_S) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._release = redis.register_script(RELEASE_LUA)

    def _k(self, function: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.prefix}:idem:{function}:{digest}"

    @staticmethod
    def _value(job_id: str, print_: str) -> str:
        return json.dumps({"job_id": job_id, "fingerprint": print_}, sort_keys=True)

    async def claim(self, function: str, key: str, print_: str, job_id: str) -> Earlier | None:
        """Claim `key` for `job_id`: None when this call claimed it, else the earlier one."""
        k = self._k(function, key)
        value = self._value(job_id, print_)
        # A claim released between our SET and GET (its submission failed) is claimed anew.
        for _ in range(3):
            if await self.redis.set(k, value, ex=self.ttl_s, nx=True):
                return None
            raw = await self.redis.get(k)
            if raw is not None:
                doc = json.loads(raw)
                return Earlier(doc["job_id"], doc["fingerprint"])
        raise Unavailable("the Idempotency-Key is being claimed and released concurrently")

    async def release(self, function: str, key: str, print_: str, job_id: str) -> None:
        """Forget the claim of `job_id` (its submission failed); others' claims stay."""
        await self._release(keys=[self._k(function, key)], args=[self._value(job_id, print_)])
