"""WASI probe guest for the sandbox tests: the request body names the check to run."""

import json
import os
import random
import socket
import sys
import time

import wit_world
from wit_world.imports import types


def _attempt(fn):
    try:
        return {"ok": repr(fn())[:200]}
    except BaseException as exc:  # noqa: BLE001 - the test wants to see what was raised
        return {"error": type(exc).__name__, "detail": str(exc)[:200]}


class WitWorld(wit_world.WitWorld):
    def handle(self, request: types.Request) -> types.Response:
        mode = bytes(request.body).decode()
        out: object = None
        if mode == "env":
            out = dict(os.environ)
        elif mode == "open":
            out = _attempt(lambda: open("/etc/passwd").read())  # noqa: SIM115
        elif mode == "listdir":
            out = _attempt(lambda: os.listdir("/"))
        elif mode == "socket":
            out = _attempt(lambda: socket.create_connection(("127.0.0.1", 6379), timeout=1))
        elif mode == "dns":
            out = _attempt(lambda: socket.getaddrinfo("localhost", 80))
        elif mode == "print":
            print("hello stdout")
            print("hello stderr", file=sys.stderr)
            out = "printed"
        elif mode == "flood":
            chunk = "x" * 1023
            for _ in range(200):
                print(chunk)
            out = "flooded"
        elif mode == "exit":
            sys.exit(3)
        elif mode == "time":
            out = {"time": time.time(), "monotonic": time.monotonic()}
        elif mode == "random":
            out = {"random": random.random(), "urandom": os.urandom(16).hex()}
        elif mode == "stdin":
            out = _attempt(lambda: sys.stdin.read())
        elif mode == "memory":
            hog = []
            while True:
                hog.append(bytearray(16 * 1024 * 1024))
        elif mode == "err":
            raise wit_world.types.Err("nope")
        elif mode == "raise":
            raise ValueError("unexpected")
        else:
            return types.Response(status=200, headers=list(request.headers), body=request.body)
        return types.Response(
            status=200,
            headers=[("content-type", "application/json")],
            body=json.dumps(out).encode(),
        )
