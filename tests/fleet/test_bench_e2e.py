"""Smoke run of `flotilla bench e2e --json` with a handful of calls (not a speed test)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "http_c1_p50_ms", "http_c64_rps", "client_c1_p50_ms", "client_c64_rps",
    "bare_c1_p50_ms", "bare_c64_rps",
)


def test_bench_e2e_json_reports_every_figure_and_every_call_succeeds(
    amqp_url: str, redis_url: str
) -> None:
    env = {**os.environ, "FLOTILLA_AMQP_URL": amqp_url, "FLOTILLA_REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "flotilla", "bench", "e2e", "--json",
         "--requests", "64", "--c1-requests", "5", "--warmup", "2", "--rounds", "1"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, key
    assert figures["errors"] == {}
    assert figures["ok"] == figures["requests"]
    assert figures["requests"]["http_c64"] == 64 and figures["requests"]["client_c1"] == 5
    # It cleaned up after itself: its invocations queue is gone.
    assert not asyncio.run(_queue_exists(amqp_url, f"{figures['prefix']}.sync"))


async def _queue_exists(amqp_url: str, name: str) -> bool:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True
