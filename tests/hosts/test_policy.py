"""Table-driven tests of the host policies: URL parsing, host patterns, addresses, limits."""

from __future__ import annotations

import pytest

from flotilla.hosts.policy import (
    MAX_CACHE_KEY_BYTES,
    MAX_CACHE_TTL_MS,
    MAX_CACHE_VALUE_BYTES,
    Target,
    cache_key,
    check_cache_key,
    check_cache_value,
    check_headers,
    check_method,
    check_object_key,
    check_ttl_ms,
    forbidden_address,
    is_internal_pattern,
    match_host,
    parse_url,
    pattern_matches,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com", Target("http", "example.com", 80, "/")),
        ("https://Example.COM/a/b?x=1&y=2", Target("https", "example.com", 443, "/a/b?x=1&y=2")),
        ("http://example.com:8080/p", Target("http", "example.com", 8080, "/p")),
        ("http://example.com./", Target("http", "example.com", 80, "/")),
        ("HTTP://example.com/#frag", Target("http", "example.com", 80, "/")),
        ("http://127.0.0.1:9000/x", Target("http", "127.0.0.1", 9000, "/x")),
        ("http://[::1]:8080/", Target("http", "::1", 8080, "/")),
        ("http://[::FFFF:169.254.169.254]/", Target("http", "::ffff:a9fe:a9fe", 80, "/")),
        ("http://a.com#@evil.com/", Target("http", "a.com", 80, "/")),
        ("http://a.com?@evil.com/", Target("http", "a.com", 80, "/?@evil.com/")),
        ("http://xn--bcher-kva.example/", Target("http", "xn--bcher-kva.example", 80, "/")),
    ],
)
def test_parse_url_accepts_and_normalises(url: str, expected: Target) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("//example.com/", "scheme"),
        ("example.com/path", "scheme"),
        ("http:///path", "no host"),
        ("http://allowed.com@evil.com/", "credentials"),
        ("http://user:pw@allowed.com/", "credentials"),
        ("http://@allowed.com/", "credentials"),
        ("http://evil.com\\@allowed.com/", "backslash"),
        ("http://allowed.com /", "printable"),
        ("http://allowed.com/\r\nX: y", "printable"),
        ("http://bücher.example/", "printable"),
        ("http://2130706433/", "dotted-quad"),
        ("http://0x7f000001/", "dotted-quad"),
        ("http://127.1/", "dotted-quad"),
        ("http://0177.0.0.1/", "dotted-quad"),
        ("http://0x7f.0.0.1/", "dotted-quad"),
        ("http://127.000.000.001/", "dotted-quad"),
        ("http://1.2.3.4.5/", "dotted-quad"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://[::1/", "IPv6"),
        ("http://[not-ipv6]/", "IPv6"),
        ("http://[::1]x/", "after the IPv6"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),
        ("http://example.com:/", "port"),
        ("http://example.com:+80/", "port"),
        ("http://exa_mple.com/", "valid host"),
        ("http://-bad.com/", "valid host"),
        ("http://a..com/", "valid host"),
        ("http://%65xample.com/", "valid host"),
        ("http://" + "a" * 64 + ".com/", "valid host"),
        ("http://example.com/" + "x" * 9000, "longer"),
    ],
)
def test_parse_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_url(url)


@pytest.mark.parametrize(
    ("pattern", "host", "port", "scheme", "allowed"),
    [
        ("example.com", "example.com", 443, "https", True),
        ("example.com", "example.com", 80, "http", True),
        ("example.com", "example.com", 443, "http", False),  # not the scheme's default port
        ("example.com", "example.com", 8080, "http", False),
        ("example.com", "api.example.com", 443, "https", False),
        ("example.com", "example.com.evil.net", 443, "https", False),
        ("example.com", "notexample.com", 443, "https", False),
        ("*.example.com", "api.example.com", 443, "https", True),
        ("*.example.com", "a.b.example.com", 443, "https", True),
        ("*.example.com", "example.com", 443, "https", False),
        ("*.example.com", "evilexample.com", 443, "https", False),
        ("*.example.com", "api.example.com.evil.net", 443, "https", False),
        ("*.example.com", "api.example.com", 8443, "https", False),
        ("example.com:8443", "example.com", 8443, "https", True),
        ("example.com:8443", "example.com", 8443, "http", True),
        ("example.com:8443", "example.com", 443, "https", False),
        ("*.example.com:8080", "x.example.com", 8080, "http", True),
        ("127.0.0.1:9000", "127.0.0.1", 9000, "http", True),
        ("127.0.0.1:9000", "127.0.0.1", 9001, "http", False),
        ("127.0.0.1", "127.0.0.2", 80, "http", False),
    ],
)
def test_pattern_matches(pattern: str, host: str, port: int, scheme: str, allowed: bool) -> None:
    assert pattern_matches(pattern, host, port, scheme) is allowed


def test_match_host_returns_the_first_matching_pattern() -> None:
    patterns = ("a.com", "*.b.com", "localhost:8080")
    assert match_host("x.b.com", 443, "https", patterns) == "*.b.com"
    assert match_host("localhost", 8080, "http", patterns) == "localhost:8080"
    assert match_host("b.com", 443, "https", patterns) is None
    assert match_host("a.com", 443, "https", ()) is None


@pytest.mark.parametrize(
    ("pattern", "internal"),
    [
        ("localhost", True),
        ("localhost:8080", True),
        ("127.0.0.1", True),
        ("127.0.0.1:9000", True),
        ("127.9.9.9", True),
        ("10.0.0.1", True),
        ("192.168.1.10:8443", True),
        ("example.com", False),
        ("internal.example.com", False),
        ("*.localhost", False),
        ("*.example.com:8080", False),
        ("localhost.evil.com", False),
    ],
)
def test_is_internal_pattern(pattern: str, internal: bool) -> None:
    assert is_internal_pattern(pattern) is internal


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("10.1.2.3", "private"),  # only reachable through a pattern naming it
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT / shared address space
        ("fd12::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:c0a8:101::1", "private"),  # 6to4 around 192.168.1.1
        ("64:ff9b::a00:1", "private"),  # NAT64 around 10.0.0.1
        ("169.254.169.254", "metadata"),
        ("169.254.0.1", "link-local"),
        ("169.254.255.255", "link-local"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("febf:ffff::1", "link-local"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:a9fe:a9fe", "metadata"),
        ("::ffff:169.254.1.1", "link-local"),
        ("::169.254.169.254", "metadata"),  # IPv4-compatible
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:93.184.216.34", None),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("127.0.0.1", "loopback"),
        ("127.8.8.8", "loopback"),
        ("::1", "loopback"),
        ("not-an-ip", "not an IP"),
    ],
)
def test_forbidden_address(address: str, reason: str | None) -> None:
    got = forbidden_address(address)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", None),
        ("::1", None),
        ("::ffff:127.0.0.1", None),
        ("10.1.2.3", None),
        ("fd12::1", None),
        ("169.254.169.254", "metadata"),  # an explicit internal pattern never opens metadata
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_forbidden_address_with_internal_allowed(address: str, reason: str | None) -> None:
    got = forbidden_address(address, allow_internal=True)
    assert (got is None) if reason is None else (got is not None and reason in got)


@pytest.mark.parametrize(
    ("method", "ok"),
    [
        ("GET", True),
        ("post", True),
        ("PROPFIND", True),
        ("", False),
        ("GE T", False),
        ("GET\r\n", False),
        ("CONNECT", False),
        ("X" * 33, False),
    ],
)
def test_check_method(method: str, ok: bool) -> None:
    assert (check_method(method) is None) is ok


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ([], None),
        ([("Accept", "*/*"), ("X-A", "1"), ("X-A", "2")], None),
        ([("Host", "other"), ("Content-Length", "3")], None),  # replaced by the host
        ([("X-Evil", "a\r\nInjected: 1")], "CR, LF or NUL"),
        ([("X-Evil", "a\nb")], "CR, LF or NUL"),
        ([("X-Evil", "a\x00b")], "CR, LF or NUL"),
        ([("X-Latin", "café")], None),
        ([("X-Emoji", "\U0001f600")], "Latin-1"),
        ([("Bad Name", "v")], "not an HTTP token"),
        ([("Bad:Name", "v")], "not an HTTP token"),
        ([("", "v")], "not an HTTP token"),
        ([("Transfer-Encoding", "chunked")], "cannot be set"),
        ([("connection", "close")], "cannot be set"),
        ([("Upgrade", "websocket")], "cannot be set"),
        ([("X", "v")] * 101, "more than 100"),
        ([("X", "v" * 70_000)], "larger than"),
    ],
)
def test_check_headers(headers: list[tuple[str, str]], problem: str | None) -> None:
    got = check_headers(headers)
    assert (got is None) if problem is None else (got is not None and problem in got)


def test_cache_key_is_namespaced() -> None:
    assert cache_key("orders", "user:1") == "fn:orders:user:1"
    # Namespaces cannot contain ':' (FunctionConfig), so the prefix is unambiguous.
    assert cache_key("a", "b-c:d") != cache_key("a-b", "c:d")
    assert not cache_key("a", "x").startswith(cache_key("ab", ""))


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("k", True),
        ("é" * 512, True),
        ("é" * 513, False),
        ("x" * MAX_CACHE_KEY_BYTES, True),
        ("x" * (MAX_CACHE_KEY_BYTES + 1), False),
        ("", False),
    ],
)
def test_check_cache_key(key: str, ok: bool) -> None:
    assert (check_cache_key(key) is None) is ok


@pytest.mark.parametrize(
    ("size", "ok"), [(0, True), (MAX_CACHE_VALUE_BYTES, True), (MAX_CACHE_VALUE_BYTES + 1, False)]
)
def test_check_cache_value(size: int, ok: bool) -> None:
    assert (check_cache_value(b"x" * size) is None) is ok


@pytest.mark.parametrize(
    ("ttl", "ok"),
    [
        (0, True),
        (1, True),
        (MAX_CACHE_TTL_MS, True),
        (MAX_CACHE_TTL_MS + 1, False),
        (-1, False),
        (2**64 - 1, False),
    ],
)
def test_check_ttl_ms(ttl: int, ok: bool) -> None:
    assert (check_ttl_ms(ttl) is None) is ok


@pytest.mark.parametrize(
    ("key", "ok"), [("a/b.txt", True), ("", False), ("k" * 1024, True), ("k" * 1025, False)]
)
def test_check_object_key(key: str, ok: bool) -> None:
    assert (check_object_key(key) is None) is ok


@pytest.mark.parametrize(
    ("url", "host_header"),
    [
        ("http://a.com/", "a.com"),
        ("https://a.com:443/", "a.com"),
        ("http://a.com:8080/", "a.com:8080"),
        ("https://a.com:80/", "a.com:80"),
        ("http://[::1]:81/", "[::1]:81"),
    ],
)
def test_host_header(url: str, host_header: str) -> None:
    assert parse_url(url).host_header == host_header
