"""Smoke runs of `flotilla bench e2e --json` with a handful of calls (not speed tests).

One run per guest: the Python echo (built with componentize-py) beside the bare echo and
Celery, and the WAT echo with Celery made unimportable, which must give null Celery
figures and a message rather than a crash. The checks are on shape and sanity (every call
answered, figures positive and within physical bounds, ratios computed from the figures),
never on speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from loadtest.e2e import headline

ROOT = Path(__file__).resolve().parents[2]
FLOTILLA_KEYS = (
    "http_c1_p50_ms", "http_c64_rps", "client_c1_p50_ms", "client_c64_rps",
    "bare_c1_p50_ms", "bare_c64_rps",
)
CELERY_KEYS = ("celery_c1_p50_ms", "celery_c64_rps")


def _bench(amqp_url: str, redis_url: str, *args: str, pythonpath: str | None = None,
           timeout: float = 200) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "FLOTILLA_AMQP_URL": amqp_url, "FLOTILLA_REDIS_URL": redis_url}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "flotilla", "bench", "e2e", "--json",
         "--requests", "64", "--c1-requests", "5", "--warmup", "2", "--rounds", "1", *args],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _check_plausible(figures: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = figures[key]
        assert isinstance(value, (int, float)), key
        if key.endswith("_p50_ms"):
            # A round trip through a broker on loopback: above 50 µs, below the call timeout.
            assert 0.05 < value < 30_000, (key, value)
        else:
            # 64 calls answered: positive, and not faster than 1 µs per call.
            assert 0 < value < 1_000_000, (key, value)


def _check_ratios(figures: dict[str, Any], bases: tuple[str, ...]) -> None:
    for system in ("http", "client"):
        for base in bases:
            assert figures[f"{system}_vs_{base}_c64"] == pytest.approx(
                figures[f"{system}_c64_rps"] / figures[f"{base}_c64_rps"], rel=0.01, abs=0.002)
            assert figures[f"{system}_vs_{base}_c1_p50"] == pytest.approx(
                figures[f"{system}_c1_p50_ms"] / figures[f"{base}_c1_p50_ms"], rel=0.01,
                abs=0.002)


def _check_stages(stages: dict[str, dict[str, float | None]]) -> None:
    """Each stage's mean comes from the processes' own histograms; each interval encloses
    the next one in, call by call, so their means are ordered too."""
    http, client = stages["http"], stages["client"]
    for key in ("call", "dispatcher_request", "publish_to_reply", "publish_to_worker_start",
                "worker_delivery_to_reply"):
        assert isinstance(http[key], float) and http[key] >= 0, (key, http)
    assert http["call"] >= http["dispatcher_request"] >= http["publish_to_reply"]
    assert http["publish_to_reply"] >= http["worker_delivery_to_reply"] > 0
    # The Python client does not pass through the dispatcher.
    assert client["dispatcher_request"] is None and client["publish_to_reply"] is None
    assert client["call"] >= client["worker_delivery_to_reply"] > 0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_python_guest_reports_every_figure_beside_bare_and_celery(
    amqp_url: str, redis_url: str
) -> None:
    figures, _ = _bench(amqp_url, redis_url, "--guest", "python", timeout=280)
    assert figures["guest"] == "python"
    _check_plausible(figures, FLOTILLA_KEYS + CELERY_KEYS)
    _check_ratios(figures, ("bare", "celery"))
    assert figures["celery_skipped"] is None
    assert set(figures["targets"]) == {"http_vs_celery_c64", "http_vs_bare_c64", "http_c1_p50_ms"}
    assert all(isinstance(t["met"], bool) for t in figures["targets"].values())
    assert figures["errors"] == {}
    assert figures["ok"] == figures["requests"]
    assert figures["requests"]["celery_c64"] == 64 and figures["requests"]["client_c1"] == 5
    _check_stages(figures["c1_stages_ms"])
    # It cleaned up after itself: its sync lane and Celery queues are gone.
    prefix = figures["prefix"]
    assert not asyncio.run(_queue_exists(amqp_url, f"{prefix}.sync"))
    assert not asyncio.run(_queue_exists(amqp_url, f"{prefix}.celery"))


@pytest.mark.integration
@pytest.mark.timeout(200)
def test_wat_guest_without_celery_reports_null_celery_figures_and_says_why(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    # A `celery` package that fails to import shadows the installed one.
    (tmp_path / "celery").mkdir()
    (tmp_path / "celery" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    figures, stderr = _bench(amqp_url, redis_url, "--guest", "wat", pythonpath=str(tmp_path))
    assert figures["guest"] == "wat"
    _check_plausible(figures, FLOTILLA_KEYS)
    _check_ratios(figures, ("bare",))
    for key in (*CELERY_KEYS, "http_vs_celery_c64", "client_vs_celery_c1_p50"):
        assert figures[key] is None, key
    assert "hidden by the test" in figures["celery_skipped"]
    assert "no Celery baseline" in stderr
    assert set(figures["targets"]) == {
        "http_vs_bare_c1_p50", "client_vs_bare_c1_p50", "http_vs_bare_c64", "client_vs_bare_c64"}
    assert figures["errors"] == {}
    assert figures["ok"] == figures["requests"]
    assert "celery_c64" not in figures["requests"]
    assert not asyncio.run(_queue_exists(amqp_url, f"{figures['prefix']}.sync"))


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_two_celery_baselines_on_one_broker_both_start(amqp_url: str, unique: str) -> None:
    # Two benchmarks at once on one machine: with Celery's default node name the second
    # worker died on the first one's exclusive remote-control queue (RESOURCE_LOCKED).
    from loadtest import celery_echo

    queues = [f"{unique}-celery-a", f"{unique}-celery-b"]
    procs = [
        subprocess.Popen(
            celery_echo.worker_argv(queue, 1), cwd=ROOT, text=True,
            env={**os.environ, **celery_echo.worker_env(amqp_url, queue)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for queue in queues
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            # Reads until the worker says it is ready; a worker that dies ends the output.
            lines = [line for line in _until(proc.stdout, celery_echo.READY)]
            assert celery_echo.READY in lines[-1], "".join(lines[-20:])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        asyncio.run(_delete(amqp_url, queues))


def _until(stream: Any, marker: str) -> Any:
    for line in stream:
        yield line
        if marker in line:
            return


async def _delete(amqp_url: str, queues: list[str]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
            await channel.exchange_delete(queue)


def test_headline_marks_a_target_unmeasured_when_its_baseline_did_not_run() -> None:
    run = {"p50_ms": 2.0, "rps": 100.0, "requests": 10, "ok": 10, "errors": {}}
    results = {
        "guest": "python", "prefix": "x", "load_average": [0.0, 0.0, 0.0],
        "celery_skipped": "not requested",
        **{f"{s}_c{c}": dict(run) for s in ("bare", "http", "client") for c in (1, 64)},
    }
    figures = headline(results)
    assert figures["celery_c64_rps"] is None and figures["http_vs_celery_c64"] is None
    assert figures["targets"]["http_vs_celery_c64"]["met"] is None
    assert figures["targets"]["http_vs_bare_c64"] == {"value": 1.0, "target": ">= 0.4",
                                                      "met": True}
    assert figures["targets"]["http_c1_p50_ms"]["met"] is True


async def _queue_exists(amqp_url: str, name: str) -> bool:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True
