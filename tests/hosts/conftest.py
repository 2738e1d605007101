"""Fixtures of the host interface tests: invocation contexts, a local HTTP server, a TCP proxy."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from flotilla.config import FunctionConfig
from flotilla.hosts.base import InvocationContext

MakeCtx = Callable[..., InvocationContext]


@pytest.fixture
def make_ctx() -> MakeCtx:
    """Build an InvocationContext for a config made from keyword arguments."""

    def make(*, seconds: float = 10.0, name: str = "fn", **config: Any) -> InvocationContext:
        return InvocationContext(
            config=FunctionConfig(name=name, **config),
            invocation_id=f"inv-{time.monotonic_ns()}",
            deadline=time.monotonic() + seconds,
        )

    return make


class RoutesHandler(BaseHTTPRequestHandler):
    """Routes: /echo, /slow?ms=, /trickle?n=&ms=, /big?n=, /chunked?n=, /redirect, /status/N."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs add 40 ms per keep-alive request
    server: RoutesServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._route()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((url.path, self.client_address[1], self.headers.get("Host")))
        if url.path == "/echo":
            payload = {
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }
            self._send(200, json.dumps(payload).encode(), [("X-Multi", "1"), ("X-Multi", "2")])
        elif url.path == "/slow":
            self.server.stop.wait(int(query.get("ms", "2000")) / 1000)
            self._send(200, b"late")
        elif url.path == "/trickle":
            count = int(query.get("n", "50"))
            self.send_response(200)
            self.send_header("Content-Length", str(count))
            self.end_headers()
            for _ in range(count):
                if self.server.stop.wait(int(query.get("ms", "100")) / 1000):
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
        elif url.path == "/big":
            self._send(200, b"b" * int(query["n"]))
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            remaining = int(query["n"])
            try:
                while remaining:
                    piece = min(remaining, 4096)
                    self.wfile.write(b"%x\r\n%s\r\n" % (piece, b"c" * piece))
                    remaining -= piece
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                return
        elif url.path == "/redirect":
            self._send(302, b"", [("Location", "http://evil.example/steal")])
        elif url.path.startswith("/status/"):
            self._send(int(url.path.rsplit("/", 1)[1]), b"")
        else:
            self._send(404, b"no such route")

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass


class RoutesServer(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, int, str | None]]
    stop: threading.Event


@pytest.fixture(scope="session")
def http_server() -> Iterator[RoutesServer]:
    """A local HTTP/1.1 keep-alive server on 127.0.0.1 with test routes; `.seen` logs requests."""
    server = RoutesServer(("127.0.0.1", 0), RoutesHandler)
    server.seen = []
    server.stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


class TcpProxy:
    """Forwards a local port to a target; `stop()` kills it and its connections, `start()` revives."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            if self._listener is not None:
                # close() alone leaves a thread blocked in accept() accepting; shutdown wakes it.
                try:
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the real Redis, to take it away and bring it back."""
    parts = urlsplit(redis_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    proxy.start()
    yield proxy
    proxy.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
