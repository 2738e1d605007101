"""`flotilla bench sandbox` per language (loadtest/languages.py): every language has its key,
measured or null with the reason, beside the WAT echo measured in the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.build import missing_toolchain
from flotilla.cli import main
from flotilla.settings import WorkerSettings
from loadtest.languages import LANGUAGES, find_echo, measure_languages


@pytest.mark.slow
def test_every_language_is_measured_or_says_why() -> None:
    # The shared guest cache: each echo is built once per machine, not once per run.
    figures = measure_languages(WorkerSettings.from_env().cache_dir, quick=True)
    table = figures["languages"]
    assert table["wat"]["p50_us"] > 0
    assert figures["python_p50_us"] == table["python"]["p50_us"] > 0
    assert table["python"]["p99_us"] >= table["python"]["p50_us"]
    assert table["python"]["size_bytes"] > 1_000_000 and table["python"]["raw_export"] is True
    for language in LANGUAGES:
        row = table[language]
        assert figures[f"{language}_p50_us"] == row["p50_us"]
        usable = find_echo(language) is not None and missing_toolchain(language) is None
        if usable:
            assert row["p50_us"] > 0, row
        else:
            assert row["p50_us"] is None and row["reason"], row


def test_bench_json_carries_the_language_keys(capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "sandbox", "--json", "--quick", "--no-python", "--no-baseline"]
    assert main(argv) == 0
    figures = json.loads(capfd.readouterr().out)
    assert {f"{lang}_p50_us" for lang in ("python", "rust", "js", "c")} <= set(figures)
    assert "trivial_p50_us" in figures["flotilla"]  # today's keys stay where they were


def test_find_echo_takes_the_first_candidate(tmp_path: Path) -> None:
    assert find_echo("rust", tmp_path) is None
    (tmp_path / "examples" / "rust" / "echo").mkdir(parents=True)
    assert find_echo("rust", tmp_path) == tmp_path / "examples" / "rust" / "echo"
    (tmp_path / "examples" / "echo" / "rust").mkdir(parents=True)
    assert find_echo("rust", tmp_path) == tmp_path / "examples" / "echo" / "rust"
