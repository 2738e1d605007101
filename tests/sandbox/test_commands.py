"""`flotilla run` and `flotilla bench sandbox` end to end (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.cli import main
from tests.guests.wat import build_wat


@pytest.fixture
def modes_file(tmp_path: Path) -> Path:
    path = tmp_path / "modes.wasm"
    path.write_bytes(build_wat("modes"))
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"name": "modes", "timeout_ms": 200}))
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_CACHE_DIR", str(tmp_path / "cache"))


def test_run_prints_status_headers_body_and_logs(
    modes_file: Path, cfg: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            str(modes_file),
            "--config",
            str(cfg),
            "--data",
            "Lhello",
            "--header",
            "X-Test: yes",
        ]
    )
    out, err = capfd.readouterr()
    assert code == 0
    assert out == "status: 200\nX-Test: yes\n\nLhello\n"
    assert "[info] k" in err and "outcome: ok" in err


def test_run_body_from_file(
    modes_file: Path, cfg: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "body").write_bytes(b"xfrom a file")
    assert main(["run", str(modes_file), "-c", str(cfg), "-d", f"@{tmp_path / 'body'}"]) == 0
    assert capfd.readouterr().out.endswith("\n\nxfrom a file\n")


@pytest.mark.parametrize(
    ("data", "code", "outcome"),
    [("l", 3, "timeout"), ("u", 5, "trap"), ("e", 6, "function_error"), ("s", 7, "bad_response")],
)
def test_run_names_the_failed_outcome(
    modes_file: Path,
    cfg: Path,
    data: str,
    code: int,
    outcome: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", str(modes_file), "-c", str(cfg), "-d", data]) == code
    assert f"outcome: {outcome}:" in capfd.readouterr().err


def test_run_rejects_a_non_component(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"nope")
    assert main(["run", str(bad)]) == 2
    assert "not a WebAssembly binary" in capfd.readouterr().err


def test_bench_sandbox_json_smoke(capfd: pytest.CaptureFixture[str]) -> None:
    # The baseline's 1 MiB echo alone takes seconds; it is exercised below on small bodies.
    assert main(["bench", "sandbox", "--json", "--quick", "--no-python", "--no-baseline"]) == 0
    figures = json.loads(capfd.readouterr().out)
    side = figures["flotilla"]
    assert side["trivial_p50_us"] > 0
    assert side["trivial_p99_us"] >= side["trivial_p50_us"]
    assert set(side["per_kib_us"]) == {"1", "64", "1024"}
    assert set(side["trivial_phases_p50_us"]) == {
        "store_p50_us",
        "instantiate_p50_us",
        "call_p50_us",
        "post_return_p50_us",
        "teardown_p50_us",
    }


def test_naive_baseline_runs_the_echo(tmp_path: Path) -> None:
    from flotilla.sandbox.guests import packaged
    from flotilla.sandbox.sandbox import new_request
    from loadtest.sandbox import Naive, measure

    run = Naive().runner(packaged("echo", tmp_path))
    figures = measure(run, new_request("bench", b"x" * 1024), 5)
    assert 0 < figures["p50_us"] <= figures["p99_us"]
