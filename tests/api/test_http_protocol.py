"""The dispatcher's uvicorn protocol (dispatcher.service.http_protocol): one send() per
response, keep-alive and Connection: close answered whole."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from dispatcher.service import http_protocol


async def hello(request: Any) -> Response:
    """A small fixed response."""
    return Response(b"hello", media_type="text/plain")


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An app served with http_protocol(); the server's raw socket writes are recorded."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    writes: list[bytes] = []
    transport_class: Any = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    raw = transport_class.write

    def record(self: Any, data: bytes) -> None:
        if self.get_extra_info("sockname")[1] == port:  # the server's side only
            writes.append(bytes(data))
        raw(self, data)

    monkeypatch.setattr(transport_class, "write", record)
    app = Starlette(routes=[Route("/", hello)])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                            log_config=None, http=http_protocol(), loop="asyncio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, writes
    finally:
        server.should_exit = True
        await task


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


async def test_each_response_leaves_in_one_write(served: tuple[int, list[bytes]]) -> None:
    # Given a keep-alive connection to the served app
    port, writes = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):
            # When a request is sent
            writes.clear()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await _read_response(reader)
            # Then the whole response arrives, head and body from a single socket write
            assert response.startswith(b"HTTP/1.1 200")
            assert response.endswith(b"\r\n\r\nhello")
            assert writes == [response]
        # and Connection: close is answered whole before the connection closes
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = await reader.read()
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"hello")
    finally:
        writer.close()
