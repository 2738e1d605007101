"""Components built against the 0.1.0 WIT keep linking and running on the 0.1.1 host.

`tests/guests/wit-0.1.0/` is the contract as it was released. The token-vending example
(cache.increment and cache.set on real Redis) and the echo example are built against it
with componentize-py, so they import `flotilla:function/*@0.1.0` and none of the 0.1.1
interfaces; wasmtime's semver matching links them to the 0.1.1 definitions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.build import build_guest
from flotilla.config import FunctionConfig
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import Sandbox, new_request
from flotilla.sandbox.guests import wasm_tools
from flotilla.settings import WorkerSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OLD_WIT = ROOT / "tests" / "guests" / "wit-0.1.0"


def _cache_dir() -> Path:
    base = os.environ.get("FLOTILLA_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "flotilla")
    return Path(base)


@pytest.fixture(scope="module")
def sandbox(redis_url: str) -> Iterator[Sandbox]:
    hosts = HostClients.from_settings(WorkerSettings(redis_url=redis_url))
    sb = Sandbox(hosts, cache_dir=_cache_dir())
    yield sb
    sb.close()
    hosts.close()


def _old(example: str) -> Path:
    return build_guest(ROOT / "examples" / example / "app.py", wit_dir=OLD_WIT)


def _imports(path: Path) -> list[str]:
    wit = subprocess.run(
        [wasm_tools(), "component", "wit", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return re.findall(r"^\s*import (flotilla:[^;]+);", wit, re.MULTILINE)


def test_old_components_import_only_0_1_0() -> None:
    imports = _imports(_old("token-vending"))
    assert "flotilla:function/cache@0.1.0" in imports
    assert all(name.endswith("@0.1.0") for name in imports)
    assert not any("invocation" in name or "spawn" in name for name in imports)


def test_a_0_1_0_component_runs_with_real_hosts(sandbox: Sandbox, unique: str) -> None:
    fn = sandbox.load(_old("token-vending").read_bytes())
    config = FunctionConfig(
        name=unique, timeout_ms=5_000, env={"RATE_LIMIT": "2", "RATE_WINDOW_MS": "60000"}
    )
    statuses = []
    for _ in range(3):
        request = new_request(unique, b"", (("x-caller", "me"),))
        result = sandbox.invoke(fn, config, request)
        assert result.outcome == "ok", result
        assert result.response is not None
        statuses.append(result.response.status)
        if result.response.status == 200:
            assert json.loads(result.response.body)["token"]
    assert statuses == [200, 200, 429]  # the counter lives in Redis, across instances


def test_a_0_1_0_echo_round_trips(sandbox: Sandbox) -> None:
    fn = sandbox.load(_old("echo").read_bytes())
    config = FunctionConfig(name="echo", timeout_ms=5_000)
    result = sandbox.invoke(fn, config, new_request("echo", bytes(range(256)), (("a", "1"),)))
    assert result.outcome == "ok", result
    assert result.response is not None
    assert (result.response.body, result.response.headers) == (bytes(range(256)), (("a", "1"),))
