"""The byte-string export: `handle` re-lifted so bodies cross as one string, not N values.

wasmtime's C API moves a `list<u8>` as one 32-byte `wasmtime_component_val_t` per byte:
about 60-90 us per KiB, and its per-call copy budget ("hostcall fuel", 32 units per list
element, 128 MiB in all, not settable through the C API) runs out at about 2.66 MiB of
response body. A `string` crosses as one buffer and costs one unit of fuel per byte.

In the canonical ABI a `list<u8>` and a `string` have the same memory layout (pointer,
length), and the `latin1+utf16` string encoding maps every byte 0-255 to one character. So
at compile time each component gets a second export, `flotilla-raw-handle`: the guest's own
core `handle` function lifted again with body fields typed `string` and
`string-encoding=latin1+utf16`. The guest's code is unchanged and still sees its bytes; the
host passes every string as "one character per UTF-8 byte" and turns them back into bytes.

Two canonical-ABI rules need a small shim core module (`ALIGNER`) between the guest and the
new lift:
- latin1+utf16 strings must start at an even address; a list<u8> may start anywhere (a Rust
  guest's empty `Vec` points at 1). The shim copies any odd-addressed body, header or error
  string to an even address (in freshly grown memory) before the lift, and
  restores the original pointers before the guest's post-return runs.
- the string lift has no per-element cost to stop a huge response early, so the shim traps
  (function `flotilla_response_over_limit`) when the body is over MAX_BODY_BYTES or the
  headers over MAX_HEADER_BYTES, and cuts an error message to MAX_ERROR_BYTES.

The rewrite edits only the component layers: its core modules (megabytes of code for a
Python guest), nested components' included, are swapped for tiny placeholders, the rest is
printed to text with wasm-tools, the new definitions are appended, the text is assembled
again and the original core modules are put back. Where `handle` is lifted decides where the
definitions go: beside a plain `canon lift` at the outer layer (componentize-py, StarlingMonkey,
Rust, C), or, when the outer `handle` is an export of an instance of a component nested in it
(componentize-qjs wraps its guest so), inside that nested component, which then exports
`flotilla-raw-handle` too, re-exported by the outer layer with its type ascribed. A component
whose `handle` cannot be re-lifted this way (another string encoding, no realloc, an imported
or deeper component) keeps only its original export; the sandbox then uses the per-byte path.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from pathlib import Path

from flotilla.errors import ComponentError

log = logging.getLogger(__name__)

VERSION = 3  # part of the engine fingerprint: bump when the rewrite changes
RAW_EXPORT = "flotilla-raw-handle"
RESERVED_PREFIX = "flotilla-"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
OVER_LIMIT_FUNC = "flotilla_response_over_limit"
MAX_NESTING = 3
"""How deep inside nested components `handle`'s `canon lift` may be found."""

# result<response, string> in the return area: discriminant u8 at 0; ok: status u16 at 4,
# headers (ptr, len) at 8, body (ptr, len) at 16; err: message (ptr, len) at 4.
# A header is tuple<string, string>: (ptr, len, ptr, len), 16 bytes.
ALIGNER = f"""
  (import "guest" "memory" (memory 0))
  (import "guest" "handle"
    (func $handle (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "guest" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
  {{post_import}}
  (global $saved-a (mut i32) (i32.const 0))
  (global $saved-b (mut i32) (i32.const 0))
  (func ${OVER_LIMIT_FUNC} unreachable)
  ;; The realloc the new lift uses: the guest's, but never with an old pointer (lowering a
  ;; latin1 string shrinks its first allocation, and some guests' realloc only allocates).
  (func (export "realloc") (param $old i32) (param $oldsz i32) (param $align i32)
    (param $size i32) (result i32)
    (local $new i32)
    (if (i32.eqz (local.get $old))
      (then
        (return (call $realloc (i32.const 0) (i32.const 0) (local.get $align) (local.get $size)))))
    (if (i32.le_u (local.get $size) (local.get $oldsz)) (then (return (local.get $old))))
    (local.set $new
      (call $realloc (i32.const 0) (i32.const 0) (local.get $align) (local.get $size)))
    (memory.copy (local.get $new) (local.get $old) (local.get $oldsz))
    (local.get $new))
  ;; n fresh bytes past the end of memory (the guest's allocator may not be callable once
  ;; `handle` has returned; nothing of the guest lives in newly grown pages).
  (func $grab (param $n i32) (result i32)
    (local $at i32)
    (local.set $at (i32.shl (memory.size) (i32.const 16)))
    (if (i32.eq (memory.grow (i32.shr_u (i32.add (local.get $n) (i32.const 65535))
                                        (i32.const 16)))
                (i32.const -1))
      (then unreachable))
    (local.get $at))
  ;; An even pointer to the n bytes at p (p itself when it is even).
  (func $even (param $p i32) (param $n i32) (result i32)
    (local $q i32)
    (if (i32.eqz (i32.and (local.get $p) (i32.const 1)))
      (then (return (local.get $p))))
    (if (i32.eqz (local.get $n)) (then (return (i32.const 0))))
    (local.set $q (call $grab (local.get $n)))
    (memory.copy (local.get $q) (local.get $p) (local.get $n))
    (local.get $q))
  (func $fix (param $slot i32)
    (i32.store (local.get $slot)
      (call $even (i32.load (local.get $slot)) (i32.load offset=4 (local.get $slot)))))
  (func (export "handle")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (local $r i32) (local $h i32) (local $n i32) (local $i i32) (local $e i32)
    (local $odd i32) (local $size i32) (local $copy i32)
    (local.set $r
      (call $handle (local.get 0) (local.get 1) (local.get 2) (local.get 3)
                    (local.get 4) (local.get 5) (local.get 6) (local.get 7)))
    (if (i32.eqz (i32.load8_u (local.get $r)))
      (then
        (if (i32.gt_u (i32.load offset=20 (local.get $r)) (i32.const {MAX_BODY_BYTES}))
          (then (call ${OVER_LIMIT_FUNC})))
        (global.set $saved-b (i32.load offset=16 (local.get $r)))
        (call $fix (i32.add (local.get $r) (i32.const 16)))
        (local.set $h (i32.load offset=8 (local.get $r)))
        (local.set $n (i32.load offset=12 (local.get $r)))
        (global.set $saved-a (local.get $h))
        (block $done
          (loop $scan
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $e (i32.add (local.get $h) (i32.shl (local.get $i) (i32.const 4))))
            (local.set $odd
              (i32.or (local.get $odd)
                (i32.or (i32.load (local.get $e)) (i32.load offset=8 (local.get $e)))))
            (local.set $size
              (i32.add (local.get $size)
                (i32.add (i32.load offset=4 (local.get $e))
                         (i32.load offset=12 (local.get $e)))))
            (if (i32.gt_u (local.get $size) (i32.const {MAX_HEADER_BYTES}))
              (then (call ${OVER_LIMIT_FUNC})))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $scan)))
        (if (i32.and (local.get $odd) (i32.const 1))
          (then
            (local.set $size (i32.shl (local.get $n) (i32.const 4)))
            (local.set $copy (call $grab (local.get $size)))
            (memory.copy (local.get $copy) (local.get $h) (local.get $size))
            (i32.store offset=8 (local.get $r) (local.get $copy))
            (local.set $i (i32.const 0))
            (block $done2
              (loop $each
                (br_if $done2 (i32.ge_u (local.get $i) (local.get $n)))
                (local.set $e
                  (i32.add (local.get $copy) (i32.shl (local.get $i) (i32.const 4))))
                (call $fix (local.get $e))
                (call $fix (i32.add (local.get $e) (i32.const 8)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $each))))))
      (else
        (if (i32.eq (i32.load8_u (local.get $r)) (i32.const 1))
          (then
            (if (i32.gt_u (i32.load offset=8 (local.get $r)) (i32.const {MAX_ERROR_BYTES}))
              (then (i32.store offset=8 (local.get $r) (i32.const {MAX_ERROR_BYTES}))))
            (global.set $saved-a (i32.load offset=4 (local.get $r)))
            (call $fix (i32.add (local.get $r) (i32.const 4)))))))
    (local.get $r))
  (func (export "post") (param $r i32)
    (if (i32.eqz (i32.load8_u (local.get $r)))
      (then
        (i32.store offset=8 (local.get $r) (global.get $saved-a))
        (i32.store offset=16 (local.get $r) (global.get $saved-b)))
      (else
        (if (i32.eq (i32.load8_u (local.get $r)) (i32.const 1))
          (then (i32.store offset=4 (local.get $r) (global.get $saved-a))))))
    {{post_call}})
"""

TYPES = """
  (type $flotilla-raw-req (record
    (field "invocation-id" string) (field "function-name" string)
    (field "headers" (list (tuple string string))) (field "body" string)))
  (export $flotilla-raw-req-e "flotilla-raw-request" (type $flotilla-raw-req))
  (type $flotilla-raw-resp (record
    (field "status" u16) (field "headers" (list (tuple string string))) (field "body" string)))
  (export $flotilla-raw-resp-e "flotilla-raw-response" (type $flotilla-raw-resp))
  (type $flotilla-raw-result (result $flotilla-raw-resp-e (error string)))
  (type $flotilla-raw-func (func (param "request" $flotilla-raw-req-e) (result $flotilla-raw-result)))
"""

_ID = r'(?:\$"(?:[^"\\]|\\.)*"|\$[^\s()"]+|\d+)'
_RESERVED_RE = re.compile(r'^  \(export\b[^\n]*? "(' + RESERVED_PREFIX + r'[^"]*)"', re.MULTILINE)
_OPTION_RE = re.compile(r"\((core func|memory|realloc|post-return) (" + _ID + r")\)")
_ENCODING_RE = re.compile(r"string-encoding=(\S+?)[\s)]")


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(wasm: bytes) -> list[tuple[int, bytes]]:
    """The top-level (id, payload) sections of a component binary."""
    out = []
    pos = 8
    while pos < len(wasm):
        sid = wasm[pos]
        size, start = _leb(wasm, pos + 1)
        if start + size > len(wasm):
            raise ValueError("component binary is truncated")
        out.append((sid, wasm[start : start + size]))
        pos = start + size
    return out


def _placeholder(k: int) -> bytes:
    # Fixed width, so that no placeholder's name is a prefix of another's.
    name = b"placeholder-core-module-%08d" % k
    custom = _uleb(len(name)) + name
    return b"\0asm\x01\0\0\0" + b"\0" + _uleb(len(custom)) + custom


def _assemble(header: bytes, parts: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(header)
    for sid, payload in parts:
        out += bytes([sid]) + _uleb(len(payload)) + payload
    return bytes(out)


def _strip(wasm: bytes, modules: list[bytes]) -> bytes:
    """`wasm` with every core module, nested components' included, swapped for a placeholder."""
    parts: list[tuple[int, bytes]] = []
    for sid, payload in sections(wasm):
        if sid == 1:  # core module
            parts.append((sid, _placeholder(len(modules))))
            modules.append(payload)
        elif sid == 4:  # nested component: a whole component binary
            parts.append((sid, _strip(payload, modules)))
        else:
            parts.append((sid, payload))
    return _assemble(wasm[:8], parts)


def _restore(wasm: bytes, modules: list[bytes], found: list[int]) -> bytes:
    """`_strip` undone, in the same order; `found[0]` counts the modules put back."""
    parts: list[tuple[int, bytes]] = []
    for sid, payload in sections(wasm):
        k = found[0]
        # wasm-tools may add a name section to a placeholder: find it by its custom section
        if sid == 1 and k < len(modules) and payload[8:].find(_placeholder(k)[8:]) >= 0:
            payload = modules[k]
            found[0] += 1
        elif sid == 4:
            payload = _restore(payload, modules, found)
        parts.append((sid, payload))
    return _assemble(wasm[:8], parts)


def _ref(ref: str) -> str:
    """A pattern for where item `ref` (a `$name` or an index) is defined in printed text."""
    if ref.isdigit():
        return r"(?:" + _ID + r" )?\(;" + ref + r";\)"
    return re.escape(ref) + r"(?: \(;\d+;\))?"


def _definition(text: str, pattern: str) -> re.Match[str] | None:
    """The one top-level line of `text` matching `pattern` (after its indent), else None."""
    found = list(re.finditer(r"^  " + pattern, text, re.MULTILINE))
    return found[0] if len(found) == 1 else None


def _find_lift(text: str, ref: str) -> dict[str, str] | None:
    """The options of func `ref` when it is a plain utf8 `canon lift` with a realloc, or None."""
    defined = _definition(text, r"\(func " + _ref(ref) + r"[ )][^\n]*")
    if defined is None or "(canon lift " not in defined.group(0):
        return None
    line = defined.group(0)
    options = dict(_OPTION_RE.findall(line))
    encoding = _ENCODING_RE.search(line)
    if encoding and encoding.group(1) != "utf8":
        return None
    if "core func" not in options or "memory" not in options or "realloc" not in options:
        return None
    return options


def _export_ref(text: str, name: str) -> str | None:
    """The func behind the top-level export `name`, or None."""
    pattern = r'^  \(export\b[^\n]*? "' + re.escape(name) + r'" \(func (' + _ID + r")\)"
    refs = re.findall(pattern, text, re.MULTILINE)
    return refs[0] if len(refs) == 1 else None


def _nested(text: str, func: str) -> tuple[str, str, int, int] | None:
    """Where func `func` comes from when it is an export of an instance of a component
    defined inside this one: (instance, export name, start, end of the component's text)."""
    alias = _definition(text, r"\(alias export (" + _ID + r') "([^"]+)" \(func ' + _ref(func))
    if alias is None:
        return None
    instance, name = alias.group(1), alias.group(2)
    made = _definition(text, r"\(instance " + _ref(instance) + r" \(instantiate (" + _ID + ")")
    if made is None:
        return None
    component = _definition(text, r"\(component " + _ref(made.group(1)) + r"\n")
    if component is None:
        return None
    close = text.find("\n  )\n", component.end() - 1)
    if close < 0:
        return None
    return instance, name, component.start(), close + len("\n  )")


def _lift_addition(lift: dict[str, str]) -> str:
    """Definitions that lift `lift`'s core function again, through the aligner, as RAW_EXPORT."""
    post = lift.get("post-return")
    aligner = ALIGNER.replace(
        "{post_import}",
        '(import "guest" "post" (func $post (param i32)))' if post else "",
    ).replace("{post_call}", "(call $post (local.get $r))" if post else "")
    exports = [
        f'(export "memory" (memory {lift["memory"]}))',
        f'(export "handle" (func {lift["core func"]}))',
        f'(export "realloc" (func {lift["realloc"]}))',
    ]
    if post:
        exports.append(f'(export "post" (func {post}))')
    return (
        f"  (core module $flotilla-aligner {aligner.strip()})\n"
        f"  (core instance $flotilla-guest {' '.join(exports)})\n"
        "  (core instance $flotilla-aligned (instantiate $flotilla-aligner"
        ' (with "guest" (instance $flotilla-guest))))\n'
        '  (alias core export $flotilla-aligned "handle" (core func $flotilla-aligned-handle))\n'
        '  (alias core export $flotilla-aligned "post" (core func $flotilla-aligned-post))\n'
        '  (alias core export $flotilla-aligned "realloc" (core func $flotilla-aligned-realloc))\n'
        + TYPES
        + "  (func $flotilla-raw (type $flotilla-raw-func) (canon lift"
        f" (core func $flotilla-aligned-handle) (memory {lift['memory']})"
        " (realloc $flotilla-aligned-realloc) string-encoding=latin1+utf16"
        " (post-return $flotilla-aligned-post)))\n"
        f'  (export "{RAW_EXPORT}" (func $flotilla-raw))\n'
    )


def _rewrite(text: str, name: str, depth: int = 0) -> str | None:
    """Printed component `text` with RAW_EXPORT added beside its export `name`, or None.

    Either that export is a plain `canon lift` here, or (QuickJS guests) an export of an
    instance of a component nested here: that component gets the export, and this one
    re-exports it, its type ascribed with this component's own exported raw types.
    """
    func = _export_ref(text, name)
    if func is None:
        return None
    lift = _find_lift(text, func)
    if lift is not None:
        addition = _lift_addition(lift)
    else:
        nested = _nested(text, func) if depth < MAX_NESTING else None
        if nested is None:
            return None
        instance, inner_name, start, end = nested
        inner = "\n".join(line[2:] for line in text[start:end].split("\n"))
        rewritten = _rewrite(inner, inner_name, depth + 1)
        if rewritten is None:
            return None
        text = text[:start] + "\n".join("  " + line for line in rewritten.split("\n")) + text[end:]
        addition = (
            f'  (alias export {instance} "{RAW_EXPORT}" (func $flotilla-raw-nested))\n'
            + TYPES
            + f'  (export "{RAW_EXPORT}" (func $flotilla-raw-nested)'
            " (func (type $flotilla-raw-func)))\n"
        )
    end = text.rstrip().rfind(")")
    return text[:end] + addition + text[end:]


def add_raw_export(wasm: bytes, tool: str) -> bytes | None:
    """`wasm` with the `flotilla-raw-handle` export added, or None when it cannot be.

    Raises ComponentError when the component already uses the reserved export names.
    """
    modules: list[bytes] = []
    skeleton = _strip(wasm, modules)
    with tempfile.TemporaryDirectory(prefix="flotilla-raw-") as tmp:
        skel = Path(tmp) / "skeleton.wasm"
        skel.write_bytes(skeleton)
        printed = subprocess.run(
            [tool, "print", str(skel)], capture_output=True, text=True, timeout=60, check=False
        )
        if printed.returncode != 0:
            log.warning("raw export: wasm-tools print failed: %s", printed.stderr.strip())
            return None
        text = printed.stdout
        names = sorted(set(_RESERVED_RE.findall(text)))
        if names:
            raise ComponentError(f"component uses names reserved for Flotilla: {', '.join(names)}")
        source_text = _rewrite(text, "handle")
        if source_text is None:
            log.info("raw export: `handle` is not a plain utf8 canon lift; keeping list<u8>")
            return None
        source = Path(tmp) / "raw.wat"
        source.write_text(source_text)
        out = Path(tmp) / "raw.wasm"
        parsed = subprocess.run(
            [tool, "parse", str(source), "-o", str(out)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if parsed.returncode != 0:
            log.warning("raw export: wasm-tools parse failed: %s", parsed.stderr.strip())
            return None
        rebuilt = out.read_bytes()
    found = [0]
    restored = _restore(rebuilt, modules, found)
    if found[0] != len(modules):
        log.warning("raw export: %d of %d core modules found again", found[0], len(modules))
        return None
    return restored


# ---- host-side conversions -------------------------------------------------------------


def to_raw(text: str) -> str:
    """A string as the guest should receive it: one latin1 character per UTF-8 byte."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def from_raw(text: str) -> str:
    """The inverse of `to_raw` for a string the guest returned (bad UTF-8 is replaced)."""
    return text if text.isascii() else text.encode("latin-1").decode("utf-8", "replace")


__all__ = [
    "MAX_BODY_BYTES",
    "OVER_LIMIT_FUNC",
    "RAW_EXPORT",
    "VERSION",
    "add_raw_export",
    "from_raw",
    "to_raw",
]
