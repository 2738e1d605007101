"""API keys: who may call the dispatcher's HTTP API, and for what.

A key looks like `flk_<id>_<secret>`: `id` (12 hex digits) is public and names the key in
listings and revocations; the secret is 256 random bits. Redis keeps only the SHA-256 of
the whole key (a fast hash is enough for a high-entropy secret: nothing to brute-force), in
`<prefix>:apikey:<sha256>` (a hash of the key's record), with `<prefix>:apikeys` mapping
id -> sha256 for listing and revoking. The key itself is shown once, at creation.

Scopes: `deploy` (deploy, list, show, delete functions; manage schedules), `invoke` (invoke
and submit jobs, read and cancel their jobs; optionally limited to some function names),
`subscribe` (read topics as Server-Sent Events), `dead-letters` (list, replay and delete
dead letters) and `admin` (manage keys; implies `dead-letters`).
`Authenticator.authorize` turns a request's `Authorization: Bearer` header into an `ApiKey`
with one Redis round trip (a Lua script that reads the record and takes a token from the
key's bucket, `<prefix>:ratelimit:<sha256>`; nothing is cached, so a revocation holds at
once on every replica) or a problem: 401 (missing, malformed, unknown or revoked key), 429 (rate limit), 403 (valid
key, wrong scope or function). The function check never looks at the registry, so a 403
says nothing about whether the function exists.

A bootstrap admin key may come from settings (FLOTILLA_ADMIN_KEY): it holds every scope, has
no rate limit and cannot be revoked except by changing the setting.

Calls without a key (to public functions only: dispatcher/invoke.py decides) are limited per
client address instead (`admit_anonymous`): a bucket `<prefix>:ratelimit:addr:<address>`
per IPv4 address or IPv6 /64, `public_limit` (FLOTILLA_PUBLIC_RATE, FLOTILLA_PUBLIC_BURST).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flotilla.errors import Forbidden, RateLimited, Unauthorized
from flotilla.ratelimit import TAKE_TOKEN_LUA, Limit, RateLimiter, retry_after_s

DEPLOY = "deploy"
INVOKE = "invoke"
ADMIN = "admin"
SUBSCRIBE = "subscribe"
DEAD_LETTERS = "dead-letters"
SCOPES = (DEPLOY, INVOKE, ADMIN, SUBSCRIBE, DEAD_LETTERS)
# Scopes an admin key holds without naming them.
ADMIN_IMPLIES = (DEAD_LETTERS,)
KEY_PREFIX = "flk_"
KEY_RE = re.compile(r"^flk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
DEFAULT_LIMIT = Limit(rate=100.0, burst=200)
DEFAULT_PUBLIC_LIMIT = Limit(rate=10.0, burst=20)  # per client address, calls without a key
BOOTSTRAP_ID = "bootstrap"
NEEDS_KEY = "this endpoint needs an API key: send `Authorization: Bearer <key>`"

# KEYS[1] = the key's record, KEYS[2] = its rate-limit bucket. One round trip per request:
# nil for an unknown key, else {the record's fields, ms to wait (0: within its limit)}.
CHECK_KEY_LUA = TAKE_TOKEN_LUA + """
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then
  return false
end
local rate, burst = 0, 1
for i = 1, #record, 2 do
  if record[i] == 'rate' then rate = tonumber(record[i + 1]) or 0 end
  if record[i] == 'burst' then burst = tonumber(record[i + 1]) or 1 end
end
local wait = 0
if rate > 0 then
  wait = take_token(KEYS[2], rate, burst)
end
return {record, wait}
"""


def hash_key(key: str) -> str:
    """The SHA-256 (hex) under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (id, key): the id is the public part of the key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class ApiKey:
    """A key's record (never the key itself)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    functions: tuple[str, ...] = ()  # invoke only these functions; empty: any
    limit: Limit | None = DEFAULT_LIMIT  # None: unlimited
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        unknown = set(self.scopes) - set(SCOPES)
        if unknown or not self.scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}, got {self.scopes}")

    def may_invoke(self, function: str) -> bool:
        """True when the key's invoke scope covers `function`."""
        return INVOKE in self.scopes and (not self.functions or function in self.functions)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the key (what `keys list` shows)."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "functions": list(self.functions),
            "rate": self.limit.rate if self.limit else None,
            "burst": self.limit.burst if self.limit else None,
            "created_at": self.created_at,
        }

    def to_redis(self) -> dict[str, str]:
        """The Redis hash fields of the record."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": ",".join(self.scopes),
            "functions": ",".join(self.functions),
            "rate": str(self.limit.rate) if self.limit else "0",
            "burst": str(self.limit.burst) if self.limit else "0",
            "created_at": repr(self.created_at),
        }

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> ApiKey:
        """The record from its Redis hash fields."""
        d = {k.decode(): v.decode() for k, v in raw.items()}
        rate = float(d.get("rate") or 0)
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            scopes=tuple(s for s in d.get("scopes", "").split(",") if s),
            functions=tuple(f for f in d.get("functions", "").split(",") if f),
            limit=Limit(rate, int(d.get("burst") or 1)) if rate > 0 else None,
            created_at=float(d.get("created_at") or 0),
        )


BOOTSTRAP = ApiKey(BOOTSTRAP_ID, "bootstrap admin key (settings)", SCOPES, limit=None,
                   created_at=0.0)


class KeyStore:
    """API key records in Redis (see the module docstring for the layout)."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.index = f"{prefix}:apikeys"
        self._check = redis.register_script(CHECK_KEY_LUA)

    def _record(self, digest: str) -> str:
        return f"{self.prefix}:apikey:{digest}"

    async def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        functions: Iterable[str] = (),
        limit: Limit | None = DEFAULT_LIMIT,
    ) -> tuple[ApiKey, str]:
        """Record a new key: (its record, the key itself, which is not stored)."""
        key_id, key = new_key()
        record = ApiKey(key_id, name, tuple(dict.fromkeys(scopes)), tuple(functions), limit)
        digest = hash_key(key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._record(digest), mapping=record.to_redis())
            pipe.hset(self.index, key_id, digest)
            await pipe.execute()
        return record, key

    async def check(self, key: str) -> tuple[ApiKey | None, int]:
        """The record of a presented key and, when it has a limit, one token taken from its
        bucket: (None, 0) when unknown or revoked, else (record, ms to wait; 0: allowed)."""
        if not KEY_RE.match(key):
            return None, 0
        digest = hash_key(key)
        found = await self._check(
            keys=[self._record(digest), f"{self.prefix}:ratelimit:{digest}"], args=[]
        )
        if not found:
            return None, 0
        fields, wait = found
        raw = dict(zip(fields[::2], fields[1::2], strict=True))
        return ApiKey.from_redis(raw), int(wait)

    async def list(self) -> list[ApiKey]:
        """Every key's record, oldest first."""
        digests = await self.redis.hvals(self.index)
        records = []
        for digest in digests:
            raw = await self.redis.hgetall(self._record(digest.decode()))
            if raw:
                records.append(ApiKey.from_redis(raw))
        return sorted(records, key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> bool:
        """Forget a key by id (effective at once on every replica); False when unknown."""
        digest = await self.redis.hget(self.index, key_id)
        if digest is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._record(digest.decode()))
            pipe.hdel(self.index, key_id)
            await pipe.execute()
        return True

    async def count(self) -> int:
        """How many keys exist."""
        return int(await self.redis.hlen(self.index))


class Authenticator:
    """Checks the bearer key of a request against the store, the rate limit and a scope;
    limits calls without a key per client address."""

    def __init__(
        self, keys: KeyStore, *, admin_key: str = "",
        public_limit: Limit | None = DEFAULT_PUBLIC_LIMIT,
    ) -> None:
        self.keys = keys
        self._admin_digest = hash_key(admin_key) if admin_key else None
        self.public_limit = public_limit
        self._limiter = RateLimiter(keys.redis, prefix=keys.prefix)

    @classmethod
    def on_redis(
        cls, redis: Any, *, prefix: str, admin_key: str = "",
        public_limit: Limit | None = DEFAULT_PUBLIC_LIMIT,
    ) -> Authenticator:
        """Keys and their rate-limit buckets in `redis` under `prefix`."""
        return cls(KeyStore(redis, prefix=prefix), admin_key=admin_key, public_limit=public_limit)

    async def configured(self) -> bool:
        """True when some key could authenticate (a bootstrap key or a stored key)."""
        return self._admin_digest is not None or await self.keys.count() > 0

    async def authorize(
        self, authorization: str | None, scope: str, function: str | None = None
    ) -> ApiKey:
        """The key, if it is valid, within its rate limit and holds `scope` (for `function`).

        Unauthorized (401), RateLimited (429) or Forbidden (403), in that order: the limit
        applies before the scope, so forbidden requests cannot probe at an unlimited rate.
        """
        key = await self.authenticate(authorization)
        permit(key, scope, function)
        return key

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The valid key of an Authorization header, one token taken from its bucket:
        Unauthorized (401) or RateLimited (429) otherwise; no scope is checked."""
        if not authorization:
            raise Unauthorized(NEEDS_KEY)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("malformed Authorization header: expected `Bearer <key>`")
        if self._admin_digest is not None and hmac.compare_digest(
            hash_key(token), self._admin_digest
        ):
            key, wait_ms = BOOTSTRAP, 0
        else:
            found, wait_ms = await self.keys.check(token)
            if found is None:
                raise Unauthorized("invalid or revoked API key")
            key = found
        if wait_ms and key.limit is not None:
            raise RateLimited(
                f"key {key.id} is limited to {key.limit.rate:g} requests/s "
                f"(bursts of {key.limit.burst})",
                retry_after_s=retry_after_s(wait_ms),
            )
        return key

    async def admit_anonymous(self, address: str | None) -> None:
        """Take a token from the bucket of a caller without a key; RateLimited (429) when
        its address is out of them. Callers without a known address share one bucket."""
        limit = self.public_limit
        if limit is None:
            return
        bucket = client_bucket(address)
        wait_ms = await self._limiter.take(f"addr:{bucket}", limit)
        if wait_ms:
            raise RateLimited(
                f"calls without an API key are limited to {limit.rate:g} requests/s per "
                f"client address (bursts of {limit.burst})",
                retry_after_s=retry_after_s(wait_ms),
            )


def permit(key: ApiKey, scope: str, function: str | None = None) -> None:
    """Forbidden (403) unless `key` holds `scope` (for invoke: covering `function`)."""
    if scope not in key.scopes and not (scope in ADMIN_IMPLIES and ADMIN in key.scopes):
        raise Forbidden(f"key {key.id} does not have the `{scope}` scope")
    if scope == INVOKE and function is not None and not key.may_invoke(function):
        raise Forbidden(f"key {key.id} may not invoke function {function!r}")


def client_bucket(address: str | None) -> str:
    """The rate-limit bucket of a client address: the IPv4 address, the IPv6 /64 (one host
    commonly holds a whole /64), or the text itself when it is not an IP address."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
