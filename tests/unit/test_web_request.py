"""What a web request becomes for the guest, as pure functions: the query without
Flotilla's parameters, the sub-path as sent, a job's method and path, HEAD's headers, the
client address buckets of calls without a key, and the checks of a method and path."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.auth import client_bucket
from dispatcher.passthrough import (
    INVOKE_PARAMS,
    JOB_PARAMS,
    guest_query,
    job_target,
    raw_sub_path,
    response_headers,
)
from flotilla.errors import InvalidRequest
from flotilla.invoker import PLAIN_POST, WebRequest, check_target


@pytest.mark.parametrize(("query", "skip", "guest", "version"), [
    (b"", INVOKE_PARAMS, (), None),
    (b"a=1&b=2&a=3", INVOKE_PARAMS, (("a", "1"), ("b", "2"), ("a", "3")), None),
    (b"version=1&x=&version=latest", INVOKE_PARAMS, (("x", ""),), "latest"),
    (b"q=a+b%20c&%C3%A9=%E2%9C%93", INVOKE_PARAMS, (("q", "a b c"), ("é", "✓")), None),
    (b"flag&k=v", INVOKE_PARAMS, (("flag", ""), ("k", "v")), None),
    (b"callback_url=http://x&version=2&p=1", JOB_PARAMS, (("p", "1"),), "2"),
    (b"callback_url=http://x", INVOKE_PARAMS, (("callback_url", "http://x"),), None),
])
def test_the_guest_gets_the_query_without_flotillas_parameters(
    query: bytes, skip: frozenset[str], guest: tuple[tuple[str, str], ...], version: str | None
) -> None:
    assert guest_query(query, skip) == (guest, version)


def scope(raw_path: bytes | None, root_path: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {"root_path": root_path}
    if raw_path is not None:
        s["raw_path"] = raw_path
    return s


@pytest.mark.parametrize(("raw", "root", "decoded", "path"), [
    (b"/v1/functions/f/invoke", "", "", "/"),
    (b"/v1/functions/f/invoke/", "", "/", "/"),
    (b"/v1/functions/f/invoke/a/b", "", "/a/b", "/a/b"),
    (b"/v1/functions/f/invoke/a%2Fb%20c", "", "/a/b c", "/a%2Fb%20c"),  # escapes kept
    (b"/api/v1/functions/f/invoke/x%3F", "/api", "/x?", "/x%3F"),  # under a root path
    (b"/v1/functions/%66/invoke/a%2Fb", "", "/a/b", "/a%2Fb"),  # an escaped name
    (b"/v1%2Ffunctions/f/invoke/a%2Fb", "", "/a/b", "/a/b"),  # does not split: decoded
    (None, "", "/a b/é", "/a%20b/%C3%A9"),  # no raw path: the decoded one, escaped
    (None, "", "/100%", "/100%25"),  # decoded: a "%" is a character
    (b"/v1/functions/f/invoke/\xc3\xa9", "", "/é", "/%C3%A9"),  # bytes past ASCII escaped
    (b"/v1/functions/f/invoke/q?x=1", "", "/q", "/q"),  # a query left on the raw path
])
def test_the_sub_path_is_passed_as_sent(
    raw: bytes | None, root: str, decoded: str, path: str
) -> None:
    assert raw_sub_path(scope(raw, root), 4, decoded) == path


@pytest.mark.parametrize(("headers", "target"), [
    ([], ("POST", "/")),
    # a path never holds a raw "?" (it would start a query): escaped, as a client would
    ([(b"Flotilla-Method", b"get"), (b"flotilla-path", b"/x/y?no")], ("GET", "/x/y%3Fno")),
    ([(b"flotilla-path", b"/a b")], ("POST", "/a%20b")),
])
def test_a_jobs_method_and_path_come_from_its_headers(
    headers: list[tuple[bytes, bytes]], target: tuple[str, str]
) -> None:
    assert job_target(headers) == target


@pytest.mark.parametrize("headers", [
    [(b"flotilla-method", b"TRACE")], [(b"flotilla-path", b"relative")],
    [(b"flotilla-path", b"/" + b"x" * 9000)],
])
def test_a_bad_job_target_is_422(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(InvalidRequest) as bad:
        job_target(headers)
    assert "flotilla-" in str(bad.value)


def test_check_target() -> None:
    check_target("OPTIONS", "/")
    for method, path in (("get", "/"), ("POST", ""), ("POST", "/a\nb"), ("BREW", "/")):
        with pytest.raises(InvalidRequest):
            check_target(method, path)


def test_head_keeps_the_guests_length_only_without_a_body() -> None:
    guest = (("Content-Length", "12"), ("x-a", "1"))
    assert response_headers(guest, 0, head=True) == [(b"x-a", b"1"), (b"content-length", b"12")]
    assert response_headers(guest, 3, head=True)[-1] == (b"content-length", b"3")
    assert response_headers(guest, 0)[-1] == (b"content-length", b"0")
    assert response_headers((("content-length", "bogus"),), 0, head=True) == [
        (b"content-length", b"0")]


@pytest.mark.parametrize(("address", "bucket"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same /64, the same bucket
    ("::ffff:203.0.113.7", "203.0.113.7"),
    (None, "unknown"),
    ("", "unknown"),
    ("not-an-ip", "not-an-ip"),  # e.g. a unix socket peer
])
def test_client_buckets(address: str | None, bucket: str) -> None:
    assert client_bucket(address) == bucket


def test_a_plain_post_adds_nothing_to_the_envelope() -> None:
    assert PLAIN_POST.envelope_fields() == {}
    assert WebRequest("GET", "/a", (("q", "1"),), "k1").envelope_fields() == {
        "method": "GET", "path": "/a", "query": (("q", "1"),), "caller": "k1"}
