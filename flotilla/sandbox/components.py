"""Accepting components: validation against the `function` world, and the on-disk compile cache.

A component is accepted only if it is a component (not a core module or random bytes),
exports `handle` with the world's exact type, and imports nothing beyond the world's
interfaces and WASI 0.2 as provided by the Linker. Compiled artifacts are serialized to
`<cache_dir>/<engine fingerprint>/<sha256>.cwasm`, written atomically and discarded (then
recompiled) when they do not load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import wasmtime
from wasmtime.component import Component
from wasmtime.component import _types as ct

from flotilla.errors import ArtifactError, ComponentError
from flotilla.sandbox import rawabi
from flotilla.sandbox.linker import PACKAGE, VERSION

log = logging.getLogger(__name__)

WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"
COMPONENT_LAYER = b"\x01\x00"
# Any 0.1.x of the world's interfaces: wasmtime links older 0.1 imports to our definitions.
FLOTILLA_IMPORT_RE = re.compile(
    "^" + re.escape(PACKAGE) + r"/([a-z0-9-]+)@" + re.escape(VERSION.rsplit(".", 1)[0]) + r"\.\d+$"
)
WASI_IMPORT_RE = re.compile(r"^wasi:[a-z0-9-]+/[a-z0-9-]+@0\.2\.\d+$")

HEADERS = "list<tuple<string,string>>"
REQUEST = f"record{{invocation-id:string,function-name:string,headers:{HEADERS},body:list<u8>}}"
RESPONSE = f"record{{status:u16,headers:{HEADERS},body:list<u8>}}"
HANDLE_TYPE = f"func(request:{REQUEST})->result<{RESPONSE},string>"
RAW_HANDLE_TYPE = HANDLE_TYPE.replace("body:list<u8>", "body:string")


def describe(ty: object) -> str:
    """A structural, comparable text form of a component value type."""
    if isinstance(ty, ct.ListType):
        return f"list<{describe(ty.element)}>"
    if isinstance(ty, ct.RecordType):
        return "record{" + ",".join(f"{n}:{describe(t)}" for n, t in ty.fields) + "}"
    if isinstance(ty, ct.TupleType):
        return "tuple<" + ",".join(describe(t) for t in ty.elements) + ">"
    if isinstance(ty, ct.ResultType):
        ok = describe(ty.ok) if ty.ok is not None else "_"
        err = describe(ty.err) if ty.err is not None else "_"
        return f"result<{ok},{err}>"
    if isinstance(ty, ct.OptionType):
        return f"option<{describe(ty.payload)}>"
    if isinstance(ty, ct.VariantType):
        return (
            "variant{"
            + ",".join(n if t is None else f"{n}({describe(t)})" for n, t in ty.cases)
            + "}"
        )
    if isinstance(ty, ct.EnumType):
        return "enum{" + ",".join(ty.names) + "}"
    if isinstance(ty, ct.FuncType):
        params = ",".join(f"{n}:{describe(t)}" for n, t in ty.params)
        result = ty.result
        return f"func({params})" + (f"->{describe(result)}" if result is not None else "")
    return type(ty).__name__.lower()


def check_binary(wasm: bytes) -> None:
    """Reject what is not a component binary before spending time compiling it."""
    if not isinstance(wasm, (bytes, bytearray)) or len(wasm) < 8 or wasm[:4] != WASM_MAGIC:
        raise ComponentError("not a WebAssembly binary (missing the \\0asm header)")
    if wasm[4:8] == CORE_VERSION:
        raise ComponentError(
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 "
            "(e.g. componentize-py, or `wasm-tools component new`)"
        )
    if wasm[6:8] != COMPONENT_LAYER:
        raise ComponentError("unsupported WebAssembly binary layer (not a component)")


def check_world(component: Component, engine: wasmtime.Engine) -> None:
    """Check the exports and imports of a compiled component against the `function` world."""
    ty = component.type
    exports = ty.exports(engine)
    if "handle" not in exports:
        names = ", ".join(sorted(exports)) or "nothing"
        raise ComponentError(
            f"component does not export `handle` (it exports {names}); "
            "target the flotilla:function/function world"
        )
    handle = exports["handle"].ty
    got = describe(handle)
    if got != HANDLE_TYPE:
        raise ComponentError(f"`handle` has the wrong type: expected {HANDLE_TYPE}, got {got}")
    allowed = world_interfaces()
    for name in ty.imports(engine):
        found = FLOTILLA_IMPORT_RE.match(name)
        if (found and found.group(1) in allowed) or WASI_IMPORT_RE.match(name):
            continue
        raise ComponentError(
            f"component imports {name!r}, which Flotilla does not provide "
            f"(allowed: the {PACKAGE}@{VERSION} interfaces, older 0.1.x included, "
            "and wasi:*@0.2.x)"
        )


def world_interfaces() -> frozenset[str]:
    """The names of the world's interfaces a component may import (`types` included)."""
    from flotilla.hosts.registry import INTERFACES

    return frozenset({"types"} | {i.name for i in INTERFACES})


def with_raw_export(wasm: bytes) -> bytes | None:
    """`wasm` with the byte-string export (see rawabi), or None when it cannot be added.

    ComponentError when the component uses the names the export reserves.
    """
    from flotilla.sandbox.guests import GuestAssemblyError, wasm_tools

    try:
        tool = wasm_tools()
    except GuestAssemblyError as exc:
        log.warning("no byte-string export (bodies cross per byte): %s", exc)
        return None
    try:
        return rawabi.add_raw_export(bytes(wasm), tool)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("no byte-string export (bodies cross per byte): %s", exc)
        return None


def has_raw_export(component: Component, engine: wasmtime.Engine) -> bool:
    """Whether `component` carries the byte-string export with the type the sandbox expects."""
    export = component.type.exports(engine).get(rawabi.RAW_EXPORT)
    return export is not None and describe(export.ty) == RAW_HANDLE_TYPE


@dataclass
class CacheStats:
    """Counters of the compile cache (tests and metrics read them)."""

    compiles: int = 0
    disk_hits: int = 0
    discarded: int = 0


class CompileCache:
    """Compiled components on disk, keyed by sha256(component) under the engine fingerprint."""

    def __init__(self, engine: wasmtime.Engine, cache_dir: str | Path, fingerprint: str) -> None:
        self.engine = engine
        self.dir = Path(cache_dir) / "artifacts" / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._lock = threading.Lock()

    def path(self, sha256: str) -> Path:
        """Where the artifact of the component with this digest lives."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ArtifactError(f"not a sha256 hex digest: {sha256!r}")
        return self.dir / f"{sha256}.cwasm"

    def compile(self, wasm: bytes) -> Component:
        """Compile `wasm` (counted in stats.compiles); ComponentError if wasmtime rejects it."""
        check_binary(wasm)
        component = None
        try:
            raw = with_raw_export(wasm)
        except ComponentError:
            raise
        except (ValueError, IndexError, UnicodeError) as exc:  # unreadable: the compile says why
            log.info("no byte-string export: %s", exc)
            raw = None
        if raw is not None:
            try:
                component = Component(self.engine, raw)
            except wasmtime.WasmtimeError as exc:  # compile the original: per-byte bodies
                log.info("byte-string export does not compile, not using it: %s", exc)
        if component is None:
            try:
                component = Component(self.engine, bytes(wasm))
            except wasmtime.WasmtimeError as exc:
                raise ComponentError(f"component does not compile: {exc}") from exc
        with self._lock:
            self.stats.compiles += 1
        return component

    def load_file(self, sha256: str) -> Component | None:
        """The cached artifact, or None (a corrupt or foreign file is deleted)."""
        path = self.path(sha256)
        if not path.exists():
            return None
        try:
            component = Component.deserialize_file(self.engine, str(path))
        except wasmtime.WasmtimeError as exc:
            log.warning("discarding unusable cached artifact %s: %s", path, exc)
            with self._lock:
                self.stats.discarded += 1
            path.unlink(missing_ok=True)
            return None
        with self._lock:
            self.stats.disk_hits += 1
        return component

    def store(self, sha256: str, artifact: bytes) -> Path:
        """Write an artifact atomically (tmp file + rename) and return its path."""
        path = self.path(sha256)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(artifact)
        os.replace(tmp, path)
        return path

    def get_or_compile(self, wasm: bytes) -> tuple[str, Component, bool]:
        """(sha256, component, compiled_now): from disk when possible, else compile and store."""
        check_binary(wasm)
        sha = hashlib.sha256(wasm).hexdigest()
        component = self.load_file(sha)
        if component is not None:
            return sha, component, False
        component = self.compile(wasm)
        self.store(sha, bytes(component.serialize()))
        return sha, component, True


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()
