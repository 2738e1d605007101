"""`flotilla bench sandbox --json`: the fault, full-invocation and 1-vs-2 loop keys (a bounded
run, no speed asserted) and its argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.cli import main
from tests.sandbox.conftest import persistent_cache_dir

HEADLINE = (
    "python_minflt_per_inv",
    "python_full_p50_us",
    "python_2proc_inv_per_s",
    "python_2thread_inv_per_s",
    "python_1thread_inv_per_s",
    "trivial_minflt_per_inv",
    "trivial_full_p50_us",
)
PER_GUEST = ("p50_us", "full_p50_us", "minflt_per_inv", "user_us_per_inv", "sys_us_per_inv")


def _bench(capfd: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    argv = ["bench", "sandbox", "--json", "--quick", "--cache-dir", str(persistent_cache_dir())]
    assert main([*argv, *extra]) == 0
    return json.loads(capfd.readouterr().out)  # type: ignore[no-any-return]


def _number(value: object) -> float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value
    return float(value)


def test_json_has_fault_full_invocation_and_loop_keys(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from flotilla.sandbox.guests import packaged

    wat = tmp_path / "echo.wasm"
    wat.write_bytes(packaged("echo", persistent_cache_dir()))
    figures = _bench(capfd, "--scaling", "20", "--guest", f"extra={wat}")
    for key in HEADLINE:
        assert _number(figures[key]) >= 0, key
    for key in ("python_full_p50_us", "python_2proc_inv_per_s", "python_2thread_inv_per_s"):
        assert _number(figures[key]) > 0, key
    for side in ("flotilla", "baseline"):
        figures_of_side = figures[side]
        assert isinstance(figures_of_side, dict)
        for guest in ("trivial", "python", "extra"):
            for key in PER_GUEST:
                assert _number(figures_of_side[f"{guest}_{key}"]) >= 0, (side, guest, key)
    flotilla = figures["flotilla"]
    assert isinstance(flotilla, dict)
    # full = invocation + teardown, so never below the invocation alone
    assert flotilla["python_full_p50_us"] >= flotilla["python_p50_us"] * 0.999
    # today's keys are still there
    assert {"trivial_p50_us", "python_p99_us", "per_kib_us", "call_path"} <= set(flotilla)
    assert figures["python_full_p50_us"] == flotilla["python_full_p50_us"]


def test_scaling_zero_skips_the_loops_and_keeps_the_rest(capfd: pytest.CaptureFixture[str]) -> None:
    figures = _bench(capfd, "--scaling", "0", "--no-baseline", "--engine",
                     "linear_memory_keep_resident=0")
    assert "python_2proc_inv_per_s" not in figures
    assert _number(figures["python_minflt_per_inv"]) > 0  # nothing kept resident: it faults


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "no_such_setting=1"], "unknown engine setting"),
        (["--engine", "linear_memory_keep_resident=lots"], "takes an integer"),
        (["--engine", "memory_init_cow=maybe"], "takes true or false"),
        (["--guest", "no-equals-sign"], "NAME=VALUE"),
    ],
)
def test_bad_arguments_are_refused_clearly(
    capfd: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["bench", "sandbox", "--json", "--quick", "--no-python", *args]) == 2
    assert message in capfd.readouterr().err
