"""`flotilla secrets` without a dispatcher: where a value comes from, new-key, rotate misuse.

The commands against real processes (set from stdin and --value, list, delete, rotate) run in
tests/hardening/test_secrets_never_leak.py.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.cli import build_parser, main
from flotilla.commands.secrets import read_value
from flotilla.secrets import Keyring


def parse(*argv: str) -> object:
    return build_parser().parse_args(["secrets", *argv])


def test_the_value_comes_from_a_file_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"line one\nline two\n")
    assert read_value(parse("set", "fn", "token", "--value-file", str(path))) == \
        b"line one\nline two\n"


def test_the_value_comes_from_piped_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b"from stdin"))
    monkeypatch.setattr(sys, "stdin", fake)
    assert read_value(parse("set", "fn", "token")) == b"from stdin"
    fake = io.TextIOWrapper(io.BytesIO(b"dash"))
    monkeypatch.setattr(sys, "stdin", fake)
    assert read_value(parse("set", "fn", "token", "--value-file", "-")) == b"dash"


def test_value_on_the_command_line_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert read_value(parse("set", "fn", "token", "--value", "v")) == b"v"
    assert "shell history" in capsys.readouterr().err


def test_value_sources_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("set", "fn", "token", "--value", "v", "--value-file", "f")
    assert "not allowed with" in capsys.readouterr().err


def test_a_missing_value_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secrets", "set", "fn", "token", "--value-file", "/nonexistent/x"]) == 2
    assert "cannot read the value" in capsys.readouterr().err


def test_new_key_prints_a_key_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secrets", "new-key", "--kid", "prod3"]) == 0
    line = capsys.readouterr().out.strip()
    assert Keyring.parse(line).current == "prod3"
    assert main(["secrets", "new-key", "--kid", "bad kid"]) == 2


def test_rotate_needs_the_keys(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FLOTILLA_SECRETS_KEY", raising=False)
    assert main(["secrets", "rotate"]) == 2
    assert "FLOTILLA_SECRETS_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("FLOTILLA_SECRETS_KEY", "not-a-key")
    assert main(["secrets", "rotate"]) == 2
    assert "entry 1 is not" in capsys.readouterr().err


@pytest.mark.parametrize("process", ["worker", "dispatcher"])
def test_a_malformed_key_stops_the_process_without_quoting_it(process: str) -> None:
    key = "k1:" + base64.b64encode(b"sixteen byte key").decode()
    env = {**os.environ, "FLOTILLA_SECRETS_KEY": key, "FLOTILLA_ARTIFACT_KEY": "x",
           "FLOTILLA_METRICS_PORT": "0", "FLOTILLA_INSECURE": "true"}
    done = subprocess.run([sys.executable, "-m", "flotilla", process], env=env, timeout=60,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "FLOTILLA_SECRETS_KEY entry 1 (k1): the key must be 32 bytes" in done.stderr
    assert key.split(":")[1] not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
