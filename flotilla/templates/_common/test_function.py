"""Builds this function and runs it in Flotilla's sandbox, as a worker would: `python -m pytest`."""

import json
from pathlib import Path

from flotilla.build import build_source
from flotilla.config import FunctionConfig
from flotilla.sandbox import Sandbox, new_request
from flotilla.settings import WorkerSettings

HERE = Path(__file__).resolve().parent


def test_it_greets_the_caller() -> None:
    """`hi` in, status 200 and a greeting out."""
    _, built = build_source(HERE)  # cached by content: only the first run compiles
    config = FunctionConfig.from_dict(json.loads((HERE / "config.json").read_text()))
    # No host clients: this function calls none (give it HostClients when yours does).
    sandbox = Sandbox(None, cache_dir=WorkerSettings.from_env().cache_dir)
    try:
        function = sandbox.load(built.path.read_bytes())
        result = sandbox.invoke(function, config, new_request(config.name, b"hi"))
    finally:
        sandbox.close()
    assert result.ok, result.error
    assert result.response is not None
    assert result.response.status == 200
    assert result.response.body == b"Hello from __NAME__! You sent: hi"
