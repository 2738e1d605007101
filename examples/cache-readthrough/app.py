"""Read-through cache in front of an HTTP upstream.

The upstream URL comes from the `x-upstream-url` request header, else the `UPSTREAM_URL`
env variable. The cache key is the URL. On a hit the cached body is returned; on a miss
the upstream is fetched with `http.invoke` and, if it answered 200, its body is cached for
`CACHE_TTL_MS` (default 60000). The `x-cache` response header says `hit`, `miss`, or
`bypass` (cache unavailable: the upstream is still served).

Upstream failures become 502 (504 on timeout) with a plain-text message.
"""

import os

import wit_world
from componentize_py_types import Err
from wit_world.imports import cache, http, log, types

MAX_CACHED_BYTES = 1024 * 1024  # the cache host refuses values over 1 MiB


def text(status: int, message: str, cache_state: str = "bypass") -> types.Response:
    """A plain-text response."""
    headers = [("content-type", "text/plain; charset=utf-8"), ("x-cache", cache_state)]
    return types.Response(status=status, headers=headers, body=message.encode())


def header(request: types.Request, name: str) -> str | None:
    """The first value of header `name` (case-insensitive), or None."""
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


class WitWorld(wit_world.WitWorld):
    """The function's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Serve the upstream's body from the cache, filling it on a miss."""
        url = header(request, "x-upstream-url") or os.environ.get("UPSTREAM_URL", "")
        if not url:
            return text(400, "no upstream: send x-upstream-url or set UPSTREAM_URL\n")
        ttl_ms = int(os.environ.get("CACHE_TTL_MS", "60000"))
        key = "readthrough:" + url

        cache_ok = True
        try:
            cached = cache.get(key)
        except Err as exc:
            log.log(log.Level.WARN, f"cache get failed: {exc.value}")
            cached, cache_ok = None, False
        if cached is not None:
            return types.Response(status=200, headers=[("x-cache", "hit")], body=cached)

        try:
            upstream = http.invoke(
                http.Request(method="GET", url=url, headers=[], body=b"", timeout_ms=None)
            )
        except Err as exc:
            error = exc.value
            if isinstance(error, http.Error_Timeout):
                return text(504, f"upstream {url} timed out\n")
            detail = getattr(error, "value", "")
            return text(502, f"upstream {url} failed: {type(error).__name__[6:]} {detail}\n")

        state = "miss" if cache_ok else "bypass"
        if cache_ok and upstream.status == 200 and len(upstream.body) <= MAX_CACHED_BYTES:
            try:
                cache.set(key, upstream.body, ttl_ms)
            except Err as exc:
                log.log(log.Level.WARN, f"cache set failed: {exc.value}")
        content_type = [(k, v) for k, v in upstream.headers if k.lower() == "content-type"]
        return types.Response(
            status=upstream.status, headers=content_type + [("x-cache", state)], body=upstream.body
        )
