"""Rate-limited token vending.

Each caller (the `x-caller` header, default `anonymous`) may get `RATE_LIMIT` tokens
(default 10) per fixed window of `RATE_WINDOW_MS` (default 60000). Counting uses
`cache.increment` on a key per caller and window, created with the window as its TTL.
Over the limit the answer is 429 with `retry-after`; otherwise 200 with a JSON body
`{"token": ..., "remaining": n}`. The token is also stored in the cache for
`TOKEN_TTL_MS` (default 300000) so another function can verify it. When the cache is
unavailable no token is vended (503): failing closed keeps the limit meaningful.
"""

import json
import math
import os
import secrets
import time

import wit_world
from componentize_py_types import Err
from wit_world.imports import cache, types


def reply(status: int, payload: dict, headers: list | None = None) -> types.Response:
    """A JSON response."""
    body = json.dumps(payload).encode()
    return types.Response(
        status=status, headers=[("content-type", "application/json")] + (headers or []), body=body
    )


def caller_of(request: types.Request) -> str:
    """The caller key: the `x-caller` header, or `anonymous`."""
    for key, value in request.headers:
        if key.lower() == "x-caller" and value:
            return value[:200]
    return "anonymous"


class WitWorld(wit_world.WitWorld):
    """The function's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Vend a token unless the caller is over its limit in the current window."""
        limit = int(os.environ.get("RATE_LIMIT", "10"))
        window_ms = int(os.environ.get("RATE_WINDOW_MS", "60000"))
        token_ttl_ms = int(os.environ.get("TOKEN_TTL_MS", "300000"))
        caller = caller_of(request)
        now_ms = int(time.time() * 1000)
        window = now_ms // window_ms
        try:
            count = cache.increment(f"rate:{caller}:{window}", 1, window_ms)
        except Err as exc:
            return reply(503, {"error": f"rate limiter unavailable: {exc.value}"})
        if count > limit:
            retry_after_s = math.ceil(((window + 1) * window_ms - now_ms) / 1000)
            return reply(
                429,
                {"error": "rate limit exceeded", "limit": limit, "window_ms": window_ms},
                [("retry-after", str(max(1, retry_after_s)))],
            )
        token = secrets.token_urlsafe(32)
        try:
            cache.set(f"token:{token}", caller.encode(), token_ttl_ms)
        except Err as exc:
            return reply(503, {"error": f"token store unavailable: {exc.value}"})
        return reply(
            200, {"token": token, "remaining": limit - count, "expires_in_ms": token_ttl_ms}
        )
