"""JSON logs: a real worker's and dispatcher's lines about an invocation carry its id and
function name; unit checks of flotilla.logs."""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import httpx
import pytest

from flotilla import logs
from loadtest.fleet import Fleet


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a log file, each of which must be a JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_worker_lines_of_an_invocation_carry_its_id_and_function(fleet: Fleet) -> None:
    async with httpx.AsyncClient(base_url=fleet.base_url, timeout=30) as client:
        resp = await client.post("/v1/functions/echo/invoke", content=b"log me")
    assert resp.status_code == 200
    invocation_id = resp.headers["flotilla-invocation-id"]
    assert fleet.log_dir is not None
    # The worker logs the invocation (DEBUG) before it publishes the reply we already have.
    worker = json_lines((fleet.log_dir / "worker0.log").read_text())
    mine = [line for line in worker if line.get("invocation_id") == invocation_id]
    assert mine, "no worker line names the invocation"
    for line in mine:
        assert line["function"] == "echo"
        assert {"time", "level", "logger", "message"} <= line.keys()
    assert any(line["message"].startswith("ran: ok") for line in mine)
    # Lines that concern no invocation carry no invocation fields.
    assert any("invocation_id" not in line for line in worker)
    # The dispatcher's lines of the request (uvicorn logs it before the body is sent).
    dispatcher = json_lines((fleet.log_dir / "dispatcher.log").read_text())
    served = [line for line in dispatcher if line.get("invocation_id") == invocation_id]
    assert served and all(line["function"] == "echo" for line in served)
    assert any("POST /v1/functions/echo/invoke" in line["message"] for line in served)


def test_records_are_tagged_only_while_bound() -> None:
    out = io.StringIO()
    handler = logs.handler("json", out)
    logger = logging.getLogger("tests.ops.bound")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("before")
        logs.bind("inv-1", "fn")
        logger.info("during %d", 1)
        logs.unbind()
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    before, during, after = json_lines(out.getvalue())
    assert "invocation_id" not in before and "invocation_id" not in after
    assert during["invocation_id"] == "inv-1"
    assert during["function"] == "fn"
    assert during["message"] == "during 1"
    assert during["level"] == "INFO" and during["logger"] == "tests.ops.bound"


def test_a_binding_stays_in_its_thread() -> None:
    out = io.StringIO()
    handler = logs.handler("text", out)
    logger = logging.getLogger("tests.ops.threads")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    bound = threading.Event()
    logged = threading.Event()

    def other() -> None:
        logs.bind("inv-thread", "fn")
        bound.set()
        logged.wait(5)
        logs.unbind()

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert bound.wait(5)
        logger.info("main thread")
    finally:
        logged.set()
        thread.join()
        logger.removeHandler(handler)
    assert "inv-thread" not in out.getvalue()
    assert "main thread" in out.getvalue()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json, text"):
        logs.handler("yaml")
