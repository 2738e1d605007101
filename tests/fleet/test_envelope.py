"""Envelope and Reply: round trips, and every malformed input raises EnvelopeError."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from flotilla.envelope import FORMAT_VERSION, REPLY_JOB, Envelope, EnvelopeError, Reply, reply_to
from flotilla.errors import FlotillaError
from flotilla.outcomes import Outcome
from flotilla.topology import Topology, message_ttl_ms

ENVELOPE = Envelope(
    invocation_id="inv-1",
    correlation_id="cid-1",
    function="echo",
    digest="ab" * 32,
    headers=(("content-type", "text/plain"), ("x-a", "1"), ("x-a", "2")),
    body=b"\x00\xffhello",
    deadline_ms=1_700_000_000_000,
    attempt=2,
    reply_to="flotilla.reply.abc",
)
REPLY = Reply(
    invocation_id="inv-1",
    correlation_id="cid-1",
    outcome="ok",
    status=201,
    headers=(("x", "y"),),
    body=b"\x01\x02",
    logs=(("info", "hi", 1_700_000_000_001),),
    timings={"call_ms": 1.25, "total_ms": 2},
)


def test_envelope_round_trip() -> None:
    assert Envelope.decode(ENVELOPE.encode()) == ENVELOPE


def test_publish_time_is_stamped_at_encode() -> None:
    decoded = Envelope.decode(ENVELOPE.encode(published_ms=1234))
    assert decoded.published_ms == 1234
    assert decoded == dataclasses.replace(ENVELOPE, published_ms=1234)


def test_job_envelope_round_trip_without_reply_to() -> None:
    job = Envelope("i", "c", "f", "d", (), b"", 5, reply_mode=REPLY_JOB)
    assert Envelope.decode(job.encode()) == job


@pytest.mark.parametrize("outcome", tuple(Outcome))
def test_reply_round_trip(outcome: str) -> None:
    reply = Reply("i", "c", outcome, error="boom" if outcome != "ok" else "")
    assert Reply.decode(reply.encode()) == reply


def test_reply_round_trip_with_everything() -> None:
    decoded = Reply.decode(REPLY.encode())
    assert decoded == REPLY
    assert decoded.timings["total_ms"] == 2.0


def test_reply_to_copies_ids() -> None:
    r = reply_to(ENVELOPE, "expired", "late")
    assert (r.invocation_id, r.correlation_id, r.outcome, r.error) == ("inv-1", "cid-1", "expired", "late")


def test_envelope_error_is_a_flotilla_error() -> None:
    assert issubclass(EnvelopeError, FlotillaError)


def _envelope_map(**changes: Any) -> bytes:
    m = msgpack.unpackb(ENVELOPE.encode(), raw=False)
    for k, v in changes.items():
        if v is _DROP:
            del m[k]
        else:
            m[k] = v
    return msgpack.packb(m, use_bin_type=True)


def _reply_map(**changes: Any) -> bytes:
    m = msgpack.unpackb(REPLY.encode(), raw=False)
    for k, v in changes.items():
        if v is _DROP:
            del m[k]
        else:
            m[k] = v
    return msgpack.packb(m, use_bin_type=True)


_DROP = object()
GOOD = ENVELOPE.encode()

MALFORMED_ENVELOPES = [
    ("empty", b""),
    ("random bytes", bytes(range(256)) * 3),
    ("truncated", GOOD[: len(GOOD) // 2]),
    ("trailing garbage", GOOD + b"\xc1"),
    ("not a map", msgpack.packb([1, 2, 3])),
    ("a string", msgpack.packb("hello")),
    ("wrong version", _envelope_map(v=FORMAT_VERSION + 1)),
    ("missing version", _envelope_map(v=_DROP)),
    ("version as string", _envelope_map(v="1")),
    ("missing id", _envelope_map(id=_DROP)),
    ("missing cid", _envelope_map(cid=_DROP)),
    ("missing function", _envelope_map(fn=_DROP)),
    ("missing digest", _envelope_map(dg=_DROP)),
    ("missing body", _envelope_map(b=_DROP)),
    ("missing deadline", _envelope_map(dl=_DROP)),
    ("missing attempt", _envelope_map(at=_DROP)),
    ("missing reply mode", _envelope_map(rm=_DROP)),
    ("missing publish time", _envelope_map(pt=_DROP)),
    ("publish time as float", _envelope_map(pt=1.5)),
    ("id as int", _envelope_map(id=5)),
    ("body as str", _envelope_map(b="text")),
    ("deadline as float", _envelope_map(dl=1.5)),
    ("deadline as bool", _envelope_map(dl=True)),
    ("attempt as str", _envelope_map(at="1")),
    ("headers not a list", _envelope_map(h={"a": "b"})),
    ("header not a pair", _envelope_map(h=[["a"]])),
    ("header value bytes", _envelope_map(h=[["a", b"b"]])),
    ("unknown reply mode", _envelope_map(rm="carrier-pigeon")),
    ("reply mode without reply_to", _envelope_map(rt="")),
    ("non-str map key", msgpack.packb({1: 2})),
    ("bin instead of str id", _envelope_map(id=b"inv")),
]


@pytest.mark.parametrize(("case", "data"), MALFORMED_ENVELOPES, ids=[c for c, _ in MALFORMED_ENVELOPES])
def test_malformed_envelope_raises_envelope_error(case: str, data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.decode(data)


MALFORMED_REPLIES = [
    ("random bytes", b"\x93\x01"),
    ("wrong version", _reply_map(v=0)),
    ("unknown outcome", _reply_map(o="maybe")),
    ("status as str", _reply_map(s="200")),
    ("missing body", _reply_map(b=_DROP)),
    ("log not a triple", _reply_map(l=[["info", "x"]])),
    ("log time as str", _reply_map(l=[["info", "x", "now"]])),
    ("timings not a map", _reply_map(t=[1])),
    ("timing not a number", _reply_map(t={"a": "1"})),
    ("timing as bool", _reply_map(t={"a": True})),
    ("status as bool", _reply_map(s=False)),
    ("log time as bool", _reply_map(l=[["info", "x", True]])),
    ("header not a pair", _reply_map(h=[["a", "b", "c"]])),
    ("missing timings", _reply_map(t=_DROP)),
    ("bin instead of str error", _reply_map(e=b"boom")),
]


@pytest.mark.parametrize(("case", "data"), MALFORMED_REPLIES, ids=[c for c, _ in MALFORMED_REPLIES])
def test_malformed_reply_raises_envelope_error(case: str, data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Reply.decode(data)


def test_decoded_reply_is_the_same_value_as_a_constructed_one() -> None:
    # The one-pass decoder builds the object without __init__: same fields, same guarantees.
    decoded = Reply.decode(REPLY.encode())
    fields = [f.name for f in dataclasses.fields(Reply)]
    assert [getattr(decoded, f) for f in fields] == [getattr(REPLY, f) for f in fields]
    assert vars(decoded).keys() == vars(REPLY).keys()
    assert isinstance(decoded.timings["total_ms"], float)
    with pytest.raises(TypeError):
        decoded.timings["x"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.outcome = "trap"  # type: ignore[misc]
    assert Envelope.decode(ENVELOPE.encode()).headers == ENVELOPE.headers


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(EnvelopeError):
        Envelope.decode("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "remaining", "expected"),
    [("reply", 5_000, 6_000), ("reply", -5_000, 1), ("job", 5_000, None)],
)
def test_message_ttl(mode: str, remaining: int, expected: int | None) -> None:
    assert message_ttl_ms(mode, remaining) == expected


def test_topology_names_derive_from_prefix() -> None:
    t = Topology("abc", delivery_limit=3, max_length=10)
    delays = t.delays.queue_names()
    assert t.queue_names() == ("abc.sync", "abc.dead", "abc.job-results", *delays)
    assert t.queue_names(["b", "a", "b"]) == (
        "abc.sync", "abc.dead", "abc.job-results", *delays, "abc.jobs.a", "abc.jobs.b")
    for args in (t.job_arguments(), t.sync_arguments()):
        assert args["x-queue-type"] == "quorum"
        assert args["x-overflow"] == "reject-publish"
        assert (args["x-delivery-limit"], args["x-max-length"]) == (3, 10)
        assert args["x-dead-letter-exchange"] == "abc.dlx"


def test_job_lanes_map_to_their_function_and_back() -> None:
    t = Topology("a.b")
    assert t.job_queue("resize-image") == "a.b.jobs.resize-image"
    assert t.job_function("a.b.jobs.resize-image") == "resize-image"
    for other in ("a.b.sync", "a.b.jobs.", "x.jobs.f", "a.b.job-results"):
        assert t.job_function(other) is None


def test_lane_pattern_matches_the_lanes_of_its_prefix_only() -> None:
    import re

    pattern = re.compile(Topology("p.x").lane_pattern)
    assert pattern.match("p.x.sync") and pattern.match("p.x.jobs.f-1")
    for other in ("p.x.dead", "p.x.job-results", "pax.sync", "q.p.x.sync", "p.x.sync2",
                  "p.x.jobs."):
        assert not pattern.match(other), other


def test_a_classic_sync_lane_is_transient_and_has_no_delivery_limit() -> None:
    t = Topology("abc", max_length=10, sync_lane="classic")
    args = t.sync_arguments()
    assert args["x-queue-type"] == "classic" and "x-delivery-limit" not in args
    assert (args["x-max-length"], args["x-overflow"]) == (10, "reject-publish")
    assert args["x-dead-letter-exchange"] == "abc.dlx"
    assert not t.sync_persistent and Topology("abc").sync_persistent
    assert t.job_arguments()["x-queue-type"] == "quorum"  # jobs stay durable
    with pytest.raises(ValueError, match="sync_lane"):
        Topology("abc", sync_lane="stream")


# ---- the optional fields (method, path, query, caller, kind, parent, trace context) ------

OPTIONAL = {
    "method": ("GET", "md"),
    "path": ("/a/b", "pa"),
    "query": ((("x", "1"), ("x", "2")), "q"),
    "caller": ("key-1", "ca"),
    "kind": ("scheduled", "k"),
    "parent_id": ("parent", "pi"),
    "traceparent": ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tp"),
}


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_each_optional_field_round_trips_alone(name: str) -> None:
    value, key = OPTIONAL[name]
    env = Envelope.for_job("j", "fn", "d" * 64, (), b"", ttl_s=60, **{name: value})
    raw = env.encode()
    assert key in msgpack.unpackb(raw)
    assert Envelope.decode(raw) == env
    assert getattr(Envelope.decode(raw), name) == value


def test_optional_fields_are_absent_when_default() -> None:
    env = Envelope.for_call("i", "fn", "d" * 64, (("a", "b"),), b"x", timeout_ms=10, reply_to="r")
    assert set(msgpack.unpackb(env.encode())) == {
        "v", "id", "cid", "fn", "dg", "h", "b", "dl", "at", "rm", "rt", "pt"
    }
    decoded = Envelope.decode(env.encode())
    assert (decoded.method, decoded.path, decoded.query, decoded.caller, decoded.start_kind) == (
        "POST", "/", (), None, "sync"
    )
    job = Envelope.for_job("j", "fn", "d" * 64, (), b"", ttl_s=60)
    assert Envelope.decode(job.encode()).start_kind == "job"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("md", 1, "'md'"),
        ("q", [["a"]], "'q'"),
        ("q", "a=1", "'q'"),
        ("k", "cron", "'k'"),
        ("ca", b"key", "'ca'"),
        ("tp", None, "'tp'"),
    ],
)
def test_bad_optional_fields_are_named(key: str, value: object, message: str) -> None:
    m = msgpack.unpackb(Envelope.for_job("j", "fn", "d" * 64, (), b"", ttl_s=60).encode())
    m[key] = value
    with pytest.raises(EnvelopeError, match=message):
        Envelope.decode(msgpack.packb(m, use_bin_type=True))
