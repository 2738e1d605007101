"""`python -m loadtest run`, bounded to a few seconds: in dev mode (MemoryTransport, in the
load generator's process) and against the real fleet on RabbitMQ; JSON result and PNG chart."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.fleet import ROOT, Fleet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def loadtest(*args: str) -> tuple[int, str]:
    """Run `python -m loadtest ARGS`; (exit status, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode()


def check_result(out: Path, scenario: str, mode: str) -> dict[str, Any]:
    """The JSON result is complete and the chart is a PNG."""
    doc: dict[str, Any] = json.loads(out.with_suffix(".json").read_text())
    (run,) = doc["runs"]
    summary = run["summary"]
    assert summary["name"] == scenario and summary["mode"] == mode
    assert summary["ok"] > 0 and summary["errors"] == {}
    assert summary["p50_ms"] > 0 and summary["p99_ms"] >= summary["p50_ms"]
    assert run["timeline"] and all(point["rps"] >= 0 for point in run["timeline"])
    assert doc["machine"]["nproc"] >= 1 and len(doc["machine"]["loadavg"]) == 3
    assert out.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
    return doc


@pytest.mark.asyncio
async def test_open_loop_in_dev_mode(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    status, text = await loadtest("run", "--fleet", "dev", "--scenario", "echo", "--mode", "open",
                                  "--rate", "20", "--duration", "2", "--out", str(out))
    assert status == 0, text
    doc = check_result(out, "echo", "open")
    assert doc["params"]["fleet"] == "dev"
    assert "p99_ms" in text  # the printed table


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_closed_loop_mixed_against_rabbitmq(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "rabbit"
    status, text = await loadtest("run", "--fleet", fleet.base_url, "--scenario", "mixed",
                                  "--concurrency", "4", "--duration", "2", "--out", str(out))
    assert status == 0, text
    doc = check_result(out, "mixed", "closed")
    assert doc["runs"][0]["summary"]["concurrency"] == 4


@pytest.mark.integration
@pytest.mark.asyncio
async def test_procs_compares_worker_shapes_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "procs"
    status, text = await loadtest("procs", "--shapes", "1x2", "2x1", "--rounds", "2",
                                  "--round-s", "1", "--concurrency", "4", "--out", str(out))
    assert status == 0, text
    doc = json.loads(out.with_suffix(".json").read_text())
    rows = {row["shape"]: row for row in doc["table"]}
    assert set(rows) == {"1x2", "2x1"}
    for row in rows.values():
        assert row["rps"] > 0 and row["c1_p50_ms"] > 0 and row["errors"] == 0
        assert len(row["rounds_rps"]) == 2 and row["worker_cpu_us_per_call"] > 0
    assert rows["1x2"]["rps_vs_first"] == "1.00x"
    # Memory of every process of each worker: a supervisor and its P processes.
    memory = doc["memory_kib"]
    assert set(memory["1x2"]) == {"supervisor", "process 0"}
    assert set(memory["2x1"]) == {"supervisor", "process 0", "process 1"}
    assert all(m["pss"] > 0 and m["rss"] >= m["pss"] for m in memory["2x1"].values())


@pytest.mark.integration
@pytest.mark.asyncio
async def test_procs_drain_and_memory_modes() -> None:
    status, text = await loadtest("procs", "--shapes", "2x1", "--drain", "40", "--rounds", "1")
    assert status == 0, text
    assert re.search(r"^2x1\s+\d+\s+1\.00x\s+\d+", text, re.MULTILINE), text
    status, text = await loadtest("procs", "--shapes", "2x1", "--memory")
    assert status == 0, text
    row = re.search(r"^2x1((?:\s+[\d.]+){8})\s+0\s*$", text, re.MULTILINE)
    assert row, text
    sup_rss, sup_pss, rss, pss, _, _, total_rss, total_pss = map(float, row.group(1).split())
    assert 0 < sup_pss <= sup_rss and 0 < pss <= rss
    assert total_rss == pytest.approx(sup_rss + 2 * rss, abs=1)
    assert total_pss == pytest.approx(sup_pss + 2 * pss, abs=1)
