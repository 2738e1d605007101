"""`flotilla doctor`: the report's shape, the call path, services, toolchains, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import flotilla
from flotilla import doctor
from flotilla.cli import main
from flotilla.commands import doctor as doctor_command
from flotilla.doctor import toolchains
from flotilla.doctor.services import mask_url
from flotilla.doctor.toolchains import Tool
from tests.services import free_port, unavailable

FAKE_TOOLS = {
    "componentize-py": Tool(True, "/opt/x/componentize-py", "componentize-py 0.25.1"),
    "wasm-tools": Tool(True, "/opt/x/wasm-tools", "wasm-tools 1.262.0"),
    "rust": Tool(False, note="cargo not found"),
}


@pytest.fixture
def fake_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the real toolchain lookups (a few subprocesses) where a test does not need them."""
    monkeypatch.setattr(toolchains, "find_all", lambda: dict(FAKE_TOOLS))


@pytest.fixture
def closed_services(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Settings naming RabbitMQ, Redis and S3 on loopback ports where nothing listens."""
    ports = {name: free_port() for name in ("rabbitmq", "redis", "s3")}
    monkeypatch.setenv("FLOTILLA_AMQP_URL", f"amqp://guest:s3cret@127.0.0.1:{ports['rabbitmq']}/")
    monkeypatch.setenv("FLOTILLA_REDIS_URL", f"redis://:s3cret@127.0.0.1:{ports['redis']}/0")
    monkeypatch.setenv("FLOTILLA_AWS_ENDPOINT_URL", f"http://127.0.0.1:{ports['s3']}")
    return ports


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`flotilla doctor ARGV` in this process: (exit status, stdout)."""
    status = main(["doctor", *argv])
    return status, capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """`flotilla doctor --json ARGV`: (exit status, parsed report)."""
    status, out = run(capsys, "--json", *argv)
    return status, json.loads(out)


def test_json_report_has_the_documented_keys_and_values(
    capsys: pytest.CaptureFixture[str], fake_tools: None
) -> None:
    status, report = run_json(capsys, "--no-services")
    assert status == 0
    assert {"version", "wasmtime", "call_path", "services", "toolchains"} <= set(report)
    assert {"python", "cache", "extras", "checks", "required", "failed", "ok"} <= set(report)
    assert report["version"] == flotilla.__version__
    assert report["wasmtime"] == metadata.version("wasmtime")
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert set(report["services"]) == {"rabbitmq", "redis", "s3"}
    assert all(s["ok"] is None for s in report["services"].values())
    assert report["toolchains"]["wasm-tools"] == {
        "ok": True, "path": "/opt/x/wasm-tools", "version": "wasm-tools 1.262.0", "note": ""
    }
    assert set(report["checks"]) == set(doctor.CHECKS) - {
        "node", "npm", "clang", "jco", "componentize-qjs", "componentize-js"
    }  # the fake lists three toolchains
    assert (report["required"], report["failed"], report["ok"]) == ([], [], True)


def test_call_path_is_the_c_extension_when_built(
    capsys: pytest.CaptureFixture[str], fake_tools: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOTILLA_SANDBOX_CTYPES", raising=False)
    from flotilla.sandbox import fastpath

    if fastpath.load() is None:
        unavailable("flotilla/sandbox/_fastcall was not built (pip install -e . builds it)")
    status, report = run_json(capsys, "--no-services", "--require", "c-extension")
    assert (status, report["call_path"], report["checks"]["c-extension"]) == (
        0, "c-extension", True
    )
    assert "_fastcall" in report["call_path_detail"]


@pytest.mark.parametrize("value", ["1", "true"])
def test_ctypes_forced_by_the_environment_fails_require_c_extension(
    capsys: pytest.CaptureFixture[str], fake_tools: None, monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    monkeypatch.setenv("FLOTILLA_SANDBOX_CTYPES", value)
    status, report = run_json(capsys, "--no-services", "--require", "c-extension")
    assert (status, report["call_path"], report["failed"]) == (1, "ctypes", ["c-extension"])
    assert "FLOTILLA_SANDBOX_CTYPES" in report["call_path_detail"]
    assert report["checks"]["wasmtime"] is True


@pytest.mark.parametrize("forced", [False, True])
def test_call_path_agrees_with_the_sandbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, forced: bool
) -> None:
    from flotilla.sandbox import Sandbox

    if forced:
        monkeypatch.setenv("FLOTILLA_SANDBOX_CTYPES", "1")
    else:
        monkeypatch.delenv("FLOTILLA_SANDBOX_CTYPES", raising=False)
    sandbox = Sandbox(None, cache_dir=tmp_path)
    try:
        assert doctor.call_path()[0] == sandbox.call_path
    finally:
        sandbox.close()


def test_unreachable_services_are_reported_and_fail_the_worker(
    capsys: pytest.CaptureFixture[str], fake_tools: None, closed_services: dict[str, int]
) -> None:
    status, report = run_json(capsys, "--for", "worker", "--timeout", "1")
    assert status == 1
    assert report["failed"] == ["rabbitmq", "redis", "s3"]
    for name, port in closed_services.items():
        probe = report["services"][name]
        assert probe["ok"] is False
        assert f"127.0.0.1:{port}" in probe["target"]
        assert "refused" in probe["error"].lower() or "connect" in probe["error"].lower()
        assert probe["seconds"] < 5
    assert "s3cret" not in json.dumps(report)


def test_text_report_marks_only_needed_failures(
    capsys: pytest.CaptureFixture[str], fake_tools: None, closed_services: dict[str, int]
) -> None:
    status, out = run(capsys, "--require", "redis", "--timeout", "1")
    assert status == 1
    lines = {line.split()[1]: line.split()[0] for line in out.splitlines()
             if line.startswith("  ") and len(line.split()) > 1}
    assert (lines["redis"], lines["rabbitmq"], lines["rust"]) == ("FAIL", "--", "--")
    assert "missing: redis" in out and "s3cret" not in out


@pytest.mark.integration
def test_reachable_services_pass_the_worker_checks(
    capsys: pytest.CaptureFixture[str], fake_tools: None, monkeypatch: pytest.MonkeyPatch,
    amqp_url: str, redis_url: str, aws_endpoint_url: str, unique: str, tmp_path: Path,
) -> None:
    monkeypatch.setenv("FLOTILLA_AMQP_URL", amqp_url)
    monkeypatch.setenv("FLOTILLA_REDIS_URL", redis_url)
    monkeypatch.setenv("FLOTILLA_AWS_ENDPOINT_URL", aws_endpoint_url)
    monkeypatch.setenv("FLOTILLA_ARTIFACT_BUCKET", unique)
    monkeypatch.setenv("FLOTILLA_CACHE_DIR", str(tmp_path / "cache"))
    status, report = run_json(capsys, "--for", "worker", "--for", "dispatcher")
    assert (status, report["failed"]) == (0, [])
    services = report["services"]
    assert services["rabbitmq"]["detail"].startswith("RabbitMQ ")
    assert services["redis"]["detail"].startswith("Redis ")
    assert "does not exist yet" in services["s3"]["detail"]
    assert report["cache"] | {"parts": None} == {
        "ok": True, "dir": str(tmp_path / "cache"), "exists": False, "writable": True,
        "bytes": 0, "files": 0, "parts": None,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--require", "nope"], "unknown check or use: nope"),
        (["--no-services", "--require", "redis"], "redis required but --no-services skips it"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["doctor", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--for", "nope"], ["--timeout", "0"], ["--timeout", "x"]])
def test_bad_flags_are_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["doctor", *argv])
    assert exited.value.code == 2


def test_build_use_needs_componentize_py(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = dict(FAKE_TOOLS, **{"componentize-py": Tool(False, note="not found")})
    monkeypatch.setattr(toolchains, "find_all", lambda: tools)
    status, report = run_json(capsys, "--no-services", "--for", "build", "--require", "rust,wit")
    assert report["required"] == ["componentize-py", "wasm-tools", "wit", "rust"]
    assert (status, report["failed"]) == (1, ["componentize-py", "rust"])


def test_no_services_drops_the_service_checks_a_use_implies() -> None:
    assert doctor.required(["worker"], [], services=False) == [
        "settings", "wasmtime", "wasm-tools", "cache"
    ]
    assert doctor.required(["worker", "dispatcher"], ["cache", "c-extension"]) == [
        "settings", "wasmtime", "wasm-tools", "cache", "rabbitmq", "redis", "s3", "c-extension"
    ]


def test_cli_lists_the_same_uses_as_the_doctor() -> None:
    assert set(doctor_command.USES) == set(doctor.USES)
    assert all(set(needs) <= set(doctor.CHECKS) for needs in doctor.USES.values())


def test_cache_size_and_an_unwritable_cache(tmp_path: Path) -> None:
    (tmp_path / "artifacts" / "e").mkdir(parents=True)
    (tmp_path / "artifacts" / "e" / "a.cwasm").write_bytes(b"x" * 1000)
    (tmp_path / "guests").mkdir()
    (tmp_path / "guests" / "g.wasm").write_bytes(b"y" * 24)
    found = doctor.cache(str(tmp_path))
    assert (found["ok"], found["bytes"], found["files"]) == (True, 1024, 2)
    assert found["parts"] == {"artifacts": 1000, "guests": 24}
    blocker = tmp_path / "file"
    blocker.write_text("")
    # Under a regular file nothing can be created, even as root.
    assert doctor.cache(str(blocker / "cache"))["ok"] is False


def test_bad_settings_are_a_failed_check_not_a_crash(
    capsys: pytest.CaptureFixture[str], fake_tools: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_CONCURRENCY", "many")
    status, report = run_json(capsys, "--for", "worker")
    assert status == 1
    assert "FLOTILLA_CONCURRENCY" in report["settings"]["error"]
    assert {"settings", "cache", "rabbitmq", "redis", "s3"} <= set(report["failed"])


def test_extras_of_the_test_install_are_all_present() -> None:
    assert {name: e["ok"] for name, e in doctor.extras().items()} == {
        "build": True, "dev": True, "loadtest": True, "tracing": True
    }


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("amqp://u:p@h:5672/v") == "amqp://u:***@h:5672/v"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_real_toolchains_run_and_a_missing_tool_says_how_to_get_it(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH but this empty directory
    done = subprocess.run(
        [sys.executable, "-m", "flotilla", "doctor", "--json", "--no-services"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    tools = json.loads(done.stdout)["toolchains"]
    # Beside the interpreter: installed with flotilla (and its [build] extra for the tests).
    assert tools["wasm-tools"]["ok"] and tools["wasm-tools"]["version"].startswith("wasm-tools ")
    expected = "componentize-py " + metadata.version("componentize-py")
    assert tools["componentize-py"]["version"] == expected
    assert tools["node"] == {"ok": False, "path": None, "version": None,
                             "note": "not found: apt-get install nodejs"}
    assert tools["jco"]["note"].startswith("not found: npm i")
