"""Function secrets: sealed with AES-256-GCM in Redis, opened only for the function's own calls.

Redis layout (every key starts with `<prefix>:`, the deployment's queue prefix):

- `secrets:<function>`: hash, one field per secret name; its value is the sealed record, JSON
  `{"v": 1, "kid": ..., "nonce": b64, "ct": b64, "updated_at": unix seconds}`;
- `secrets`: set of the functions holding at least one secret (what `rotate` walks).

Sealing: AES-256-GCM, a random 96-bit nonce per value, and associated data
`flotilla-secret/1 NUL <function> NUL <name>`, so a record copied to another function or
another name does not open. `kid` names the key that sealed it.

Keys (`FLOTILLA_SECRETS_KEY`): comma-separated `kid:base64(32 bytes)` entries. The first seals
every value written; each entry opens the values sealed under its id. Rotation: put a new key
first (keep the old ones), roll it out to every dispatcher and worker, run `rotate` (it reseals
every value under the first key), then drop the old keys.

`SecretStore` (async: the dispatcher's routes, the CLI) and the worker's sync reader
(`flotilla.hosts.secrets.RedisSecrets`) share one `SecretBox`: the crypto and the key layout.
Nothing here logs or formats a value; error messages name functions, secrets and key ids only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flotilla.config import NAME_RE
from flotilla.errors import (
    BodyTooLarge,
    FlotillaError,
    InvalidRequest,
    SettingsError,
    TooManySecrets,
)

if TYPE_CHECKING:
    from flotilla.settings import DispatcherSettings, WorkerSettings

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
KEY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
_KEY_ID = re.compile(KEY_ID_PATTERN)
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size
MAX_VALUE_BYTES = 64 * 1024  # of UTF-8
MAX_SECRETS = 100  # per function
RECORD_VERSION = 1
_AAD_TAG = b"flotilla-secret/1"

# KEYS[1] the function's hash, KEYS[2] the index; ARGV: name, record, function, most secrets.
# 1 when created, 0 when replaced, -1 when the function is full (nothing written).
PUT_LUA = """
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1])
if exists == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if exists == 1 then
  return 0
end
return 1
"""

# KEYS[1] the function's hash, KEYS[2] the index; ARGV: name, function. 1 when deleted.
DELETE_LUA = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
end
return removed
"""

# KEYS[1] the function's hash; ARGV: name, the record read, its replacement. 1 when replaced:
# a value written meanwhile (or deleted) is left alone.
REPLACE_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class SecretUnreadable(FlotillaError):
    """A stored secret does not open: its key is not configured, or the record was altered."""


def new_key(kid: str = "k1") -> str:
    """A fresh `kid:base64(32 random bytes)` entry for FLOTILLA_SECRETS_KEY."""
    if not _KEY_ID.fullmatch(kid):
        raise SettingsError(f"a key id is 1-32 of A-Z a-z 0-9 _ -, got {kid!r}")
    return f"{kid}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def _decode_key(encoded: str) -> bytes | None:
    text = encoded.strip()
    try:
        if "-" in text or "_" in text:
            key = base64.urlsafe_b64decode(text.encode("ascii"))
        else:
            key = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


@dataclass(frozen=True, eq=False)
class Keyring:
    """The keys of FLOTILLA_SECRETS_KEY: `current` seals, every key opens its own values."""

    current: str
    _ciphers: Mapping[str, AESGCM] = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Parse `kid:base64,kid:base64...`; SettingsError (never quoting key material)."""
        entries = [e.strip() for e in text.split(",") if e.strip()]
        if not entries:
            raise SettingsError("FLOTILLA_SECRETS_KEY holds no key (`flotilla secrets new-key`)")
        ciphers: dict[str, AESGCM] = {}
        for number, entry in enumerate(entries, 1):
            kid, sep, encoded = entry.partition(":")
            if not sep or not _KEY_ID.fullmatch(kid):
                raise SettingsError(
                    f"FLOTILLA_SECRETS_KEY entry {number} is not `kid:base64(32 bytes)` with a "
                    "kid of 1-32 of A-Z a-z 0-9 _ - (`flotilla secrets new-key` makes one)"
                )
            key = _decode_key(encoded)
            if key is None:
                raise SettingsError(
                    f"FLOTILLA_SECRETS_KEY entry {number} ({kid}): the key must be "
                    f"{KEY_BYTES} bytes in base64"
                )
            if kid in ciphers:
                raise SettingsError(f"FLOTILLA_SECRETS_KEY names key id {kid!r} twice")
            ciphers[kid] = AESGCM(key)
        return cls(entries[0].partition(":")[0], ciphers)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, the current one first."""
        return tuple(self._ciphers)

    def cipher(self, kid: str) -> AESGCM | None:
        """The cipher of key `kid`, or None when the keyring does not hold it."""
        return self._ciphers.get(kid)


def check_name(name: str) -> str | None:
    """Why `name` is not a valid secret name, or None when it is."""
    if _SECRET_NAME.fullmatch(name) is None:
        return (f"a secret name is 1-128 of A-Z a-z 0-9 _ . - starting with a letter or _, "
                f"got {name[:140]!r}")
    return None


def decode_value(raw: bytes) -> str:
    """A request body as a secret's value: BodyTooLarge or InvalidRequest when it cannot be."""
    if len(raw) > MAX_VALUE_BYTES:
        raise BodyTooLarge(f"secret values are limited to {MAX_VALUE_BYTES} bytes of UTF-8")
    if not raw:
        raise InvalidRequest("a secret's value must not be empty (delete the secret instead)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("a secret's value must be UTF-8 text") from None


def _check(function: str, name: str) -> None:
    if NAME_RE.fullmatch(function) is None:
        raise InvalidRequest(f"not a function name: {function[:80]!r}")
    problem = check_name(name)
    if problem is not None:
        raise InvalidRequest(problem)


@dataclass(frozen=True)
class Sealed:
    """One sealed value as Redis holds it (the wire format of a secret, in one place)."""

    kid: str
    nonce: bytes
    ciphertext: bytes  # with GCM's 16-byte tag at the end
    updated_at: float

    def encode(self) -> bytes:
        """The record stored in the function's hash."""
        return json.dumps(
            {"v": RECORD_VERSION, "kid": self.kid,
             "nonce": base64.b64encode(self.nonce).decode(),
             "ct": base64.b64encode(self.ciphertext).decode(),
             "updated_at": self.updated_at},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, record: bytes) -> Sealed:
        """Inverse of `encode`; SecretUnreadable for anything else."""
        try:
            data = json.loads(record)
            if data["v"] != RECORD_VERSION or not isinstance(data["kid"], str):
                raise ValueError("unknown record version")
            return cls(data["kid"], base64.b64decode(data["nonce"], validate=True),
                       base64.b64decode(data["ct"], validate=True), float(data["updated_at"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise SecretUnreadable(f"not a sealed secret record ({type(exc).__name__})") from None


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret: its name, when it was set, the key sealing it."""

    name: str
    updated_at: float
    key_id: str

    def to_dict(self) -> dict[str, Any]:
        """The API's representation (names and times only)."""
        return {"name": self.name, "updated_at": self.updated_at}


class SecretBox:
    """Sealing, opening and the Redis key layout, for the async store and the sync reader."""

    def __init__(self, keyring: Keyring, prefix: str = "flotilla") -> None:
        self.keyring = keyring
        self.prefix = prefix

    def hash_key(self, function: str) -> str:
        """The Redis hash holding `function`'s secrets."""
        return f"{self.prefix}:secrets:{function}"

    @property
    def index_key(self) -> str:
        """The Redis set of functions holding secrets."""
        return f"{self.prefix}:secrets"

    def seal(self, function: str, name: str, value: str, *, updated_at: float) -> Sealed:
        """`value` sealed under the current key, bound to (function, name)."""
        kid = self.keyring.current
        cipher = self.keyring.cipher(kid)
        assert cipher is not None
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = cipher.encrypt(nonce, value.encode("utf-8"), _aad(function, name))
        return Sealed(kid, nonce, ciphertext, updated_at)

    def open(self, function: str, name: str, record: bytes) -> str:
        """The value of a stored record; SecretUnreadable when it does not open."""
        sealed = Sealed.decode(record)
        cipher = self.keyring.cipher(sealed.kid)
        where = f"secret {name!r} of function {function!r}"
        if cipher is None:
            raise SecretUnreadable(
                f"{where} is sealed with key {sealed.kid!r}, which FLOTILLA_SECRETS_KEY does "
                "not hold"
            )
        try:
            plain = cipher.decrypt(sealed.nonce, sealed.ciphertext, _aad(function, name))
        except InvalidTag:
            raise SecretUnreadable(
                f"{where} does not open with key {sealed.kid!r}: the record was altered or "
                "moved, or the key under that id changed"
            ) from None
        return plain.decode("utf-8")

    def reseal(self, function: str, name: str, record: bytes) -> bytes | None:
        """The record sealed under the current key (same update time); None when it is."""
        sealed = Sealed.decode(record)
        if sealed.kid == self.keyring.current:
            return None
        value = self.open(function, name, record)
        return self.seal(function, name, value, updated_at=sealed.updated_at).encode()

    @staticmethod
    def info(name: str, record: bytes) -> SecretInfo:
        """What may be shown about a stored record."""
        sealed = Sealed.decode(record)
        return SecretInfo(name, sealed.updated_at, sealed.kid)


def _aad(function: str, name: str) -> bytes:
    # Neither part can hold NUL (both are validated), so the joined form is unambiguous.
    return b"\0".join((_AAD_TAG, function.encode(), name.encode()))


@dataclass
class RotationReport:
    """What `SecretStore.rotate` did."""

    resealed: int = 0  # values now sealed under the current key that were not before
    current: int = 0  # values already sealed under it (or written or deleted meanwhile)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (function, name, why)


class SecretStore:
    """Every function's secrets on an async Redis client (the dispatcher's routes, the CLI)."""

    def __init__(
        self, redis: Any, keyring: Keyring, *, prefix: str = "flotilla",
        max_secrets: int = MAX_SECRETS,
    ) -> None:
        self.redis = redis
        self.box = SecretBox(keyring, prefix)
        self.max_secrets = max_secrets
        self._put = redis.register_script(PUT_LUA)
        self._delete = redis.register_script(DELETE_LUA)
        self._replace = redis.register_script(REPLACE_LUA)

    @classmethod
    def from_settings(
        cls, settings: DispatcherSettings | WorkerSettings, redis: Any
    ) -> SecretStore | None:
        """The store of a process's settings; None when FLOTILLA_SECRETS_KEY is not set."""
        if not settings.secrets_key:
            return None
        return cls(redis, Keyring.parse(settings.secrets_key), prefix=settings.queue_prefix)

    async def put(self, function: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Set a secret; (its info, True when it was created rather than replaced)."""
        _check(function, name)
        decode_value(value.encode("utf-8"))  # the same limits as the HTTP body
        now = round(time.time(), 3)
        sealed = self.box.seal(function, name, value, updated_at=now)
        keys = [self.box.hash_key(function), self.box.index_key]
        result = int(await self._put(keys=keys,
                                     args=[name, sealed.encode(), function, self.max_secrets]))
        if result < 0:
            raise TooManySecrets(
                f"function {function!r} already has {self.max_secrets} secrets: delete one first"
            )
        return SecretInfo(name, now, sealed.kid), result == 1

    async def list(self, function: str) -> list[SecretInfo]:
        """The function's secrets (names, update times, key ids), sorted by name."""
        records = await self.redis.hgetall(self.box.hash_key(function))
        infos = [self.box.info(name.decode(), record) for name, record in records.items()]
        return sorted(infos, key=lambda info: info.name)

    async def delete(self, function: str, name: str) -> bool:
        """Forget a secret; False when there was none."""
        keys = [self.box.hash_key(function), self.box.index_key]
        return bool(await self._delete(keys=keys, args=[name, function]))

    async def get(self, function: str, name: str) -> str | None:
        """A secret's value (tests and tooling: no route answers with it)."""
        record = await self.redis.hget(self.box.hash_key(function), name)
        return None if record is None else self.box.open(function, name, record)

    async def rotate(self) -> RotationReport:
        """Reseal every value not sealed under the current key; values keep their update time."""
        report = RotationReport()
        for raw in sorted(await self.redis.smembers(self.box.index_key)):
            function = raw.decode()
            names = await self.redis.hkeys(self.box.hash_key(function))
            for name in sorted(n.decode() for n in names):
                try:
                    resealed = await self._rotate_one(function, name)
                except SecretUnreadable as exc:
                    report.failed.append((function, name, str(exc)))
                    continue
                if resealed:
                    report.resealed += 1
                else:
                    report.current += 1
        return report

    async def _rotate_one(self, function: str, name: str) -> bool:
        # A write between our read and our replace wins (it is newer); then read it again,
        # since a dispatcher not yet given the new key may have sealed it under an old one.
        key = self.box.hash_key(function)
        for _ in range(5):
            record = await self.redis.hget(key, name)
            if record is None:
                return False  # deleted meanwhile
            resealed = self.box.reseal(function, name, record)
            if resealed is None:
                return False
            if await self._replace(keys=[key], args=[name, record, resealed]):
                return True
        raise SecretUnreadable(f"secret {name!r} of function {function!r} kept changing")
