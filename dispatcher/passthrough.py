"""What passes between an HTTP caller and a guest, for the invoke and jobs routes alike:
request headers (minus connection-level ones), the body (read up to the function's limit)
and the guest's response headers; plus the cap on request headers every route applies.

They work on the raw ASGI values (header pairs, `receive`), so the invoke handler needs
no Starlette request object, and the jobs route passes its request's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from flotilla.envelope import Headers
from flotilla.errors import BodyTooLarge, HeadersTooLarge

INVOCATION_HEADER = "flotilla-invocation-id"
CALLBACK_HEADER = "flotilla-callback-url"
# Connection-level headers are not the caller's to pass on, nor the guest's to set.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
    }
)
# uvicorn (httptools) parses headers without a limit; far past any real caller, answer 431.
MAX_HEADERS = 200
MAX_HEADER_BYTES = 64 * 1024
_SKIPPED_REQUEST_HEADERS = HOP_BY_HOP | {CALLBACK_HEADER}
_SKIPPED_REPLY_HEADERS = HOP_BY_HOP | {INVOCATION_HEADER}

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
RawHeaders = Iterable[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def check_header_size(raw: RawHeaders) -> None:
    """HeadersTooLarge (431) past MAX_HEADERS headers or MAX_HEADER_BYTES bytes of them."""
    raw = raw if isinstance(raw, (list, tuple)) else list(raw)
    if len(raw) > MAX_HEADERS or sum(len(k) + len(v) for k, v in raw) > MAX_HEADER_BYTES:
        raise HeadersTooLarge(
            f"at most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all"
        )


def request_headers(raw: RawHeaders) -> tuple[str | None, str | None, Headers]:
    """(Authorization, Content-Length, the headers the guest gets) in one pass.

    The first Authorization and Content-Length count; the guest gets every header but the
    hop-by-hop ones and the job callback URL, in order, names as the caller spelled them.
    """
    authorization = declared = None
    guest = []
    for k, v in raw:
        key = k.decode("latin-1")
        lower = key.lower()
        if lower == "authorization":
            if authorization is None:
                authorization = v.decode("latin-1")
        elif lower == "content-length" and declared is None:
            declared = v.decode("latin-1")
        if lower not in _SKIPPED_REQUEST_HEADERS:
            guest.append((key, v.decode("latin-1")))
    return authorization, declared, tuple(guest)


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body; BodyTooLarge (413) as soon as the declared length or the bytes
    received exceed `limit`; ClientGone when the client disconnected first."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the function's limit of {limit}")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body exceeds the function's limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def response_headers(headers: Headers, body_size: int) -> list[tuple[bytes, bytes]]:
    """The guest's response headers as sent: hop-by-hop ones and any invocation id it set
    dropped, Content-Length added."""
    out = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in headers
        if k.lower() not in _SKIPPED_REPLY_HEADERS
    ]
    out.append((b"content-length", str(body_size).encode()))
    return out
