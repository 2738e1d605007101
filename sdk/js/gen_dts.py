"""Generate sdk/js/flotilla.d.ts from the WIT: `python sdk/js/gen_dts.py [--check]`.

The declarations follow how componentize-qjs (and StarlingMonkey) present the world to
JavaScript: one ES module per interface (`flotilla:function/cache@0.1.1`), with named
exports and a default export holding them all; functions and record fields in camelCase;
`list<u8>` as Uint8Array; `u64`/`s64` as number; `option<T>` as `T | null`; a function's
`result<T, E>` returns T and throws an Error whose `payload` is E; variants as
`{ tag, val }`; enums as string literals. `--check` exits 1 when the file is stale.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUTPUT = HERE / "flotilla.d.ts"

# Names a function declaration cannot take; declared as `_name` and exported as `name`.
RESERVED = {
    "break", "case", "catch", "class", "const", "continue", "debugger", "default", "delete",
    "do", "else", "enum", "export", "extends", "false", "finally", "for", "function", "if",
    "import", "in", "instanceof", "new", "null", "return", "super", "switch", "this",
    "throw", "true", "try", "typeof", "var", "void", "while", "with", "yield",
}  # fmt: skip
NUMBERS = {"u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "f32", "f64"}
HEADER = """\
// Type declarations of Flotilla's `function` world ({package}) for JavaScript/TypeScript
// guests. Generated from wit/ by sdk/js/gen_dts.py: do not edit by hand.
//
// A guest module exports `handle(request: Request): Response`; throwing a string (or an
// Error) from it answers the caller with a function error. Host calls that fail throw a
// FlotillaHostError whose `payload` is the interface's `Error` variant.

/** What a failed host call throws: an Error whose `payload` is the interface's variant. */
interface FlotillaHostError<E> extends Error {{
  payload: E;
}}

/** The signature of the `handle` export every guest module defines. */
type FlotillaHandler = (
  request: import("{types_module}").Request,
) => import("{types_module}").Response;
"""


def camel(name: str) -> str:
    """WIT kebab-case to the lowerCamelCase JavaScript sees."""
    head, *rest = name.split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def param(name: str) -> str:
    """A parameter's name (reserved words, like spawn's `function`, get a trailing `_`)."""
    name = camel(name)
    return name + "_" if name in RESERVED else name


def pascal(name: str) -> str:
    """WIT kebab-case to the PascalCase of a TypeScript type name."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


def doc(docs: dict[str, Any] | None, indent: str, extra: list[str] | None = None) -> str:
    """A JSDoc comment from a WIT docs object (empty when there is nothing to say)."""
    lines = (docs or {}).get("contents", "").splitlines() if docs else []
    lines = [line.replace("*/", "* /") for line in lines] + (extra or [])
    if not lines:
        return ""
    if len(lines) == 1:
        return f"{indent}/** {lines[0]} */\n"
    body = "".join(f"{indent} *{' ' + line if line else ''}\n" for line in lines)
    return f"{indent}/**\n{body}{indent} */\n"


class Generator:
    """Turns the JSON of `wasm-tools component wit --json` into declarations."""

    def __init__(self, wit: dict[str, Any]) -> None:
        self.wit = wit
        package = wit["packages"][0]["name"]
        self.namespace, version = package.split("@")
        self.version = version
        self.package = package

    def module(self, interface: int) -> str:
        """The ES module name of interface `interface` (its WIT id)."""
        return f"{self.namespace}/{self.wit['interfaces'][interface]['name']}@{self.version}"

    def ty(self, t: Any, here: int) -> str:
        """The TypeScript type of WIT type `t`, as written inside interface `here`'s module."""
        if isinstance(t, str):
            if t in NUMBERS:
                return "number"
            return {"bool": "boolean", "string": "string", "char": "string"}[t]
        entry = self.wit["types"][t]
        owner = (entry.get("owner") or {}).get("interface")
        if entry["name"] is not None and owner is not None:
            if owner == here:
                return pascal(entry["name"])
            return f'import("{self.module(owner)}").{pascal(entry["name"])}'
        return self.shape(entry["kind"], here)

    def shape(self, kind: dict[str, Any], here: int) -> str:
        """The structural TypeScript type of an anonymous (or aliased) WIT type."""
        if "type" in kind:
            return self.ty(kind["type"], here)
        if "list" in kind:
            if kind["list"] == "u8":
                return "Uint8Array"
            inner = self.ty(kind["list"], here)
            return f"Array<{inner}>"
        if "tuple" in kind:
            return "[" + ", ".join(self.ty(t, here) for t in kind["tuple"]["types"]) + "]"
        if "option" in kind:
            inner_t = kind["option"]
            if not isinstance(inner_t, str) and "option" in self.wit["types"][inner_t]["kind"]:
                inner = self.ty(inner_t, here)
                return f'{{ tag: "some"; val: {inner} }} | {{ tag: "none" }}'
            return f"{self.ty(inner_t, here)} | null"
        if "result" in kind:
            ok, err = kind["result"]["ok"], kind["result"]["err"]
            ok_ts = "undefined" if ok is None else self.ty(ok, here)
            err_ts = "undefined" if err is None else self.ty(err, here)
            return f'{{ tag: "ok"; val: {ok_ts} }} | {{ tag: "err"; val: {err_ts} }}'
        raise ValueError(f"no TypeScript shape for WIT type {kind}")

    def named(self, name: str, entry: dict[str, Any], here: int) -> str:
        """The declaration of a named type of interface `here`."""
        kind = entry["kind"]
        out = doc(entry.get("docs"), "  ")
        ts_name = pascal(name)
        if "record" in kind:
            out += f"  export interface {ts_name} {{\n"
            for field in kind["record"]["fields"]:
                out += doc(field.get("docs"), "    ")
                out += f"    {camel(field['name'])}: {self.ty(field['type'], here)};\n"
            return out + "  }\n"
        if "variant" in kind:
            cases = []
            for case in kind["variant"]["cases"]:
                cases.append(
                    doc(case.get("docs"), "    ")
                    + f'    | {{ tag: "{case["name"]}"'
                    + ("" if case["type"] is None else f"; val: {self.ty(case['type'], here)}")
                    + " }"
                )
            return out + f"  export type {ts_name} =\n" + "\n".join(cases) + ";\n"
        if "enum" in kind:
            cases = [
                doc(case.get("docs"), "    ") + f'    | "{case["name"]}"'
                for case in kind["enum"]["cases"]
            ]
            return out + f"  export type {ts_name} =\n" + "\n".join(cases) + ";\n"
        return out + f"  export type {ts_name} = {self.shape(kind, here)};\n"

    def function(self, fn: dict[str, Any], here: int) -> str:
        """The declaration of one function; a `result` return throws its error case."""
        params = ", ".join(f"{param(p['name'])}: {self.ty(p['type'], here)}" for p in fn["params"])
        result, extra = fn.get("result"), []
        returns = "void"
        if result is not None:
            kind = self.wit["types"][result]["kind"] if not isinstance(result, str) else {}
            if "result" in kind and self.wit["types"][result]["name"] is None:
                ok, err = kind["result"]["ok"], kind["result"]["err"]
                returns = "void" if ok is None else self.ty(ok, here)
                thrown = "string" if err is None else self.ty(err, here)
                extra = [f"@throws {{FlotillaHostError<{thrown}>}} when the host call fails."]
            else:
                returns = self.ty(result, here)
        name = camel(fn["name"])
        if name in RESERVED:  # `cache.delete`: exported under a name no declaration can take
            return doc(fn.get("docs"), "  ", extra) + (
                f"  function _{name}({params}): {returns};\n  export {{ _{name} as {name} }};\n"
            )
        return doc(fn.get("docs"), "  ", extra) + (
            f"  export function {name}({params}): {returns};\n"
        )

    def interface(self, index: int) -> str:
        """One `declare module` block for interface `index`."""
        iface = self.wit["interfaces"][index]
        out = doc(iface.get("docs"), "")
        out += f'declare module "{self.module(index)}" {{\n'
        for name, t in iface["types"].items():
            out += self.named(name, self.wit["types"][t], index)
        names = []
        for fn in iface["functions"].values():
            out += self.function(fn, index)
            names.append(camel(fn["name"]))
        if names:
            members = "".join(
                f"    {n}: typeof {'_' if n in RESERVED else ''}{n};\n" for n in names
            )
            out += f"  const {camel(iface['name'])}: {{\n{members}  }};\n"
            out += f"  export default {camel(iface['name'])};\n"
        return out + "}\n"

    def render(self) -> str:
        """The whole .d.ts text."""
        types_index = self.wit["packages"][0]["interfaces"]["types"]
        parts = [HEADER.format(package=self.package, types_module=self.module(types_index))]
        for index in sorted(self.wit["packages"][0]["interfaces"].values()):
            parts.append(self.interface(index))
        return "\n".join(parts)


def wit_json(wit_dir: Path) -> dict[str, Any]:
    """The resolved WIT of `wit_dir` as wasm-tools' JSON."""
    sys.path.insert(0, str(REPO))
    from flotilla.sandbox.guests import wasm_tools

    done = subprocess.run(
        [wasm_tools(), "component", "wit", "--json", str(wit_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def generate(wit_dir: Path = REPO / "wit") -> str:
    """The declarations for the WIT in `wit_dir`."""
    return re.sub(r"\n{3,}", "\n\n", Generator(wit_json(wit_dir)).render())


def main(argv: list[str]) -> int:
    """Write flotilla.d.ts, or with --check report whether it is up to date."""
    text = generate()
    if "--check" in argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python sdk/js/gen_dts.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
