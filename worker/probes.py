"""The worker's small HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz`.

- `/healthz`: 200 while the event loop answers (liveness: a wedged loop gets restarted);
- `/readyz`: 200 while the consumer is consuming and Redis answers, 503 otherwise (starting,
  reconnecting, draining, Redis down), so a rollout waits for a worker that can take work;
- `/metrics`: the worker's own `CollectorRegistry` in the text exposition format.

A plain asyncio server: one GET per connection, no framework on the worker's hot loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192


class ProbeServer:
    """Serves the three endpoints on `host:port` (port 0: the OS picks one, see `.port`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool | Awaitable[bool]],
        *,
        host: str = "0.0.0.0",
        port: int = 9102,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen."""
        self._server = await asyncio.start_server(self._on_client, self._host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path`."""
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready = self._ready()
            if inspect.isawaitable(ready):
                ready = await ready
            if ready:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", b"not ready\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        return 404, "text/plain", b"not found\n"

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, _, rest = head[:MAX_REQUEST_BYTES].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method != "GET":
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            else:
                status, ctype, body = await self.respond(path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
