"""The client commands and `flotilla dev`: pure argument parsing, then a real dev process."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.service import split_listen
from flotilla.cli import main
from flotilla.commands.deploy import build_config, parse_duration_ms
from flotilla.commands.functions import parse_header, read_data
from flotilla.errors import SettingsError
from tests.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, ms",
    [("500ms", 500), ("5s", 5000), ("1.5s", 1500), ("2m", 120_000), ("250", 250), (" 3s ", 3000)],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5h", "-1s", "fast"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration_ms(text)


def test_parse_header_and_data(tmp_path: Path) -> None:
    assert parse_header("X-A:  b c ") == ("X-A", "b c")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_header("no colon")
    (tmp_path / "body.bin").write_bytes(b"\x00\x01")
    assert read_data(f"@{tmp_path / 'body.bin'}") == b"\x00\x01"
    assert read_data("text") == b"text"
    assert read_data(None) == b""


def test_deploy_flags_override_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"name": "other", "timeout_ms": 100, "env": {"A": "1"},
                               "allowed_hosts": ["a.com"]}))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    from flotilla.commands import deploy

    deploy.add_parser(sub)
    args = parser.parse_args(
        ["deploy", "fn", "x.wasm", "--config", str(cfg), "--timeout", "5s", "--env", "B=2",
         "--allow-host", "b.com", "--memory", "64"]
    )
    assert build_config(args) == {
        "timeout_ms": 5000, "env": {"A": "1", "B": "2"}, "allowed_hosts": ["a.com", "b.com"],
        "memory_limit_mb": 64,
    }


@pytest.mark.parametrize(
    "listen, expected", [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:80", ("::1", 80)),
                         (":9000", ("127.0.0.1", 9000))],
)
def test_split_listen(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "host:", "host:99999", "host:http"])
def test_split_listen_rejects(listen: str) -> None:
    with pytest.raises(SettingsError):
        split_listen(listen)


def test_dispatcher_requires_an_artifact_key(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["dispatcher", "--artifact-key", "", "--listen", "127.0.0.1:1"])
    assert status == 2
    assert "ARTIFACT_KEY" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dev_url(tmp_path_factory: pytest.TempPathFactory, echo_wasm: Path) -> Iterator[str]:
    """`flotilla dev` in a subprocess, deploying a copy of examples/echo (build cached)."""
    examples = tmp_path_factory.mktemp("examples")
    shutil.copytree(ROOT / "examples" / "echo", examples / "echo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla", "dev", "--listen", f"127.0.0.1:{port}",
         "--examples", str(examples), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the examples deploy in the background; wait for echo's
            seen.append(line)
            if "examples ready" in line:
                break
        assert any("/v1/functions/echo/invoke" in line for line in seen), seen
        if not wait_for_port("127.0.0.1", port, 60):
            proc.kill()
            pytest.fail(f"flotilla dev did not listen: {''.join(seen)}{proc.communicate()[0]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.slow
def test_cli_against_dev_mode(
    dev_url: str, echo_wasm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example was deployed at startup.
    status, out, _ = run_cli(capsys, "functions", "list", "--url", dev_url)
    assert status == 0 and "echo" in out

    status, out, _ = run_cli(capsys, "deploy", "mine", str(echo_wasm), "--timeout", "3s",
                             "--env", "K=V", "--url", dev_url)
    assert status == 0 and out.startswith("deployed mine version 1")
    status, out, _ = run_cli(capsys, "deploy", "mine", str(echo_wasm), "--timeout", "3s",
                             "--env", "K=V", "--url", dev_url)
    assert out.startswith("unchanged mine version 1")

    status, out, _ = run_cli(capsys, "functions", "get", "mine", "--url", dev_url)
    assert json.loads(out)["config"]["env"] == {"K": "V"}

    status, out, err = run_cli(capsys, "jobs", "submit", "mine", "--data", "job body",
                               "--url", dev_url)
    job_id = json.loads(out)["job_id"]
    status, out, _ = run_cli(capsys, "jobs", "get", job_id, "--wait", "10", "--url", dev_url)
    assert json.loads(out)["status"] == "succeeded"

    status, _, err = run_cli(capsys, "invoke", "nope", "--url", dev_url)
    assert status == 1 and "Function not found (404)" in err

    status, _, _ = run_cli(capsys, "functions", "delete", "mine", "--url", dev_url)
    assert status == 0
    status, _, err = run_cli(capsys, "functions", "get", "mine", "--url", dev_url)
    assert status == 1 and "404" in err


@pytest.mark.slow
def test_cli_invoke_prints_the_body(dev_url: str, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    status = main(["invoke", "echo", "--data", "hello dev", "-H", "x-k: v", "--url", dev_url])
    out = capfdbinary.readouterr().out
    assert status == 0 and out == b"hello dev"


@pytest.mark.slow
def test_cli_invoke_sends_method_path_and_query(
    dev_url: str, probe_wasm: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["deploy", "webprobe", str(probe_wasm), "--url", dev_url]) == 0
    capfdbinary.readouterr()
    status = main(["invoke", "webprobe", "-X", "get", "--path", "/a b/c", "-q", "k=v", "-q", "k",
                   "--version", "latest", "-H", "x-probe-op: invocation", "--url", dev_url])
    seen = json.loads(capfdbinary.readouterr().out)["result"]
    assert status == 0
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/a%20b/c", [["k", "v"], ["k", ""]])


@pytest.mark.parametrize("text, ms", [("500ms", 500), ("30s", 30_000), ("5m", 300_000),
                                      ("2h", 7_200_000), ("1d", 86_400_000), ("250", 250)])
def test_parse_delay(text: str, ms: int) -> None:
    from flotilla.commands.jobs import parse_delay_ms

    assert parse_delay_ms(text) == ms


def test_job_and_dlq_flags_that_cannot_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["jobs", "submit", "f", "--delay", "5s", "--run-at", "2030-01-01T00:00:00Z"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["dlq", "purge"]) == 2
    assert main(["dlq", "purge", "0" * 32, "--all"]) == 2


@pytest.mark.slow
def test_cli_jobs_schedules_and_dead_letters_against_dev_mode(
    dev_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A job an hour ahead reads `scheduled`, and can be cancelled (dev mode's timer).
    status, out, _ = run_cli(capsys, "jobs", "submit", "echo", "--delay", "1h", "--url", dev_url)
    job_id = json.loads(out)["job_id"]
    status, out, _ = run_cli(capsys, "jobs", "get", job_id, "--url", dev_url)
    assert json.loads(out)["status"] == "scheduled"
    status, out, _ = run_cli(capsys, "jobs", "cancel", job_id, "--url", dev_url)
    assert status == 0 and json.loads(out)["status"] == "cancelled"
    status, _, err = run_cli(capsys, "jobs", "cancel", job_id, "--url", dev_url)
    assert status == 1 and "409" in err

    # A short delay runs in dev mode too.
    status, out, _ = run_cli(capsys, "jobs", "submit", "echo", "-d", "soon", "--delay", "300ms",
                             "--url", dev_url)
    status, out, _ = run_cli(capsys, "jobs", "get", json.loads(out)["job_id"], "--wait", "10",
                             "--url", dev_url)
    assert json.loads(out)["status"] == "succeeded"

    # The same idempotency key twice: one job.
    ids = []
    for _ in range(2):
        status, out, _ = run_cli(capsys, "jobs", "submit", "echo", "-d", "x",
                                 "--idempotency-key", "cli-key-1", "--url", dev_url)
        ids.append(json.loads(out)["job_id"])
    assert ids[0] == ids[1]

    # A schedule ticking every second submits jobs in dev mode.
    status, out, _ = run_cli(capsys, "schedules", "put", "tick", "--function", "echo",
                             "--cron", "* * * * * *", "-d", "tick", "--url", dev_url)
    assert status == 0 and json.loads(out)["cron"] == "* * * * * *"
    status, out, _ = run_cli(capsys, "schedules", "list", "--url", dev_url)
    assert status == 0 and "tick" in out and "echo" in out
    deadline = time.monotonic() + 15
    while True:
        status, out, _ = run_cli(capsys, "schedules", "get", "tick", "--url", dev_url)
        last = json.loads(out)["last_job"]
        if last is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the dev process ticks on its own clock; nothing here to await
    assert last is not None
    status, out, _ = run_cli(capsys, "jobs", "get", last["job_id"], "--wait", "10",
                             "--url", dev_url)
    assert json.loads(out)["kind"] == "scheduled"
    status, _, _ = run_cli(capsys, "schedules", "delete", "tick", "--url", dev_url)
    assert status == 0
    status, _, err = run_cli(capsys, "schedules", "get", "tick", "--url", dev_url)
    assert status == 1 and "404" in err

    # No dead letters in a fresh dev process; an unknown one is a clear 404.
    status, out, _ = run_cli(capsys, "dlq", "list", "--url", dev_url)
    assert status == 0 and out.startswith("ID")
    status, _, err = run_cli(capsys, "dlq", "show", "0" * 32, "--url", dev_url)
    assert status == 1 and "Dead letter not found (404)" in err


@pytest.mark.slow
def test_spawn_in_dev_mode(
    dev_url: str, probe_wasm: Path, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    config = tmp_path / "probe.json"
    config.write_text(json.dumps({"spawn_functions": ["echo"]}))
    assert main(["deploy", "probe", str(probe_wasm), "--config", str(config),
                 "--url", dev_url]) == 0
    capfdbinary.readouterr()
    op = {"op": "spawn.job", "function": "echo", "body": "kid"}
    assert main(["invoke", "probe", "--data", json.dumps(op), "-i", "--url", dev_url]) == 0
    captured = capfdbinary.readouterr()
    answer = json.loads(captured.out)
    parent = next(line.split(": ", 1)[1] for line in captured.err.decode().splitlines()
                  if line.startswith("flotilla-invocation-id"))
    assert answer["ok"], answer
    assert main(["jobs", "get", answer["result"], "--wait", "10", "--url", dev_url]) == 0
    job = json.loads(capfdbinary.readouterr().out)
    assert (job["status"], job["kind"], job["parent_id"]) == ("succeeded", "spawned", parent)
