"""HttpHost against a local HTTP server: success paths, every error case, the address checks."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.http import HttpHost
from tests.hosts.conftest import MakeCtx, RoutesHandler, RoutesServer, closed_port


@pytest.fixture(scope="module")
def http() -> Iterator[HttpHost]:
    host = HttpHost()
    yield host
    host.close()


@pytest.fixture
def base(http_server: Any) -> str:
    return f"http://127.0.0.1:{http_server.server_address[1]}"


@pytest.fixture
def ctx(make_ctx: MakeCtx, http_server: Any) -> InvocationContext:
    port = http_server.server_address[1]
    return make_ctx(allowed_hosts=(f"127.0.0.1:{port}", f"localhost:{port}"), max_body_bytes=1000)


def fails(call: Any) -> HostError:
    with pytest.raises(HostError) as info:
        call()
    return info.value


def test_post_round_trip_keeps_headers_body_and_repeats(
    http: HttpHost, ctx: InvocationContext, base: str
) -> None:
    status, headers, body = http.invoke(
        ctx,
        "POST",
        f"{base}/echo?q=1",
        [("X-A", "1"), ("X-A", "2"), ("Host", "evil")],
        b"payload",
        None,
    )
    assert status == 200
    assert [v for k, v in headers if k == "X-Multi"] == ["1", "2"]
    echo = json.loads(body)
    sent = [(k.lower(), v) for k, v in echo["headers"]]
    assert echo["method"] == "POST" and echo["path"] == "/echo?q=1" and echo["body"] == "payload"
    assert [v for k, v in sent if k == "x-a"] == ["1", "2"]
    assert ("host", f"127.0.0.1:{base.rsplit(':', 1)[1]}") in sent  # the guest's Host is replaced
    assert ("content-length", "7") in sent
    assert any(k == "user-agent" for k, _ in sent)


def test_keep_alive_connection_is_reused(
    http: HttpHost, ctx: InvocationContext, base: str, http_server: Any
) -> None:
    before = len(http_server.seen)
    for _ in range(3):
        assert http.invoke(ctx, "GET", f"{base}/echo", [], b"", None)[0] == 200
    ports = {port for _, port, _ in http_server.seen[before:]}
    assert len(ports) == 1


def test_name_is_resolved_then_pinned_with_host_header(make_ctx: MakeCtx, http_server: Any) -> None:
    port = http_server.server_address[1]
    calls: list[tuple[str, int]] = []

    def resolve(host: str, p: int) -> list[str]:
        calls.append((host, p))
        return ["127.0.0.1"]

    host = HttpHost(resolve=resolve)
    try:
        ctx = make_ctx(allowed_hosts=(f"localhost:{port}",))
        status, _, body = host.invoke(ctx, "GET", f"http://LOCALHOST:{port}/echo", [], b"", None)
        assert status == 200
        assert calls == [("localhost", port)]
        sent = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert sent["host"] == f"localhost:{port}"
    finally:
        host.close()


def test_next_address_is_tried_when_the_first_refuses(make_ctx: MakeCtx, http_server: Any) -> None:
    port = http_server.server_address[1]
    host = HttpHost(resolve=lambda h, p: ["::1", "127.0.0.2", "127.0.0.1"])
    try:
        ctx = make_ctx(allowed_hosts=(f"localhost:{port}",))
        assert host.invoke(ctx, "GET", f"http://localhost:{port}/echo", [], b"", None)[0] == 200
    finally:
        host.close()


def test_redirect_is_returned_not_followed(
    http: HttpHost, ctx: InvocationContext, base: str
) -> None:
    status, headers, _ = http.invoke(ctx, "GET", f"{base}/redirect", [], b"", None)
    assert status == 302
    assert ("Location", "http://evil.example/steal") in headers


@pytest.mark.parametrize("status", [204, 404, 500, 503])
def test_error_statuses_are_responses(
    http: HttpHost, ctx: InvocationContext, base: str, status: int
) -> None:
    assert http.invoke(ctx, "GET", f"{base}/status/{status}", [], b"", None)[0] == status


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("http://example.com/", "example.com:80 is not in"),
        ("http://127.0.0.1:1/", "127.0.0.1:1 is not in"),
        ("https://127.0.0.1/", "127.0.0.1:443 is not in"),
        ("http://127.0.0.2:{port}/", "127.0.0.2"),
    ],
)
def test_hosts_outside_allowed_hosts_are_denied(
    http: HttpHost, ctx: InvocationContext, http_server: Any, url: str, detail: str
) -> None:
    seen = len(http_server.seen)
    error = fails(
        lambda: http.invoke(
            ctx, "GET", url.format(port=http_server.server_address[1]), [], b"", None
        )
    )
    assert error.case == "denied" and detail in (error.detail or "")
    assert len(http_server.seen) == seen


@pytest.mark.parametrize(
    ("resolved", "detail"),
    [
        (["169.254.169.254"], "metadata"),
        (["fd00:ec2::254"], "metadata"),
        (["::ffff:169.254.169.254"], "metadata"),
        (["93.184.216.34", "169.254.10.10"], "link-local"),  # one bad answer is enough
        (["fe80::1"], "link-local"),
        (["127.0.0.1"], "loopback"),  # a public name rebinding to the worker itself
        (["::1"], "loopback"),
        (["10.0.0.7"], "private"),  # ... or to the private network behind it
        (["93.184.216.34", "192.168.0.1"], "private"),
        (["fd00::5"], "private"),
        (["::ffff:10.0.0.7"], "private"),
        (["0.0.0.0"], "unspecified"),
    ],
)
def test_allowed_names_resolving_to_forbidden_addresses_are_denied(
    make_ctx: MakeCtx, resolved: list[str], detail: str
) -> None:
    host = HttpHost(resolve=lambda h, p: resolved)
    try:
        ctx = make_ctx(allowed_hosts=("api.example.com", "*.example.com"))
        error = fails(lambda: host.invoke(ctx, "GET", "http://api.example.com/", [], b"", None))
        assert error.case == "denied" and detail in (error.detail or "")
    finally:
        host.close()


def test_metadata_ip_literal_is_denied_even_when_listed(http: HttpHost, make_ctx: MakeCtx) -> None:
    ctx = make_ctx(allowed_hosts=("169.254.169.254",))
    error = fails(
        lambda: http.invoke(ctx, "GET", "http://169.254.169.254/latest/meta-data/", [], b"", None)
    )
    assert error.case == "denied" and "metadata" in (error.detail or "")


@pytest.mark.parametrize(
    ("method", "url", "headers", "detail"),
    [
        ("GET", "http://127.0.0.1:{port}@evil.com/", [], "credentials"),
        ("GET", "http://user:pw@127.0.0.1:{port}/", [], "credentials"),
        ("GET", "ftp://127.0.0.1:{port}/", [], "scheme"),
        ("GET", "http://2130706433:{port}/", [], "dotted-quad"),
        ("GET", "not a url", [], "bad URL"),
        ("GET", "http://127.0.0.1:{port}/echo", [("X-Evil", "a\r\nInjected: 1")], "CR, LF"),
        ("GET", "http://127.0.0.1:{port}/echo", [("Bad Name", "v")], "token"),
        (
            "GET",
            "http://127.0.0.1:{port}/echo",
            [("Transfer-Encoding", "chunked")],
            "cannot be set",
        ),
        ("GE T", "http://127.0.0.1:{port}/echo", [], "method"),
        ("CONNECT", "http://127.0.0.1:{port}/echo", [], "CONNECT"),
    ],
)
def test_malformed_requests_are_invalid_request(
    http: HttpHost,
    ctx: InvocationContext,
    http_server: Any,
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    detail: str,
) -> None:
    seen = len(http_server.seen)
    port = http_server.server_address[1]
    error = fails(lambda: http.invoke(ctx, method, url.format(port=port), headers, b"", None))
    assert error.case == "invalid-request" and detail in (error.detail or "")
    assert len(http_server.seen) == seen


def test_request_body_over_the_limit_is_invalid_request(
    http: HttpHost, ctx: InvocationContext, base: str
) -> None:
    error = fails(lambda: http.invoke(ctx, "POST", f"{base}/echo", [], b"x" * 1001, None))
    assert error.case == "invalid-request"


@pytest.mark.parametrize("route", ["big?n=1001", "chunked?n=50000"])
def test_response_over_max_body_bytes_is_too_large(
    http: HttpHost, ctx: InvocationContext, base: str, route: str
) -> None:
    error = fails(lambda: http.invoke(ctx, "GET", f"{base}/{route}", [], b"", None))
    assert error.case == "too-large" and error.detail is None
    # The abandoned connection was not put back half-read: the next request is clean.
    assert http.invoke(ctx, "GET", f"{base}/big?n=1000", [], b"", None)[2] == b"b" * 1000


def test_chunked_body_within_the_limit_is_read(
    http: HttpHost, ctx: InvocationContext, base: str
) -> None:
    _, headers, body = http.invoke(ctx, "GET", f"{base}/chunked?n=999", [], b"", None)
    assert body == b"c" * 999
    assert not [k for k, _ in headers if k.lower() == "transfer-encoding"]  # framing is gone


def test_slow_response_times_out_at_timeout_ms(
    http: HttpHost, ctx: InvocationContext, base: str
) -> None:
    start = time.monotonic()
    error = fails(lambda: http.invoke(ctx, "GET", f"{base}/slow?ms=3000", [], b"", 200))
    assert error.case == "timeout" and error.detail is None
    assert 0.15 < time.monotonic() - start < 1.0


def test_timeout_is_capped_by_the_invocation_deadline(
    http: HttpHost, make_ctx: MakeCtx, base: str, http_server: Any
) -> None:
    ctx = make_ctx(seconds=0.3, allowed_hosts=(f"127.0.0.1:{http_server.server_address[1]}",))
    start = time.monotonic()
    error = fails(lambda: http.invoke(ctx, "GET", f"{base}/slow?ms=3000", [], b"", 60_000))
    assert error.case == "timeout"
    assert time.monotonic() - start < 1.0


def test_trickling_body_cannot_outlive_the_timeout(
    http: HttpHost, ctx: InvocationContext, base: str
) -> None:
    start = time.monotonic()
    error = fails(lambda: http.invoke(ctx, "GET", f"{base}/trickle?n=40&ms=50", [], b"", 500))
    assert error.case == "timeout"
    assert time.monotonic() - start < 1.2


def test_deadline_passed_is_timeout_without_a_request(
    http: HttpHost, make_ctx: MakeCtx, base: str, http_server: Any
) -> None:
    seen = len(http_server.seen)
    ctx = make_ctx(seconds=-1, allowed_hosts=(f"127.0.0.1:{http_server.server_address[1]}",))
    assert fails(lambda: http.invoke(ctx, "GET", f"{base}/echo", [], b"", None)).case == "timeout"
    assert len(http_server.seen) == seen


def test_connection_refused_is_connection(http: HttpHost, make_ctx: MakeCtx) -> None:
    port = closed_port()
    ctx = make_ctx(allowed_hosts=(f"127.0.0.1:{port}",))
    error = fails(lambda: http.invoke(ctx, "GET", f"http://127.0.0.1:{port}/", [], b"", None))
    assert error.case == "connection" and "refused" in (error.detail or "").lower()


def test_unresolvable_name_is_connection(http: HttpHost, make_ctx: MakeCtx) -> None:
    ctx = make_ctx(allowed_hosts=("nonexistent.invalid",))
    error = fails(lambda: http.invoke(ctx, "GET", "http://nonexistent.invalid/", [], b"", None))
    assert error.case == "connection" and "resolve" in (error.detail or "")


def test_slow_resolver_is_bounded_by_the_timeout(make_ctx: MakeCtx) -> None:
    release = threading.Event()

    def resolve(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["93.184.216.34"]

    host = HttpHost(resolve=resolve)
    try:
        ctx = make_ctx(allowed_hosts=("api.example.com",))
        start = time.monotonic()
        error = fails(lambda: host.invoke(ctx, "GET", "http://api.example.com/", [], b"", 200))
        assert error.case == "timeout" and time.monotonic() - start < 1.0
    finally:
        release.set()
        host.close()


def test_concurrent_invocations_share_the_pool(
    http: HttpHost, ctx: InvocationContext, base: str
) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                status, _, body = http.invoke(
                    ctx, "POST", f"{base}/echo", [], f"{n}-{i}".encode(), None
                )
                assert json.loads(body)["body"] == f"{n}-{i}"
                results.append(status)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [200] * 80


@pytest.fixture(scope="module")
def ipv6_server() -> Iterator[Any]:
    class Server(RoutesServer):
        address_family = socket.AF_INET6

    try:
        server = Server(("::1", 0), RoutesHandler)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server.seen = []
    server.stop = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


def test_ipv6_answers_are_pinned_and_ipv6_literals_need_a_pattern(
    http: HttpHost, make_ctx: MakeCtx, ipv6_server: Any
) -> None:
    port = ipv6_server.server_address[1]
    host = HttpHost(resolve=lambda h, p: ["::1"])
    try:
        ctx = make_ctx(allowed_hosts=(f"localhost:{port}",))
        assert host.invoke(ctx, "GET", f"http://localhost:{port}/echo", [], b"", None)[0] == 200
        assert ipv6_server.seen[-1][2] == f"localhost:{port}"
        error = fails(lambda: http.invoke(ctx, "GET", f"http://[::1]:{port}/", [], b"", None))
        assert error.case == "denied" and f"[::1]:{port}" in (error.detail or "")
    finally:
        host.close()
