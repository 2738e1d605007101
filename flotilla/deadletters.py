"""Dead letters you can act on: what the broker dead-lettered, kept in Redis to list and replay.

Every queue of a prefix dead-letters into `<prefix>.dlx` -> `<prefix>.dead`
(flotilla/topology.py). The broker says why in `x-death` (`rejected`: a worker refused it as
malformed or as poison; `expired`: a synchronous call nobody waited for any more;
`delivery_limit`); a job that used up its retries is published there by the worker with
`x-flotilla-reason: exhausted`, `x-flotilla-error` and `x-flotilla-attempts`.

The dispatchers consume `<prefix>.dead` (`DeadLetterConsumer`): each message is described
(`describe`, a pure function), stored (`DeadLetterStore.add`), counted by reason, then
acked; when Redis cannot take it, it is requeued after a pause. Reasons (a bounded set, the
metric's label): `exhausted`, `expired`, `poison` (a worker rejected a well-formed envelope:
it kept killing workers), `malformed` (not an envelope: stored as bytes, not replayable),
`delivery_limit`, `maxlen`, `job_result` (a job result no dispatcher could record: not
replayable), `other`.

Redis (under `<prefix>:dl:`):

- `<id>`: hash with `meta` (the description as JSON) and `envelope` (the message bytes);
- `<id>:replays`: hash job id -> time of each replay;
- `index`: sorted set of `<id>/<function>/<bytes>`, all scored 0 so members sort by id (ids
  begin with their time: newest last), paged with ZREVRANGEBYLEX; `fn:<function>`: the ids
  per function; `bytes`: the size of every letter in `index`;
- `seen:<sha256 of the bytes>`: so a message redelivered after a dispatcher died between
  storing and acking is not stored twice.

Bounded: at most `max_count` letters, `max_bytes` of them (envelopes reach 8 MiB) and none
older than `max_age_s`; the oldest go first. A letter leaves the index through one script
(`REMOVE_LUA`), so replicas pruning at once count its bytes out once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flotilla.envelope import Envelope, EnvelopeError, Reply
from flotilla.jobs import new_id
from flotilla.topology import Topology

log = logging.getLogger(__name__)

EXHAUSTED = "exhausted"
EXPIRED = "expired"
POISON = "poison"
MALFORMED = "malformed"
DELIVERY_LIMIT = "delivery_limit"
MAXLEN = "maxlen"
JOB_RESULT = "job_result"
OTHER = "other"
REASONS = (EXHAUSTED, EXPIRED, POISON, MALFORMED, DELIVERY_LIMIT, MAXLEN, JOB_RESULT, OTHER)
DEFAULT_MAX_COUNT = 10_000
DEFAULT_MAX_AGE_S = 7 * 86_400
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_PAGE = 500

_ERRORS = {
    EXPIRED: "expired in the queue before a worker took it (a synchronous call nobody "
             "waited for any more)",
    POISON: "rejected by a worker: it started several times and each time its worker died",
    DELIVERY_LIMIT: "delivered more often than the queue's delivery limit",
    MAXLEN: "dropped from a full queue",
}

# KEYS: seen, letter, index, function index, bytes. ARGV: ttl_s, meta, envelope, index
# member, id, "1" to add to the function index, size. 1 when stored, 0 for a duplicate.
ADD_LUA = """
if not redis.call('SET', KEYS[1], ARGV[5], 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'meta', ARGV[2], 'envelope', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[4])
redis.call('INCRBY', KEYS[5], ARGV[7])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[4], 0, ARGV[5]) end
return 1
"""

# KEYS: index, bytes, letter, replays, function index. ARGV: index member, size, id.
REMOVE_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DECRBY', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class DeadLetter:
    """What is known about one dead letter (its bytes are stored beside it)."""

    id: str
    reason: str  # one of REASONS
    function: str | None  # None when the bytes are not an envelope
    invocation_id: str | None  # the envelope's (job's) id
    kind: str | None
    attempts: int
    last_error: str
    dead_at: float  # epoch seconds, when a dispatcher stored it
    queue: str  # the queue it was dead-lettered from
    replayable: bool
    size: int
    replayed_job_ids: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the dead letter."""
        out = asdict(self)
        out["replayed_job_ids"] = list(self.replayed_job_ids)
        return out

    @classmethod
    def from_json(cls, raw: bytes | str, replays: tuple[str, ...] = ()) -> DeadLetter:
        """The description as stored, with the ids of its replays."""
        doc = json.loads(raw)
        doc["replayed_job_ids"] = replays
        return cls(**doc)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _last_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The most recent entry of `x-death` (the broker puts it first), or {}."""
    deaths = headers.get("x-death")
    if isinstance(deaths, (list, tuple)) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def describe(
    letter_id: str, body: bytes, headers: Mapping[str, Any], *, job_results: str,
    now: float | None = None,
) -> DeadLetter:
    """The description of a dead-lettered message from its bytes and AMQP headers."""
    death = _last_death(headers)
    broker = _text(death.get("reason")) or _text(headers.get("x-first-death-reason"))
    queue = _text(death.get("queue")) or _text(headers.get("x-first-death-queue"))
    ours = _text(headers.get("x-flotilla-reason"))
    envelope, problem = None, ""
    try:
        envelope = Envelope.decode(body)
    except EnvelopeError as exc:
        problem = str(exc)
    if queue == job_results:
        reason, problem = JOB_RESULT, "a job result that no dispatcher could record"
        try:
            envelope_id: str | None = Reply.decode(body).invocation_id
        except EnvelopeError:
            envelope_id = None
    elif envelope is None:
        reason, envelope_id = MALFORMED, None
    else:
        envelope_id = envelope.invocation_id
        if ours:
            reason = ours if ours in REASONS else OTHER
        elif broker == "rejected":
            reason = POISON
        else:
            reason = broker if broker in (EXPIRED, DELIVERY_LIMIT, MAXLEN) else OTHER
    try:
        attempts = int(headers.get("x-flotilla-attempts") or 0)
    except (TypeError, ValueError):
        attempts = 0
    if not attempts and envelope is not None:
        attempts = envelope.attempt
    error = _text(headers.get("x-flotilla-error")) or problem or _ERRORS.get(reason, broker)
    return DeadLetter(
        id=letter_id,
        reason=reason,
        function=envelope.function if envelope is not None and reason != JOB_RESULT else None,
        invocation_id=envelope_id,
        kind=envelope.start_kind if envelope is not None and reason != JOB_RESULT else None,
        attempts=attempts,
        last_error=error,
        dead_at=time.time() if now is None else now,
        queue=queue,
        replayable=envelope is not None and reason != JOB_RESULT,
        size=len(body),
    )


class DeadLetterStore:
    """Dead letters in Redis (see the module docstring for the layout and the bounds)."""

    def __init__(
        self, redis: Any, *, prefix: str, job_results: str = "",
        max_count: int = DEFAULT_MAX_COUNT, max_age_s: int = DEFAULT_MAX_AGE_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.job_results = job_results or f"{prefix}.job-results"
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.index = f"{prefix}:dl:index"
        self.bytes = f"{prefix}:dl:bytes"
        self._add = redis.register_script(ADD_LUA)
        self._remove_one = redis.register_script(REMOVE_LUA)

    def _k(self, letter_id: str, suffix: str = "") -> str:
        return f"{self.prefix}:dl:{letter_id}{suffix}"

    def _fn_index(self, function: str) -> str:
        return f"{self.prefix}:dl:fn:{function}"

    async def add(
        self, body: bytes, headers: Mapping[str, Any], *, now: float | None = None
    ) -> DeadLetter | None:
        """Describe and store one dead-lettered message; None when it was stored before."""
        now = time.time() if now is None else now
        letter = describe(new_id(int(now * 1000)), body, headers,
                          job_results=self.job_results, now=now)
        seen = self._k("seen:" + hashlib.sha256(body).hexdigest())
        fn = letter.function or ""
        stored = await self._add(
            keys=[seen, self._k(letter.id), self.index, self._fn_index(fn or "-"), self.bytes],
            args=[self.max_age_s, json.dumps(letter.to_dict()), body,
                  f"{letter.id}/{fn}/{letter.size}", letter.id, "1" if fn else "0",
                  letter.size],
        )
        if not stored:
            return None
        await self.prune(now)
        return letter

    async def prune(self, now: float | None = None) -> int:
        """Drop letters over the count, age and byte bounds (oldest first); how many."""
        now = time.time() if now is None else now
        cutoff = f"{int((now - self.max_age_s) * 1000):012x}"
        stale = [_text(m) for m in await self.redis.zrangebylex(self.index, "-", f"({cutoff}")]
        dropped = await self._remove(stale)
        count = await self.redis.zcard(self.index)
        if count > self.max_count:
            over = await self.redis.zrange(self.index, 0, count - self.max_count - 1)
            dropped += await self._remove([_text(m) for m in over])
        while int(await self.redis.get(self.bytes) or 0) > self.max_bytes:
            oldest = [_text(m) for m in await self.redis.zrange(self.index, 0, 15)]
            if not oldest:
                break
            size = int(await self.redis.get(self.bytes) or 0)
            for member in oldest:
                if size <= self.max_bytes:
                    break
                dropped += await self._remove([member])
                size -= int(member.rsplit("/", 1)[-1])
        return dropped

    async def _remove(self, members: list[str]) -> int:
        """Take index members (`<id>/<function>/<bytes>`) out, with their letters."""
        removed = 0
        for member in members:
            letter_id, fn, size = _parts(member)
            removed += int(await self._remove_one(
                keys=[self.index, self.bytes, self._k(letter_id), self._k(letter_id, ":replays"),
                      self._fn_index(fn or "-")],
                args=[member, size, letter_id],
            ))
        return removed

    async def page(
        self, *, function: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[DeadLetter], str | None]:
        """A page of letters, newest first, and the cursor of the next page (None: last).

        `cursor` is the id of the last letter of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        index = self._fn_index(function) if function else self.index
        high = f"({cursor}" if cursor else "+"
        members = [_text(m) for m in await self.redis.zrevrangebylex(index, high, "-", 0, limit)]
        ids = [m.partition("/")[0] for m in members]
        letters = await self._load(ids)
        gone = [m for m, letter in zip(members, letters, strict=True) if letter is None]
        if gone and not function:  # aged out: drop their index entries (and bytes)
            await self._remove(gone)
        found = [letter for letter in letters if letter is not None]
        return found, (ids[-1] if len(ids) == limit else None)

    async def _load(self, ids: list[str]) -> list[DeadLetter | None]:
        pipe = self.redis.pipeline(transaction=False)
        for letter_id in ids:
            pipe.hget(self._k(letter_id), "meta")
            pipe.hkeys(self._k(letter_id, ":replays"))
        raw = await pipe.execute()
        out: list[DeadLetter | None] = []
        for meta, replays in zip(raw[::2], raw[1::2], strict=True):
            if meta is None:
                out.append(None)
                continue
            out.append(DeadLetter.from_json(meta, tuple(sorted(_text(r) for r in replays))))
        return out

    async def get(self, letter_id: str) -> DeadLetter | None:
        """One letter's description; None when there is none."""
        if not _is_id(letter_id):
            return None
        return (await self._load([letter_id]))[0]

    async def body(self, letter_id: str) -> bytes | None:
        """The stored bytes of a letter; None when there is none."""
        if not _is_id(letter_id):
            return None
        raw: bytes | None = await self.redis.hget(self._k(letter_id), "envelope")
        return raw

    async def mark_replayed(self, letter_id: str, job_id: str) -> None:
        """Record that the letter was replayed as job `job_id`."""
        key = self._k(letter_id, ":replays")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, job_id, str(time.time()))
        pipe.expire(key, self.max_age_s)
        await pipe.execute()

    async def delete(self, letter_id: str) -> bool:
        """Forget a letter; False when there was none."""
        letter = await self.get(letter_id)
        if letter is None:
            return False
        await self._remove([f"{letter.id}/{letter.function or ''}/{letter.size}"])
        return True


def _parts(member: str) -> tuple[str, str, int]:
    """(id, function or "", size) of an index member."""
    letter_id, _, rest = member.partition("/")
    fn, _, size = rest.rpartition("/")
    return letter_id, fn, int(size or 0)


def _is_id(text: str) -> bool:
    """True for an id as `new_id` makes them (keeps odd input out of Redis key names)."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


class DeadLetterConsumer:
    """Takes dead letters off `<prefix>.dead` into a `DeadLetterStore`, then acks them."""

    def __init__(
        self, store: DeadLetterStore, topology: Topology, *, metrics: Any = None,
        retry_pause_s: float = 1.0,
    ) -> None:
        """`metrics`: the DispatcherMetrics (counted by reason); `retry_pause_s`: how long a
        message Redis could not take waits before it is requeued."""
        self.store = store
        self.topology = topology
        self.metrics = metrics
        self.retry_pause_s = retry_pause_s

    async def take(self, body: bytes, headers: Mapping[str, Any]) -> DeadLetter | None:
        """Store one dead letter and count it; None for a duplicate (not counted again)."""
        letter = await self.store.add(body, headers)
        if letter is not None:
            log.warning("dead letter %s (%s) of %s: %s", letter.id, letter.reason,
                        letter.function or "?", letter.last_error)
            if self.metrics is not None:
                self.metrics.dead_letters.labels(letter.reason).inc()
        return letter

    async def start(self, connection: Any) -> None:
        """Consume the topology's dead-letter queue on a channel of its own of the robust
        `connection` (aio-pika consumes again after a reconnect)."""
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=16)
        queue = await channel.declare_queue(
            self.topology.dead_letters, durable=True,
            arguments=self.topology.dead_letter_arguments(),
        )
        await queue.consume(self._on_message)

    async def _on_message(self, message: Any) -> None:
        try:
            await self.take(bytes(message.body), dict(message.headers or {}))
        except Exception:  # Redis down, or a bug: keep the message and retry later
            log.exception("could not store a dead letter; requeueing it")
            await asyncio.sleep(self.retry_pause_s)
            await message.nack(requeue=True)
            return
        await message.ack()
