"""A bare wasmtime-py runner for smoke-testing built guests, independent of flotilla/sandbox.

Host interfaces are backed by a `FakeHosts` object (dict cache, dict S3/DynamoDB, canned
HTTP), so the probe's ops can be checked without services. Compiled components are
serialized under the guest cache keyed by the component's sha256 and the wasmtime version,
so only the first run on a machine pays the ~8 s compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime.component import Component, Linker, Record, Variant

from flotilla.settings import WorkerSettings

PACKAGE = "flotilla:function/{}@0.1.1"


@dataclass
class FakeHosts:
    """In-memory hosts; `fail` maps an op like "cache.get" to a Variant error to return."""

    cache: dict[str, bytes] = field(default_factory=dict)
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    items: dict[tuple[str, str], str] = field(default_factory=dict)
    logs: list[tuple[str, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    http_response: tuple[int, list[tuple[str, str]], bytes] = (200, [], b"upstream")
    fail: dict[str, Variant] = field(default_factory=dict)

    def wrap(self, op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A linker function: record the call, fail on request, else run `fn`."""

        def call(_store: Any, *args: Any) -> Any:
            self.calls.append(op)
            if op in self.fail:
                return self.fail[op]
            return fn(*args)

        return call

    def increment(self, key: str, delta: int, _ttl: int) -> int:
        """cache.increment."""
        value = int(self.cache.get(key, b"0")) + delta
        self.cache[key] = str(value).encode()
        return value

    def set_if_equal(self, key: str, expected: bytes, value: bytes, _ttl: int) -> bool:
        """cache.set-if-equal."""
        if self.cache.get(key) != expected:
            return False
        self.cache[key] = value
        return True

    def invoke(self, request: Record) -> Record:
        """http.invoke: the canned response."""
        status, headers, body = self.http_response
        response = Record()
        response.status, response.headers, response.body = status, headers, body
        return response


def define_hosts(linker: Linker, hosts: FakeHosts) -> None:
    """Define every flotilla host interface on `linker` (fakes, no services)."""
    ops: dict[str, dict[str, Callable[..., Any]]] = {
        "cache": {
            "get": lambda k: hosts.cache.get(k),
            "set": lambda k, v, t: hosts.cache.__setitem__(k, v),
            "set-if-absent": lambda k, v, t: hosts.cache.setdefault(k, v) is v,
            "delete": lambda k: hosts.cache.pop(k, None) and None,
            "increment": hosts.increment,
            "set-if-equal": hosts.set_if_equal,
            "set-if-present": lambda k, v, t: k in hosts.cache
            and hosts.cache.__setitem__(k, v) is None,
        },
        "http": {"invoke": hosts.invoke},
        "s3": {
            "get-object": lambda b, k: hosts.objects.get((b, k)),
            "put-object": lambda b, k, body, ct: hosts.objects.__setitem__((b, k), body),
            "delete-object": lambda b, k: hosts.objects.pop((b, k), None) and None,
        },
        "dynamodb": {
            "get-item": lambda t, k: hosts.items.get((t, _pk(k))),
            "put-item": lambda t, item: hosts.items.__setitem__((t, _pk(item)), item),
            "delete-item": lambda t, k: hosts.items.pop((t, _pk(k)), None) and None,
            "put-item-if": lambda t, item, cond, values: hosts.items.setdefault(
                (t, _pk(item)), item) is item,
        },
        "invocation": {
            "method": lambda: "POST",
            "path": lambda: "/",
            "query": list,
            "caller": lambda: None,
            "kind": lambda: "sync",
            "attempt": lambda: 1,
            "remaining-ms": lambda: 1000,
        },
        "secrets": {"get": lambda name: None},
        "topics": {"publish": lambda topic, message: None},
        "spawn": {"job": lambda function, headers, body: "job-1"},
        "log": {"log": lambda level, message: hosts.logs.append((level, message))},
    }
    with linker.root() as root:
        for interface, funcs in ops.items():
            with root.add_instance(PACKAGE.format(interface)) as instance:
                for name, fn in funcs.items():
                    instance.add_func(name, hosts.wrap(f"{interface}.{name}", fn))


def _pk(text: str) -> str:
    return json.dumps(json.loads(text)["pk"], sort_keys=True)


@dataclass
class Reply:
    """What `handle` returned: a response, or an err string."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    err: str | None = None

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


class Runner:
    """Compile a component once; run `handle` in a fresh store per call."""

    def __init__(self, wasm_path: Path, hosts: FakeHosts | None = None) -> None:
        self.hosts = hosts or FakeHosts()
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.cranelift_opt_level = "none"  # ~7% less compile CPU; speed is not tested here
        self.engine = wasmtime.Engine(config)
        self.component = _load(self.engine, wasm_path)
        self.linker = Linker(self.engine)
        self.linker.add_wasip2()
        define_hosts(self.linker, self.hosts)

    def handle(
        self,
        body: bytes | dict[str, Any],
        headers: list[tuple[str, str]] | None = None,
        env: dict[str, str] | None = None,
        memory_limit_mb: int = 256,
    ) -> Reply:
        """Invoke `handle` once in a brand-new store; traps raise wasmtime errors."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        store = wasmtime.Store(self.engine)
        store.set_epoch_deadline(1_000_000)
        store.set_limits(memory_size=memory_limit_mb * 1024 * 1024)
        wasi = wasmtime.WasiConfig()
        wasi.env = list((env or {}).items())
        store.set_wasi(wasi)
        instance = self.linker.instantiate(store, self.component)
        func = instance.get_func(store, "handle")
        assert func is not None
        request = Record()
        setattr(request, "invocation-id", "inv-1")
        setattr(request, "function-name", "probe")
        request.headers = list(headers or [])
        request.body = body
        result = func(store, request)
        func.post_return(store)
        if isinstance(result, str):
            return Reply(err=result)
        return Reply(result.status, list(result.headers), bytes(result.body))


def _load(engine: wasmtime.Engine, wasm_path: Path) -> Component:
    data = wasm_path.read_bytes()
    engine_tag = f"wasmtime-{metadata.version('wasmtime')}-epoch-O0".encode()
    key = hashlib.sha256(data + engine_tag).hexdigest()
    cache = Path(WorkerSettings.from_env().cache_dir) / "test-compiled"
    cache.mkdir(parents=True, exist_ok=True)
    compiled = cache / f"{key}.cwasm"
    if compiled.exists():
        os.utime(compiled)
        return Component.deserialize_file(engine, str(compiled))
    component = Component(engine, data)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(component.serialize())
    os.replace(tmp, compiled)
    _prune(cache)
    return component


def _prune(cache: Path, keep: int = 8) -> None:
    # Each compiled guest is ~70 MB and every edit of a guest makes a new one.
    by_use = sorted(cache.glob("*.cwasm"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in by_use[keep:]:
        stale.unlink(missing_ok=True)
