"""WASI as a guest sees it, checked one capability at a time with the Python probe guest."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from flotilla.sandbox import LoadedFunction, Outcome, Sandbox
from flotilla.sandbox.wasi import OUTPUT_CAP
from tests.sandbox.conftest import config, req


def probe_json(sandbox: Sandbox, fn: LoadedFunction, mode: str, **cfg: Any) -> Any:
    result = sandbox.invoke(fn, config(**cfg), req(mode.encode()))
    assert result.outcome is Outcome.OK, result.error
    return json.loads(result.response.body)


def test_environment_is_exactly_the_functions(
    sandbox: Sandbox, probe: LoadedFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SECRET", "must-not-leak")
    result = sandbox.invoke(probe, config(env={"GREETING": "hi", "EMPTY": ""}), req(b"env"))
    env = json.loads(result.response.body)
    assert env == {
        "GREETING": "hi",
        "EMPTY": "",
        "FLOTILLA_FUNCTION_NAME": "t",
        "FLOTILLA_INVOCATION_ID": env["FLOTILLA_INVOCATION_ID"],
    }
    second = sandbox.invoke(probe, config(), req(b"env"))
    assert json.loads(second.response.body)["FLOTILLA_INVOCATION_ID"] == second_id(second)
    assert second_id(second) != env["FLOTILLA_INVOCATION_ID"]


def second_id(result: Any) -> str:
    return str(json.loads(result.response.body)["FLOTILLA_INVOCATION_ID"])


def test_invocation_id_is_the_requests(sandbox: Sandbox, probe: LoadedFunction) -> None:
    request = req(b"env")
    result = sandbox.invoke(probe, config(), request)
    assert json.loads(result.response.body)["FLOTILLA_INVOCATION_ID"] == request.invocation_id


def test_no_files(sandbox: Sandbox, probe: LoadedFunction) -> None:
    assert "error" in probe_json(sandbox, probe, "open")
    listing = probe_json(sandbox, probe, "listdir")
    assert "error" in listing or listing == {"ok": "[]"}


def test_no_sockets(sandbox: Sandbox, probe: LoadedFunction) -> None:
    assert "error" in probe_json(sandbox, probe, "socket")


def test_no_name_lookup(sandbox: Sandbox, probe: LoadedFunction) -> None:
    assert "error" in probe_json(sandbox, probe, "dns")


def test_stdin_is_empty(sandbox: Sandbox, probe: LoadedFunction) -> None:
    assert probe_json(sandbox, probe, "stdin") in ({"ok": "''"}, {"ok": "None"}) or "error" in (
        probe_json(sandbox, probe, "stdin")
    )


def test_stdout_and_stderr_become_logs(
    sandbox: Sandbox, probe: LoadedFunction, capfd: pytest.CaptureFixture[str]
) -> None:
    result = sandbox.invoke(probe, config(), req(b"print"))
    assert result.outcome is Outcome.OK
    lines = [(r.level, r.message) for r in result.logs]
    assert ("stdout", "hello stdout") in lines
    assert ("stderr", "hello stderr") in lines
    out, err = capfd.readouterr()
    assert "hello" not in out and "hello" not in err


def test_output_is_capped(sandbox: Sandbox, probe: LoadedFunction) -> None:
    result = sandbox.invoke(probe, config(), req(b"flood"))  # ~200 KiB of prints
    assert result.outcome is Outcome.OK
    assert sum(len(r.message.encode()) for r in result.logs) <= OUTPUT_CAP
    assert result.logs_dropped > 0


def test_exit_ends_the_invocation_not_the_worker(sandbox: Sandbox, probe: LoadedFunction) -> None:
    result = sandbox.invoke(probe, config(), req(b"exit"))
    assert result.outcome is Outcome.TRAP
    assert "guest exited with code" in (result.error or "")  # SystemExit(3) -> exit(1)
    assert sandbox.invoke(probe, config(), req(b"echo")).outcome is Outcome.OK


def test_clocks_work(sandbox: Sandbox, probe: LoadedFunction) -> None:
    got = probe_json(sandbox, probe, "time")
    assert abs(got["time"] - time.time()) < 60
    assert got["monotonic"] > 0


def test_random_works(sandbox: Sandbox, probe: LoadedFunction) -> None:
    a = probe_json(sandbox, probe, "random")
    b = probe_json(sandbox, probe, "random")
    assert a["urandom"] != b["urandom"] and len(bytes.fromhex(a["urandom"])) == 16


def test_python_memory_bomb_is_a_memory_limit(sandbox: Sandbox, probe: LoadedFunction) -> None:
    result = sandbox.invoke(probe, config(memory_limit_mb=64), req(b"memory"))
    assert result.outcome is Outcome.MEMORY_LIMIT, result.error
    assert sandbox.invoke(probe, config(), req(b"echo")).outcome is Outcome.OK


def test_python_err_is_a_function_error(sandbox: Sandbox, probe: LoadedFunction) -> None:
    result = sandbox.invoke(probe, config(), req(b"err"))
    assert (result.outcome, result.error) == (Outcome.FUNCTION_ERROR, "nope")


def test_python_uncaught_exception_is_a_trap(sandbox: Sandbox, probe: LoadedFunction) -> None:
    result = sandbox.invoke(probe, config(), req(b"raise"))
    assert result.outcome is Outcome.TRAP
    assert any("ValueError" in r.message for r in result.logs)
    assert sandbox.invoke(probe, config(), req(b"echo")).outcome is Outcome.OK


def test_python_globals_do_not_survive(sandbox: Sandbox, probe: LoadedFunction) -> None:
    first = probe_json(sandbox, probe, "random")
    assert first != probe_json(sandbox, probe, "random")
    assert os.environ.get("FLOTILLA_INVOCATION_ID") is None  # nothing leaked into the worker
