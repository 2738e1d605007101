"""The wire format between dispatchers and workers: `Envelope` in, `Reply` out.

Both are frozen dataclasses encoded as msgpack maps (`use_bin_type=True`, so bodies stay
bytes and text stays str). Decoding checks every field; anything malformed (random bytes,
truncated msgpack, an unknown format version, a missing or wrongly typed field) raises
one `EnvelopeError`, so a consumer has a single thing to catch before rejecting a delivery
to the dead-letter queue.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgpack

from flotilla.errors import FlotillaError
from flotilla.outcomes import Outcome

FORMAT_VERSION = 1

Headers = tuple[tuple[str, str], ...]

# Reply modes: who waits for the result.
REPLY_QUEUE = "reply"  # a synchronous caller's own reply queue (`reply_to`)
REPLY_JOB = "job"  # the durable job-results queue the dispatchers consume
REPLY_MODES = (REPLY_QUEUE, REPLY_JOB)

# AMQP `type` of a `Started` notice on the job-results queue (replies carry no type).
STARTED_TYPE = "flotilla.started"
# AMQP `type` of a `Retrying` notice: a job's attempt failed and another one is scheduled.
RETRYING_TYPE = "flotilla.retrying"

# How an invocation was started (the guest's `invocation.kind`).
KIND_SYNC = "sync"
KIND_JOB = "job"
KIND_SPAWNED = "spawned"
KIND_SCHEDULED = "scheduled"
KINDS = (KIND_SYNC, KIND_JOB, KIND_SPAWNED, KIND_SCHEDULED)
DEFAULT_METHOD = "POST"
DEFAULT_PATH = "/"

class EnvelopeError(FlotillaError, ValueError):
    """Bytes that are not a valid envelope or reply of this format version."""


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (deadlines are absolute, across machines)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Envelope:
    """One invocation request, as queued for a worker."""

    invocation_id: str
    correlation_id: str
    function: str
    digest: str  # the exact version digest the dispatcher resolved
    headers: Headers
    body: bytes
    deadline_ms: int  # absolute, epoch milliseconds
    attempt: int = 1
    reply_mode: str = REPLY_QUEUE
    reply_to: str = ""  # the reply queue when reply_mode == "reply"
    published_ms: int = 0  # when a transport published it (epoch ms; queue-wait metric)
    version: int = FORMAT_VERSION
    # What the caller asked for and how the invocation was started (the guest's
    # `invocation` interface). Optional on the wire: encoded only when not the default, so
    # envelopes without them (older publishers) decode to these defaults.
    method: str = DEFAULT_METHOD
    path: str = DEFAULT_PATH
    query: Headers = ()  # decoded query parameters in order, repeats kept
    caller: str | None = None  # the API key id; None for public and dev-mode calls
    kind: str = ""  # one of KINDS; "" means sync for reply mode "reply", job for "job"
    parent_id: str = ""  # the invocation that spawned this job
    traceparent: str = ""  # W3C trace context of the caller's span

    def __post_init__(self) -> None:
        # reply_to may stay empty until a transport's `call` fills in its own reply queue.
        if self.reply_mode not in REPLY_MODES:
            raise EnvelopeError(f"reply_mode must be one of {REPLY_MODES}, got {self.reply_mode!r}")
        if self.kind and self.kind not in KINDS:
            raise EnvelopeError(f"kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def start_kind(self) -> str:
        """How the invocation was started: `kind`, or what the reply mode implies."""
        return self.kind or (KIND_SYNC if self.reply_mode == REPLY_QUEUE else KIND_JOB)

    @classmethod
    def for_call(
        cls, invocation_id: str, function: str, digest: str, headers: Headers, body: bytes, *,
        timeout_ms: int, reply_to: str = "", **call: Any,
    ) -> Envelope:
        """A synchronous invocation: its id is its correlation id, its deadline `timeout_ms`
        from now; `reply_to` is the caller's reply queue (a transport's call() fills it in
        when empty)."""
        return cls(
            invocation_id=invocation_id,
            correlation_id=invocation_id,
            function=function,
            digest=digest,
            headers=headers,
            body=body,
            deadline_ms=now_ms() + timeout_ms,
            reply_to=reply_to,
            **call,
        )

    @classmethod
    def for_job(
        cls, job_id: str, function: str, digest: str, headers: Headers, body: bytes, *,
        ttl_s: int, **call: Any,
    ) -> Envelope:
        """A job: its reply goes to the job-results queue, and it may wait in the queue as
        long as its result would be kept (`ttl_s`). `call` sets the optional fields (method,
        path, query, caller, kind, parent_id, traceparent, attempt)."""
        return cls(
            invocation_id=job_id,
            correlation_id=job_id,
            function=function,
            digest=digest,
            headers=headers,
            body=body,
            deadline_ms=now_ms() + ttl_s * 1000,
            reply_mode=REPLY_JOB,
            **call,
        )

    def encode(self, published_ms: int | None = None) -> bytes:
        """msgpack bytes of this envelope; transports stamp `published_ms` as they publish."""
        m = {
            "v": self.version,
            "id": self.invocation_id,
            "cid": self.correlation_id,
            "fn": self.function,
            "dg": self.digest,
            "h": self.headers,  # tuples pack as msgpack arrays, as lists do
            "b": self.body,
            "dl": self.deadline_ms,
            "at": self.attempt,
            "rm": self.reply_mode,
            "rt": self.reply_to,
            "pt": self.published_ms if published_ms is None else published_ms,
        }
        # The optional fields, only when set: a plain call's bytes stay as they were.
        if self.method != DEFAULT_METHOD:
            m["md"] = self.method
        if self.path != DEFAULT_PATH:
            m["pa"] = self.path
        if self.query:
            m["q"] = self.query
        if self.caller is not None:
            m["ca"] = self.caller
        if self.kind:
            m["k"] = self.kind
        if self.parent_id:
            m["pi"] = self.parent_id
        if self.traceparent:
            m["tp"] = self.traceparent
        return _pack(m)

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse msgpack bytes; raises `EnvelopeError` on anything malformed."""
        m = _unpack(data, "envelope")
        fast = _fast_envelope(cls, m)
        return fast if fast is not None else cls._decode_checked(m)

    @classmethod
    def _decode_checked(cls, m: dict[str, Any]) -> Envelope:
        # Field by field, so the error names the first bad field.
        if m.get("rm") == REPLY_QUEUE and not m.get("rt"):
            raise EnvelopeError("field 'rt' (reply_to) is required when reply mode is 'reply'")
        return cls(
            invocation_id=_get(m, "id", str),
            correlation_id=_get(m, "cid", str),
            function=_get(m, "fn", str),
            digest=_get(m, "dg", str),
            headers=_headers(m, "h"),
            body=_get(m, "b", bytes),
            deadline_ms=_get(m, "dl", int),
            attempt=_get(m, "at", int),
            reply_mode=_get(m, "rm", str),
            reply_to=_get(m, "rt", str),
            published_ms=_get(m, "pt", int),
            version=m["v"],
            **_optional_fields(m),
        )

    def remaining_ms(self, now: int) -> int:
        """Milliseconds left before the deadline at wall-clock `now` (negative when past)."""
        return self.deadline_ms - now


@dataclass(frozen=True)
class Reply:
    """The outcome of one invocation, sent to the caller's reply queue or the job results."""

    invocation_id: str
    correlation_id: str
    outcome: Outcome  # a plain string given here is converted (EnvelopeError if unknown)
    status: int = 0  # the function's status when outcome == "ok", else 0
    headers: Headers = ()
    body: bytes = b""
    error: str = ""
    logs: tuple[tuple[str, str, int], ...] = ()  # (level, message, time_ms)
    timings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        outcome = _OUTCOMES.get(self.outcome) if isinstance(self.outcome, str) else None
        if outcome is None:
            raise EnvelopeError(
                f"outcome must be one of {', '.join(_OUTCOMES)}, got {self.outcome!r}"
            )
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "timings", MappingProxyType(dict(self.timings)))

    @property
    def ok(self) -> bool:
        """True when the function returned a response."""
        return self.outcome is Outcome.OK

    def encode(self) -> bytes:
        """msgpack bytes of this reply."""
        return _pack(
            {
                "v": self.version,
                "id": self.invocation_id,
                "cid": self.correlation_id,
                "o": self.outcome,
                "s": self.status,
                "h": self.headers,  # tuples pack as msgpack arrays, as lists do
                "b": self.body,
                "e": self.error,
                "l": self.logs,
                "t": dict(self.timings),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        """Parse msgpack bytes; raises `EnvelopeError` on anything malformed."""
        m = _unpack(data, "reply")
        fast = _fast_reply(cls, m)
        return fast if fast is not None else cls._decode_checked(m)

    @classmethod
    def _decode_checked(cls, m: dict[str, Any]) -> Reply:
        # Field by field, so the error names the first bad field.
        logs = _get(m, "l", list)
        for r in logs:
            if not (
                isinstance(r, list)
                and len(r) == 3
                and isinstance(r[0], str)
                and isinstance(r[1], str)
                and _is_int(r[2])
            ):
                raise EnvelopeError("reply field 'l' must hold [level, message, time_ms] lists")
        timings = _get(m, "t", dict)
        for k, v in timings.items():
            if not isinstance(k, str) or not (isinstance(v, float) or _is_int(v)):
                raise EnvelopeError("reply field 't' must map names to numbers")
        return cls(
            invocation_id=_get(m, "id", str),
            correlation_id=_get(m, "cid", str),
            outcome=_get(m, "o", str),
            status=_get(m, "s", int),
            headers=_headers(m, "h"),
            body=_get(m, "b", bytes),
            error=_get(m, "e", str),
            logs=tuple((r[0], r[1], r[2]) for r in logs),
            timings={k: float(v) for k, v in timings.items()},
            version=m["v"],
        )


@dataclass(frozen=True)
class Started:
    """A worker's notice that it began running a job: the job is `running` until its reply.

    Published to the job-results queue (AMQP type `STARTED_TYPE`) before the job runs, on
    the channel its reply will use, so it normally arrives first; a late one is harmless
    (a stored result wins over the running mark).
    """

    invocation_id: str
    attempt: int = 1
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        """msgpack bytes of this notice."""
        return _pack({"v": self.version, "id": self.invocation_id, "at": self.attempt})

    @classmethod
    def decode(cls, data: bytes) -> Started:
        """Parse msgpack bytes; raises `EnvelopeError` on anything malformed."""
        m = _unpack(data, "started notice")
        return cls(_get(m, "id", str), _get(m, "at", int), m["v"])


@dataclass(frozen=True)
class Retrying:
    """A worker's notice that a job's attempt failed and attempt + 1 is due at
    `next_attempt_at_ms`: the job reads `retrying` until that attempt starts.

    Published to the job-results queue (AMQP type `RETRYING_TYPE`) after the retry was
    queued; a late one (the next attempt already started) is ignored by the job store.
    """

    invocation_id: str
    attempt: int  # the attempt that failed
    next_attempt_at_ms: int  # epoch milliseconds
    error: str = ""
    outcome: str = ""  # the failed attempt's outcome (timeout, trap...)
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        """msgpack bytes of this notice."""
        return _pack({
            "v": self.version, "id": self.invocation_id, "at": self.attempt,
            "na": self.next_attempt_at_ms, "e": self.error, "o": self.outcome,
        })

    @classmethod
    def decode(cls, data: bytes) -> Retrying:
        """Parse msgpack bytes; raises `EnvelopeError` on anything malformed."""
        m = _unpack(data, "retrying notice")
        return cls(
            _get(m, "id", str), _get(m, "at", int), _get(m, "na", int),
            _get(m, "e", str) if "e" in m else "", _get(m, "o", str) if "o" in m else "",
            m["v"],
        )


def reply_to(envelope: Envelope, outcome: Outcome, error: str = "", **fields: Any) -> Reply:
    """A reply to `envelope` (same ids) with the given outcome and fields."""
    return Reply(
        invocation_id=envelope.invocation_id,
        correlation_id=envelope.correlation_id,
        outcome=outcome,
        error=error,
        **fields,
    )


def _pack(value: dict[str, Any]) -> bytes:
    # packb builds a packer per call: a shared Packer would not be safe across worker threads.
    return bytes(msgpack.packb(value, use_bin_type=True))


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise EnvelopeError(f"{what} is not valid msgpack: {exc}") from exc
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} must be a msgpack map, got {type(value).__name__}")
    version = value.get("v")
    if version != FORMAT_VERSION:
        raise EnvelopeError(
            f"{what} format version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    return value


# Wire string -> member: a StrEnum member hashes and compares as its string, so a decoded
# str finds its member (and a member itself) with one dict lookup.
_OUTCOMES: dict[str, Outcome] = {o.value: o for o in Outcome}
_REPLY_MODE_SET = frozenset(REPLY_MODES)


def _string_pairs(raw: list[Any]) -> Headers | None:
    """`raw` as a tuple of (str, str) pairs, or None when any item is not a pair of str."""
    out = []
    for h in raw:
        if type(h) is not list or len(h) != 2 or type(h[0]) is not str or type(h[1]) is not str:
            return None
        out.append((h[0], h[1]))
    return tuple(out)


def _fast_envelope(cls: type[Envelope], m: dict[str, Any]) -> Envelope | None:
    """The envelope of a well-formed map without per-field checks and dataclass __init__
    (the common case, several times faster); None when anything is off, for
    `_decode_checked` to name it. The checks are the same, by exact type (msgpack makes
    exactly str, bytes, int, list and dict; `type(x) is int` also rules out bool)."""
    try:
        iid, cid, fn, dg, h, b = m["id"], m["cid"], m["fn"], m["dg"], m["h"], m["b"]
        dl, at, rm, rt, pt = m["dl"], m["at"], m["rm"], m["rt"], m["pt"]
    except KeyError:
        return None
    if not (
        type(iid) is str and type(cid) is str and type(fn) is str and type(dg) is str
        and type(b) is bytes and type(dl) is int and type(at) is int and type(rm) is str
        and type(rt) is str and type(pt) is int and type(h) is list
        and rm in _REPLY_MODE_SET and (rt or rm != REPLY_QUEUE)
    ):
        return None
    headers = _string_pairs(h)
    if headers is None:
        return None
    optional = _OPTIONAL_DEFAULTS
    if len(m) > _REQUIRED_KEYS:
        try:
            optional = {**_OPTIONAL_DEFAULTS, **_optional_fields(m)}
        except EnvelopeError:
            return None
    envelope = object.__new__(cls)
    envelope.__dict__.update(
        invocation_id=iid, correlation_id=cid, function=fn, digest=dg, headers=headers,
        body=b, deadline_ms=dl, attempt=at, reply_mode=rm, reply_to=rt, published_ms=pt,
        version=m["v"], **optional,
    )
    return envelope


_REQUIRED_KEYS = 12  # v, id, cid, fn, dg, h, b, dl, at, rm, rt, pt: more means optional ones
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "method": DEFAULT_METHOD, "path": DEFAULT_PATH, "query": (), "caller": None, "kind": "",
    "parent_id": "", "traceparent": "",
}
# wire key -> (field, type); `q` (pairs) and `k` (one of KINDS) are checked apart.
_OPTIONAL_STRINGS = {
    "md": "method", "pa": "path", "ca": "caller", "pi": "parent_id", "tp": "traceparent",
}


def _optional_fields(m: Mapping[str, Any]) -> dict[str, Any]:
    """The optional envelope fields present in `m`, checked (EnvelopeError names a bad one)."""
    out: dict[str, Any] = {}
    for key, name in _OPTIONAL_STRINGS.items():
        if key in m:
            out[name] = _get(m, key, str)
    if "q" in m:
        out["query"] = _headers(m, "q")
    if "k" in m:
        kind = _get(m, "k", str)
        if kind not in KINDS:
            raise EnvelopeError(f"field 'k' must be one of {KINDS}, got {kind!r}")
        out["kind"] = kind
    return out


def _fast_reply(cls: type[Reply], m: dict[str, Any]) -> Reply | None:
    """As `_fast_envelope`, for a reply."""
    try:
        iid, cid, o, st, h, b, e, lg, t = (
            m["id"], m["cid"], m["o"], m["s"], m["h"], m["b"], m["e"], m["l"], m["t"]
        )
    except KeyError:
        return None
    if not (
        type(iid) is str and type(cid) is str and type(o) is str and type(st) is int
        and type(b) is bytes and type(e) is str and type(h) is list and type(lg) is list
        and type(t) is dict
    ):
        return None
    outcome = _OUTCOMES.get(o)
    if outcome is None:
        return None
    headers = _string_pairs(h)
    if headers is None:
        return None
    logs = []
    for r in lg:
        if not (
            type(r) is list and len(r) == 3 and type(r[0]) is str and type(r[1]) is str
            and type(r[2]) is int
        ):
            return None
        logs.append((r[0], r[1], r[2]))
    timings = {}
    for k, v in t.items():
        if type(k) is not str or (type(v) is not float and type(v) is not int):
            return None
        timings[k] = float(v)
    reply = object.__new__(cls)
    reply.__dict__.update(
        invocation_id=iid, correlation_id=cid, outcome=outcome, status=st, headers=headers, body=b,
        error=e, logs=tuple(logs), timings=MappingProxyType(timings), version=m["v"],
    )
    return reply


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _get(m: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in m:
        raise EnvelopeError(f"field {key!r} is missing")
    v = m[key]
    if kind is int:
        ok = _is_int(v)
    else:
        ok = isinstance(v, kind)
    if not ok:
        raise EnvelopeError(f"field {key!r} must be {kind.__name__}, got {type(v).__name__}")
    return v


def _headers(m: Mapping[str, Any], key: str) -> Headers:
    raw = _get(m, key, list)
    out = []
    for h in raw:
        if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)):
            raise EnvelopeError(f"field {key!r} must hold [name, value] string pairs")
        out.append((h[0], h[1]))
    return tuple(out)
