"""What passes between an HTTP caller and a guest, for the invoke and jobs routes alike:
request headers (minus connection-level ones), the body (read up to the function's limit),
the query (minus Flotilla's own parameters), the method and sub-path a job asks for, and the
guest's response headers; plus the cap on request headers every route applies.

They work on the raw ASGI values (header pairs, `receive`), so the invoke handler needs
no Starlette request object, and the jobs route passes its request's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote

from flotilla.envelope import Headers
from flotilla.errors import BodyTooLarge, HeadersTooLarge
from flotilla.invoker import check_target

INVOCATION_HEADER = "flotilla-invocation-id"
CALLBACK_HEADER = "flotilla-callback-url"
# A job's method and sub-path (`POST .../jobs` carries POST and "/" unless these say else).
METHOD_HEADER = "flotilla-method"
PATH_HEADER = "flotilla-path"
# Query parameters that are Flotilla's, per route, never passed on to the guest.
INVOKE_PARAMS = frozenset({"version"})
JOB_PARAMS = frozenset({"version", "callback_url", "delay_ms", "run_at"})
# What a sub-path keeps as it is; anything else (bytes past ASCII, controls, spaces) is
# percent-encoded, so the guest gets printable ASCII whatever the client sent.
_PATH_SAFE = "!$&'()*+,;=:@/-._~%"
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
_SKIPPED_REQUEST_HEADERS = HOP_BY_HOP | {CALLBACK_HEADER, METHOD_HEADER, PATH_HEADER}
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
    hop-by-hop ones and the job's callback URL, method and path, in order, names as the
    caller spelled them.
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


def response_headers(
    headers: Headers, body_size: int, *, head: bool = False
) -> list[tuple[bytes, bytes]]:
    """The guest's response headers as sent: hop-by-hop ones and any invocation id it set
    dropped, Content-Length added (for HEAD, the guest's own when it returned no body: the
    length a GET would have had is the guest's to say)."""
    out = []
    length = None
    for k, v in headers:
        lower = k.lower()
        if lower not in _SKIPPED_REPLY_HEADERS:
            out.append((k.encode("latin-1"), v.encode("latin-1")))
        elif head and lower == "content-length" and length is None and v.strip().isdigit():
            length = v.strip()
    if length is None or body_size:
        length = str(body_size)
    out.append((b"content-length", length.encode()))
    return out


def guest_query(query_string: bytes, skip: Collection[str]) -> tuple[Headers, str | None]:
    """(the decoded query the guest gets, the last `version`), in one pass.

    Parameters in order, repeats and blank values kept, `+` and percent escapes decoded
    (as Starlette's `query_params`, which reads the bytes as latin-1); those named in
    `skip` are Flotilla's and left out.
    """
    if not query_string:
        return (), None
    version = None
    guest = []
    for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if k == "version":
            version = v  # the last one, as Starlette's query_params.get
        if k not in skip:
            guest.append((k, v))
    return tuple(guest), version


def raw_sub_path(scope: MutableMapping[str, Any], depth: int, decoded: str) -> str:
    """The sub-path as the client sent it (percent-encoding kept), "/" when none.

    `depth` is how many path segments (after the root path) name the route, e.g. 4 for
    `/v1/functions/{name}/invoke`; `decoded` is the sub-path the router saw, used when the
    server gives no `raw_path` or the raw path does not split as the decoded one did.
    """
    if not decoded or decoded == "/":
        return "/"
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        raw = raw.partition(b"?")[0]  # some servers leave the query on it
        root = scope.get("root_path", "").encode("latin-1")
        if root and raw.startswith(root):
            raw = raw[len(root):]
        parts = raw.split(b"/", depth + 1)
        # Only when the route's segments carried no encoded "/" do the two split alike.
        if len(parts) == depth + 2 and parts[0] == b"" and not any(
            b"%2f" in part.lower() for part in parts[1:-1]
        ):
            return quote(b"/" + parts[-1], safe=_PATH_SAFE)
    # Decoded: a "%" in it is a character, not an escape.
    return quote(decoded, safe=_PATH_SAFE.replace("%", ""))


def job_target(headers: RawHeaders) -> tuple[str, str]:
    """A job's (method, path): the `flotilla-method` (any case) and `flotilla-path` headers,
    else POST and "/". InvalidRequest (422) for a method the invoke route does not take or
    a path not starting with "/"; the path is percent-encoded where it is not printable
    ASCII (escapes it holds are kept, as in a request's path)."""
    method, path = "POST", "/"
    for k, v in headers:
        lower = k.lower()
        if lower == METHOD_HEADER.encode():
            method = v.decode("latin-1").strip().upper()
        elif lower == PATH_HEADER.encode():
            path = quote(v.decode("latin-1").strip(), safe=_PATH_SAFE)
    check_target(method, path, method_name=METHOD_HEADER, path_name=PATH_HEADER)
    return method, path
