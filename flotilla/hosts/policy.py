"""Pure policy functions of the host interfaces: URL and host checks, address checks, limits.

Nothing here does I/O; every function is table-tested in tests/hosts/test_policy.py.

Outbound HTTP rules (what `allowed_hosts` means):

- Only `http` and `https` URLs; no userinfo (`http://user@host/`), no fragments sent, only
  printable ASCII (no spaces, backslashes or control characters: percent-encode them).
- The host is a DNS name of `[a-z0-9.-]` (case-insensitive, one trailing dot ignored), a
  canonical dotted-quad IPv4 address, or a bracketed IPv6 address. Numeric shorthands that the
  C resolver would also accept (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`) are refused, so
  the host matched against the allow-list is the host connected to.
- A pattern `example.com` matches that host only; `*.example.com` matches any subdomain at
  any depth (`a.example.com`, `a.b.example.com`) but not `example.com` itself.
- A pattern without a port allows only the scheme's default port (80 for http, 443 for
  https); `example.com:8443` allows exactly port 8443, with either scheme.
- The name is resolved by the host and every resolved address is checked: link-local
  (169.254.0.0/16, fe80::/10), cloud metadata (169.254.169.254, fd00:ec2::254,
  100.100.100.200), unspecified / "this network" (0.0.0.0/8, ::), multicast, broadcast and
  reserved addresses are always refused, also inside IPv4-mapped, IPv4-compatible, 6to4 and
  NAT64 IPv6 forms. Internal addresses (loopback 127.0.0.0/8 and ::1, private 10/8,
  172.16/12, 192.168/16, fc00::/7, shared 100.64/10 and every other non-global range) are
  refused unless the pattern that allowed the host is itself internal: `localhost` or an IP
  literal (`127.0.0.1:9000`, `10.0.0.5`). An allowed public name that resolves to an internal
  address (DNS rebinding, a stale record) must not reach the worker's own services or the
  private network behind it; an operator who wants an internal service lists its address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

MAX_URL_BYTES = 8 * 1024
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024
# Set by the host from the request itself; a guest value would be ignored or, worse,
# desynchronise a keep-alive connection shared with other functions (request smuggling).
HOST_SET_HEADERS = frozenset({"host", "content-length"})
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-connection",
        "trailer",
    }
)

MAX_CACHE_KEY_BYTES = 1024
MAX_CACHE_VALUE_BYTES = 1024 * 1024
MAX_CACHE_TTL_MS = 10 * 365 * 86_400_000  # ten years; 0 means no expiry
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

MAX_OBJECT_KEY_BYTES = 1024

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_URL_CHARS_RE = re.compile(r"^[\x21-\x7e]+$")

_METADATA = (
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """Where an outbound request goes, parsed once and used for both the checks and the call."""

    scheme: str  # http | https
    host: str  # lower-case name, dotted-quad IPv4 or unbracketed IPv6
    port: int
    path: str  # path and query, never empty

    @property
    def is_ip(self) -> bool:
        """True when the host is an IP literal (no resolution, no SNI)."""
        return _ip_or_none(self.host) is not None

    @property
    def authority(self) -> str:
        """host:port, with the host bracketed when it is IPv6 (for messages)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        """The Host header value: host (bracketed for IPv6), with the port when not default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Parse and normalise an outbound URL; ValueError says what is wrong with it."""
    if not url:
        raise ValueError("URL is empty")
    if len(url.encode("utf-8", "replace")) > MAX_URL_BYTES:
        raise ValueError(f"URL is longer than {MAX_URL_BYTES} bytes")
    if not _URL_CHARS_RE.match(url) or "\\" in url:
        raise ValueError("URL must be printable ASCII without spaces or backslashes")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme {parts.scheme!r} is not http or https")
    netloc = parts.netloc
    if not netloc:
        raise ValueError("URL has no host")
    if "@" in netloc:
        raise ValueError("credentials in the URL are not allowed (send an Authorization header)")
    host, port = _split_host_port(netloc, DEFAULT_PORTS[scheme])
    path = parts.path or "/"
    if not path.startswith("/"):
        raise ValueError("URL path must start with '/'")
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme, host, port, path)


def _split_host_port(netloc: str, default_port: int) -> tuple[str, int]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 address in URL")
        literal, rest = netloc[1:end], netloc[end + 1 :]
        if "%" in literal:
            raise ValueError("IPv6 zone identifiers are not allowed")
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise ValueError(f"{literal!r} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise ValueError("unexpected characters after the IPv6 address")
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text_raw = netloc.partition(":")
        port_text = port_text_raw if sep else None
        host = _check_name(name)
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number in 1..65535")
    return host, int(port_text)


def _check_name(name: str) -> str:
    host = name.lower()
    host = host.removesuffix(".")
    if not host or len(host) > 253:
        raise ValueError("host name is empty or longer than 253 characters")
    labels = host.split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError(f"{name!r} is not a valid host name (use punycode for non-ASCII names)")
    if labels[-1][0].isdigit():
        # Only the canonical dotted quad: inet_aton would also read 127.1, 0x7f.1, 2130706433.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"{name!r} is neither a host name nor a dotted-quad IPv4") from None
    return host


def pattern_matches(pattern: str, host: str, port: int, scheme: str) -> bool:
    """True when one `allowed_hosts` pattern allows host:port for this scheme."""
    name, sep, port_text = pattern.lower().rpartition(":")
    if not sep:
        name, allowed_port = pattern.lower(), DEFAULT_PORTS.get(scheme)
    else:
        allowed_port = int(port_text)
    if port != allowed_port:
        return False
    if name.startswith("*."):
        return host.endswith(name[1:]) and len(host) > len(name) - 1
    return host == name


def match_host(host: str, port: int, scheme: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that allows host:port for this scheme, or None."""
    for pattern in patterns:
        if pattern_matches(pattern, host, port, scheme):
            return pattern
    return None


def is_internal_pattern(pattern: str) -> bool:
    """True when a pattern names an internal target explicitly: `localhost` or an IP literal."""
    name = pattern.lower().partition(":")[0]
    return name == "localhost" or _ip_or_none(name) is not None


def forbidden_address(address: str, *, allow_internal: bool = False) -> str | None:
    """Why connecting to this resolved address is refused, or None when it is fine."""
    ip = _ip_or_none(address.split("%", 1)[0])
    if ip is None:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _METADATA:
            return "cloud metadata address"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = forbidden_address(str(embedded), allow_internal=allow_internal)
            return f"{reason} (inside {ip})" if reason else None
    if ip in _METADATA:
        return "cloud metadata address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    if ip.is_reserved and not ip.is_loopback or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "reserved address"  # (::1 sits inside the reserved ::/8)
    if ip.is_global or allow_internal:
        return None
    kind = "loopback" if ip.is_loopback else "private"
    return f"{kind} address (only a pattern naming it, 'localhost' or an IP literal, allows it)"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def check_method(method: str) -> str | None:
    """Why an HTTP method is invalid, or None (an RFC 9110 token, at most 32 characters)."""
    if not method or len(method) > 32 or not _TOKEN_RE.match(method):
        return f"method {method[:40]!r} is not an HTTP token"
    if method.upper() == "CONNECT":
        return "CONNECT is not allowed"
    return None


def check_headers(headers: list[tuple[str, str]]) -> str | None:
    """Why request headers are invalid, or None: tokens for names, no CR/LF/NUL in values."""
    if len(headers) > MAX_HEADERS:
        return f"more than {MAX_HEADERS} headers"
    size = 0
    for name, value in headers:
        if not _TOKEN_RE.match(name):
            return f"header name {name[:40]!r} is not an HTTP token"
        if any(c in value for c in "\r\n\x00"):
            return f"header {name} contains CR, LF or NUL"
        if not value.isascii() and not _latin1(value):
            return f"header {name} is not Latin-1 text (percent- or base64-encode it)"
        if name.lower() in FORBIDDEN_HEADERS:
            return f"header {name} is managed by the connection and cannot be set"
        size += len(name) + len(value.encode("utf-8", "replace")) + 4
    if size > MAX_HEADER_BYTES:
        return f"headers are larger than {MAX_HEADER_BYTES} bytes"
    return None


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def cache_key(namespace: str, key: str) -> str:
    """The Redis key of a guest's cache key: `fn:{namespace}:{key}`."""
    return f"fn:{namespace}:{key}"


def check_cache_key(key: str) -> str | None:
    """Why a cache key is invalid, or None (non-empty, at most 1 KiB of UTF-8)."""
    if not key:
        return "key is empty"
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_CACHE_KEY_BYTES:
        return f"key is {size} bytes, over the {MAX_CACHE_KEY_BYTES}-byte limit"
    return None


def check_cache_value(value: bytes) -> str | None:
    """Why a cache value is invalid, or None (at most 1 MiB)."""
    if len(value) > MAX_CACHE_VALUE_BYTES:
        return f"value is {len(value)} bytes, over the {MAX_CACHE_VALUE_BYTES}-byte limit"
    return None


def check_ttl_ms(ttl_ms: int) -> str | None:
    """Why a TTL is invalid, or None (0 for no expiry, else up to ten years)."""
    if not 0 <= ttl_ms <= MAX_CACHE_TTL_MS:
        return f"ttl-ms {ttl_ms} is out of range 0..{MAX_CACHE_TTL_MS}"
    return None


def check_object_key(key: str) -> str | None:
    """Why an S3 object key is invalid, or None (1..1024 bytes of UTF-8)."""
    if not key:
        return "key is empty"
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_OBJECT_KEY_BYTES:
        return f"key is {size} bytes, over the {MAX_OBJECT_KEY_BYTES}-byte limit"
    return None
