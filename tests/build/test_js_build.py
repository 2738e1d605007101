"""The JavaScript/TypeScript builder (flotilla/build/js.py) and the SDK's declarations.

Entry detection and the toolchain check are unit tests; builds run the real tools
(componentize-qjs, tsc, componentize-js) from the project-local toolchain. The .d.ts is
checked against the WIT: regenerating it changes nothing, and every WIT function appears
in its interface's module. The QuickJS prelude is exercised through the real Sandbox.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from flotilla.build import toolchains
from flotilla.build.common import BuildError
from flotilla.build.js import build_js, find_entry, toolchain, world_wit
from flotilla.sandbox import LoadedFunction, Sandbox
from flotilla.sandbox.guests import wasm_tools
from flotilla.sandbox.results import Outcome
from tests.build.js_c_guests import EXAMPLES, GUESTS, ROOT, guest, require
from tests.sandbox.conftest import FakeHosts, config, persistent_cache_dir, req

SDK = ROOT / "sdk" / "js"


def load_generator() -> ModuleType:
    """sdk/js/gen_dts.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gen_dts", SDK / "gen_dts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- entry modules and the toolchain check ---------------------------------------------


def test_entry_is_found_by_package_main_then_by_name(tmp_path: Path) -> None:
    (tmp_path / "index.js").write_text("export function handle(r) { return r; }")
    assert find_entry(tmp_path) == tmp_path / "index.js"
    (tmp_path / "app.ts").write_text("export function handle(r: any) { return r; }")
    assert find_entry(tmp_path) == tmp_path / "app.ts"  # app.ts comes first
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.js").write_text("export const handle = (r) => r;")
    (tmp_path / "package.json").write_text(json.dumps({"main": "src/main.js"}))
    assert find_entry(tmp_path) == tmp_path / "src" / "main.js"
    assert find_entry(tmp_path / "index.js") == tmp_path / "index.js"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no entry module"),
        ({"package.json": "{nope"}, "not valid JSON"),
    ],
)
def test_bad_sources_are_clear_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(BuildError, match=message):
        find_entry(tmp_path)
    with pytest.raises(BuildError, match="not a JavaScript or TypeScript module"):
        find_entry(Path(__file__))
    with pytest.raises(BuildError, match="no such file or directory"):
        find_entry(tmp_path / "missing")


def test_a_module_without_handle_is_refused_before_any_tool_runs(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("export function other() {}\n")
    with pytest.raises(BuildError, match="exports no `handle`"):
        build_js(tmp_path, cache_dir=tmp_path / "cache")


def test_missing_toolchain_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_TOOLCHAINS", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    for engine, tool in (("quickjs", "componentize-qjs"), ("starlingmonkey", "componentize-js")):
        problem = toolchain(engine)
        assert problem is not None and tool in problem and toolchains.JS_INSTALL in problem
        assert "\n" not in problem
    assert "tsc" in (toolchain("quickjs", typescript=True) or "")
    assert "unknown JavaScript engine 'v8'" in (toolchain("v8") or "")
    (tmp_path / "app.js").write_text("export function handle(r) { return r; }\n")
    with pytest.raises(BuildError, match="tools/toolchains/js.sh"):
        build_js(tmp_path, tmp_path / "out.wasm", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out.wasm").exists()


def test_the_world_adds_wasi_imports_to_the_flotilla_world() -> None:
    text = world_wit([ROOT / "wit" / "flotilla.wit"], "function")
    assert "include flotilla:function/function@0.1.1;" in text
    assert "import wasi:cli/environment@0.2.12;" in text
    assert text.startswith("package flotilla:js-guest;")


# ---- builds ---------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    """A scratch guest directory (QuickJS toolchain required)."""
    require("js")
    folder = tmp_path / "app"
    folder.mkdir()
    yield folder


def test_build_is_cached_by_content_and_keyed_by_source(app: Path, tmp_path: Path) -> None:
    (app / "app.js").write_text(
        'import { helper } from "./lib/helper.js";\n'
        "export function handle(r) { return { status: helper(), headers: [], body: r.body }; }\n"
    )
    (app / "lib").mkdir()
    (app / "lib" / "helper.js").write_text("export const helper = () => 201;\n")
    cache = tmp_path / "cache"
    first = build_js(app, tmp_path / "a.wasm", cache_dir=cache)
    again = build_js(app, tmp_path / "b.wasm", cache_dir=cache)
    assert not first.cached and again.cached and first.key == again.key
    assert (tmp_path / "a.wasm").read_bytes() == (tmp_path / "b.wasm").read_bytes()
    (app / "lib" / "helper.js").write_text("export const helper = () => 202;\n")
    changed = build_js(app, cache_dir=cache)
    assert changed.key != first.key and not changed.cached
    sandbox = Sandbox(FakeHosts(), cache_dir=persistent_cache_dir())
    try:
        for path, status in ((tmp_path / "a.wasm", 201), (changed.path, 202)):
            fn = sandbox.load(path.read_bytes())
            result = sandbox.invoke(fn, config(), req(b"hi"))
            assert result.response is not None and result.response.status == status
    finally:
        sandbox.close()


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("app.js", "export function handle(r) { return {; }\n", "componentize-qjs failed"),
        ("app.ts", "export function handle(r: number): string { return r; }\n", "TS2322"),
    ],
    ids=["js-syntax-error", "ts-type-error"],
)
def test_failed_builds_say_why_and_leave_nothing_behind(
    app: Path, tmp_path: Path, name: str, source: str, message: str
) -> None:
    if name.endswith(".ts"):
        require("ts")
    (app / name).write_text(source)
    out = tmp_path / "out.wasm"
    out.write_bytes(b"previous build")
    with pytest.raises(BuildError, match=message):
        build_js(app, out, cache_dir=tmp_path / "cache")
    assert out.read_bytes() == b"previous build"  # untouched, not half-written
    leftovers = [p.name for p in (tmp_path / "cache" / "guests").iterdir()]
    assert not [n for n in leftovers if n.endswith((".wasm", ".tmp"))], leftovers


def test_starlingmonkey_builds_and_runs_the_echo_example(tmp_path: Path) -> None:
    require("js", "starlingmonkey")
    built = build_js(EXAMPLES / "js" / "echo", engine="starlingmonkey")
    quickjs = build_js(EXAMPLES / "js" / "echo")
    assert built.key != quickjs.key
    sandbox = Sandbox(FakeHosts(), cache_dir=persistent_cache_dir())
    try:
        fn = sandbox.load(built.path.read_bytes())
        assert fn.raw is not None
        body = bytes(range(256)) * 64
        result = sandbox.invoke(fn, config(), req(body, (("a", "1"), ("a", "2"))))
        assert result.outcome is Outcome.OK, result.error
        assert result.response is not None and result.response.body == body
        assert result.response.headers == (("a", "1"), ("a", "2"))
    finally:
        sandbox.close()


# ---- the QuickJS prelude ----------------------------------------------------------------


@pytest.fixture(scope="module")
def prelude() -> Iterator[tuple[Sandbox, LoadedFunction]]:
    """The prelude test guest in a Sandbox over fake hosts."""
    path = guest("js", "prelude")
    sandbox = Sandbox(FakeHosts(), cache_dir=persistent_cache_dir())
    yield sandbox, sandbox.load(path.read_bytes())
    sandbox.close()


MALFORMED = [
    b"plain", "caf\u00e9 \u2603 \U0001f600".encode(), b"\xe2\x82", b"\xe2\x82A", b"\xe0\x80\x80",
    b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff\xfe", b"a\x80b", bytes(range(256)),
]  # fmt: skip


@pytest.mark.parametrize("data", MALFORMED)
def test_text_decoder_replaces_like_python(
    prelude: tuple[Sandbox, LoadedFunction], data: bytes
) -> None:
    sandbox, fn = prelude
    result = sandbox.invoke(fn, config(), req(data, (("op", "roundtrip"),)))
    assert result.response is not None
    assert result.response.body == data.decode("utf-8", "replace").encode()
    assert result.response.headers == (("encoding", "utf-8"),)
    fatal = sandbox.invoke(fn, config(), req(data, (("op", "fatal"),)))
    assert fatal.response is not None
    try:
        data.decode("utf-8")
        assert fatal.response.body == b"ok"
    except UnicodeDecodeError:
        assert fatal.response.body == b"TypeError"


def test_text_encoder_and_console(prelude: tuple[Sandbox, LoadedFunction]) -> None:
    sandbox, fn = prelude
    text = "a\u00e9\u2603\U0001f600"
    result = sandbox.invoke(fn, config(), req(b"", (("op", "encode"), ("text", text))))
    assert result.response is not None and result.response.body == text.encode()
    logged = sandbox.invoke(fn, config(), req(b"", (("op", "console"),)))
    assert [(r.level, r.message) for r in logged.logs] == [
        ("stdout", 'log 1 {"a":[1,"b"]} null'),
        ("stdout", "info \u2603"),
        ("stdout", "undefined"),
        ("stderr", "warn"),
        ("stderr", "boom"),
    ]


# ---- type declarations ---------------------------------------------------------------


def test_declarations_are_generated_from_the_wit() -> None:
    generator = load_generator()
    assert (SDK / "flotilla.d.ts").read_text() == generator.generate(), (
        "sdk/js/flotilla.d.ts is stale: run python sdk/js/gen_dts.py"
    )


def test_every_wit_function_is_declared_in_its_module() -> None:
    done = subprocess.run(
        [wasm_tools(), "component", "wit", "--json", str(ROOT / "wit")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    wit = json.loads(done.stdout)
    package = wit["packages"][0]["name"]
    namespace, version = package.split("@")
    text = (SDK / "flotilla.d.ts").read_text()
    blocks = dict(re.findall(r'declare module "([^"]+)" \{\n(.*?)\n\}', text, re.DOTALL))
    functions = 0
    for interface in wit["interfaces"]:
        block = blocks[f"{namespace}/{interface['name']}@{version}"]
        for name, fn in interface["functions"].items():
            camel = re.sub(r"-(\w)", lambda m: m.group(1).upper(), name)
            declared = re.search(rf"function _?{camel}\(([^)]*)\)", block)
            assert declared, f"{interface['name']}.{name} is not declared"
            assert declared.group(1).count(":") == len(fn["params"]), name
            assert re.search(rf"\b{camel}: typeof _?{camel};", block), f"default.{camel}"
            functions += 1
    assert functions >= 25
    types = blocks[f"{namespace}/types@{version}"]
    for record in ("Request", "Response"):
        assert f"export interface {record} {{" in types
    assert "type FlotillaHandler" in text  # the `handle` export's signature


@pytest.mark.parametrize("example", ["echo", "token-vending"])
def test_the_typescript_examples_editor_config_type_checks(example: str) -> None:
    require("ts")
    tsc = toolchains.node_tool("tsc")
    assert tsc is not None
    done = subprocess.run(
        [tsc, "-p", str(EXAMPLES / "ts" / example / "tsconfig.json")],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


PROTOCOL_OPS = {
    "echo", "status", "err", "trap", "spin", "memory", "big", "env", "clock", "random", "file",
    "socket", "stdin", "stdout", "stderr", "cache-get", "cache-set", "cache-set-if-absent",
    "cache-set-if-present", "cache-set-if-equal", "cache-delete", "cache-increment", "http",
    "s3-get", "s3-put", "s3-delete", "ddb-get", "ddb-put", "ddb-put-if", "ddb-delete", "log",
    "invocation", "secret", "publish", "spawn",
}  # fmt: skip


@pytest.mark.parametrize("path", ["js/conformance/app.js", "ts/conformance/app.ts"])
def test_conformance_guests_implement_every_op_of_the_protocol(path: str) -> None:
    body = (GUESTS / path).read_text().split("const OPS")[1]
    assert set(re.findall(r'^  "?([a-z0-9-]+)"?: \(', body, re.MULTILINE)) == PROTOCOL_OPS
