"""The `http` host interface: outbound requests limited to the function's `allowed_hosts`.

Each request goes through these steps, in order (the rules are in `flotilla.hosts.policy`):

1. budget: timeout = min(timeout-ms, the invocation's remaining time), for connect, each
   read and the whole body; nothing left is `timeout`;
2. parse the URL once (`invalid-request` for anything malformed or ambiguous, including
   userinfo) and check the method, headers (no CR/LF/NUL, no hop-by-hop headers such as
   Connection or Transfer-Encoding) and body size (at most `max_body_bytes`); Host and
   Content-Length are always set by the host from the URL and body (guest values dropped);
3. match host:port against `allowed_hosts`, else `denied`;
4. resolve the name here and check every address (link-local, metadata, ... are `denied`);
5. connect to the address just checked, sending the name as Host header, TLS SNI and the
   certificate name: a DNS answer that changes between check and connect (rebinding) is
   never used;
6. never follow redirects: a 3xx goes back to the guest, which may call again (and pass the
   allow-list again);
7. stream the body without decoding it (Content-Encoding is the guest's business) and stop
   at the function's `max_body_bytes`: one byte more is `too-large`; the response headers
   go back as received, minus the connection's framing (Transfer-Encoding, Connection,
   Keep-Alive).

Outbound requests never go through a proxy (HTTP_PROXY and friends are ignored).

One urllib3 PoolManager (thread-safe, keep-alive, pools keyed by address, port and name) and
one Resolver (a few lookup threads and a short answer cache) serve every invocation of the
process.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)

from flotilla.hosts import interface as wit
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.observe import Meter, Observe
from flotilla.hosts.policy import (
    HOST_SET_HEADERS,
    Target,
    check_headers,
    check_method,
    forbidden_address,
    is_internal_pattern,
    match_host,
    parse_url,
)
from flotilla.hosts.resolver import DEFAULT_TTL, ResolveFn, Resolver, system_resolve
from flotilla.sandbox import abi

HttpResult = tuple[int, list[tuple[str, str]], bytes]

USER_AGENT = "flotilla-function/0.1"
READ_CHUNK = 64 * 1024
MAX_ADDRESSES_TRIED = 3
# Framing of the upstream connection, not of the body the guest gets (already de-chunked).
HOP_BY_HOP_RESPONSE_HEADERS = frozenset({"transfer-encoding", "connection", "keep-alive"})


class HttpHost:
    """The guest's outbound HTTP calls on one shared keep-alive pool; thread-safe."""

    def __init__(
        self,
        *,
        pool_manager: urllib3.PoolManager | None = None,
        resolve: ResolveFn = system_resolve,
        resolver_threads: int = 4,
        dns_ttl: float = DEFAULT_TTL,
        pool_size: int = 8,
        observe: Observe | None = None,
    ) -> None:
        self._pools = pool_manager or urllib3.PoolManager(
            num_pools=64, maxsize=pool_size, block=False, retries=False
        )
        self._resolver = Resolver(resolve, threads=resolver_threads, ttl=dns_ttl)
        self._meter = Meter("http", observe)

    def close(self) -> None:
        """Close pooled connections and stop the resolver threads."""
        self._pools.clear()
        self._resolver.close()

    def invoke(
        self,
        ctx: InvocationContext,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout_ms: int | None,
    ) -> HttpResult:
        """Send one request and return (status, headers, body); HostError on failure."""
        with self._meter.measure("invoke"):
            deadline = ctx.deadline
            if timeout_ms is not None:
                deadline = min(deadline, time.monotonic() + timeout_ms / 1000)
            if deadline <= time.monotonic():
                raise HostError("timeout")
            target = self._check_request(ctx, method, url, headers, body)
            pattern = match_host(target.host, target.port, target.scheme, ctx.config.allowed_hosts)
            if pattern is None:
                where = target.authority
                raise HostError("denied", f"{where} is not in the function's allowed_hosts")
            addresses = self._addresses(target, deadline)
            allow_internal = is_internal_pattern(pattern)
            for address in addresses:
                reason = forbidden_address(address, allow_internal=allow_internal)
                if reason is not None:
                    raise HostError("denied", f"{target.host} resolves to {address}: {reason}")
            send_headers = _request_headers(target, headers)
            last: HostError | None = None
            for address in addresses[:MAX_ADDRESSES_TRIED]:
                try:
                    return self._send(ctx, target, address, method, send_headers, body, deadline)
                except _ConnectFailed as exc:
                    last = exc.error  # nothing was sent: the next address is safe to try
            assert last is not None
            raise last

    def _check_request(
        self,
        ctx: InvocationContext,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Target:
        try:
            target = parse_url(url)
        except ValueError as exc:
            raise HostError("invalid-request", f"bad URL: {exc}") from None
        problem = check_method(method) or check_headers(headers)
        if problem is not None:
            raise HostError("invalid-request", problem)
        if len(body) > ctx.config.max_body_bytes:
            raise HostError(
                "invalid-request",
                f"body is {len(body)} bytes, over max_body_bytes {ctx.config.max_body_bytes}",
            )
        return target

    def _addresses(self, target: Target, deadline: float) -> list[str]:
        if target.is_ip:
            return [target.host]
        try:
            addresses = self._resolver.addresses(
                target.host, target.port, deadline - time.monotonic()
            )
        except TimeoutError:
            raise HostError("timeout") from None
        except (OSError, UnicodeError) as exc:
            raise HostError("connection", f"cannot resolve {target.host}: {exc}") from None
        return addresses

    def _send(
        self,
        ctx: InvocationContext,
        target: Target,
        address: str,
        method: str,
        headers: urllib3.HTTPHeaderDict,
        body: bytes,
        deadline: float,
    ) -> HttpResult:
        pool_kwargs = {}
        if target.scheme == "https" and not target.is_ip:
            pool_kwargs = {"server_hostname": target.host, "assert_hostname": target.host}
        pool = self._pools.connection_from_host(
            address, target.port, target.scheme, pool_kwargs=pool_kwargs
        )
        budget = _left(deadline)
        try:
            response = pool.urlopen(
                method.upper(),
                target.path,
                body=body or None,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=budget, read=budget),
                preload_content=False,
                decode_content=False,
            )
        except Exception as exc:  # noqa: BLE001 - mapped to the WIT cases below
            error = _map_error(exc, target)
            if isinstance(_unwrap(exc), NewConnectionError):
                raise _ConnectFailed(error) from None
            raise error from None
        return self._read(ctx, response, target, deadline)

    def _read(
        self,
        ctx: InvocationContext,
        response: urllib3.BaseHTTPResponse,
        target: Target,
        deadline: float,
    ) -> HttpResult:
        limit = ctx.config.max_body_bytes
        complete = False
        try:
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise HostError("too-large")
            data = bytearray()
            while True:
                _set_read_timeout(response, deadline)
                # read1: one socket read at most, so the deadline is checked between reads
                # (read(n) would loop until n bytes arrive).
                chunk = response.read1(min(READ_CHUNK, limit + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
                if len(data) > limit:
                    raise HostError("too-large")
                if time.monotonic() >= deadline:
                    raise HostError("timeout")
            complete = True
            headers = [
                (str(k), str(v))
                for k, v in response.headers.items()
                if k.lower() not in HOP_BY_HOP_RESPONSE_HEADERS
            ]
            return response.status, headers, bytes(data)
        except HostError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to the WIT cases below
            raise _map_error(exc, target) from None
        finally:
            if not complete:
                # Unread bytes would poison the next request on this keep-alive connection.
                response.close()
            response.release_conn()


class _ConnectFailed(Exception):
    """A connection could not be made to one address; nothing was sent."""

    def __init__(self, error: HostError) -> None:
        super().__init__(str(error))
        self.error = error


def _request_headers(target: Target, headers: list[tuple[str, str]]) -> urllib3.HTTPHeaderDict:
    out = urllib3.HTTPHeaderDict()
    out["Host"] = target.host_header
    for name, value in headers:
        if name.lower() not in HOST_SET_HEADERS:
            out.add(name, value)
    if "user-agent" not in out:
        out["User-Agent"] = USER_AGENT
    return out


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise HostError("timeout")
    return left


def _set_read_timeout(response: urllib3.BaseHTTPResponse, deadline: float) -> None:
    # The read timeout given to urlopen applies per socket read; shrink it so a slow trickle
    # of bytes cannot outlive the deadline.
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(_left(deadline))


def _unwrap(exc: BaseException) -> BaseException:
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        return exc.reason
    return exc


def _map_error(exc: BaseException, target: Target) -> HostError:
    exc = _unwrap(exc)
    where = target.authority
    if isinstance(exc, NewConnectionError):
        return HostError("connection", f"cannot connect to {where}: {_reason(exc)}")
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError, TimeoutError, socket.timeout)):
        return HostError("timeout")
    if isinstance(exc, (HTTPError, OSError)):
        return HostError("connection", f"{where}: {_reason(exc)}")
    return HostError("connection", f"{where}: unexpected {type(exc).__name__}: {exc}")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    # urllib3 prefixes its messages with the connection object's repr; keep the useful part.
    return text.split(": ", 1)[1] if text.startswith("<") and ": " in text else text


# ---- the WIT interface ----------------------------------------------------------------------


def _invoke(host: HttpHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    method, url, headers, body, timeout = abi.get_fields(a[0])
    t = abi.get_option(timeout)
    status, out_headers, out_body = host.invoke(
        ctx,
        abi.get_string(method),
        abi.get_string(url),
        abi.get_headers(headers),
        abi.get_bytes(body),
        None if t is None else abi.get_u32(t),
    )

    def put_response(val: abi.Val) -> None:
        s, h, b = abi.start_record(val, (b"status", b"headers", b"body"))
        abi.put_u16(s, int(status))
        abi.put_headers(h, list(out_headers))
        abi.put_bytes(b, out_body)

    return wit.ok(put_response)


INTERFACE = wit.Interface(
    "http",
    (wit.HostFunc("invoke", _invoke),),
    errors={
        "denied": True,
        "timeout": False,
        "connection": True,
        "invalid-request": True,
        "too-large": False,
    },
    fallback="connection",
    deadline=("timeout", None),
    client="http",
)
