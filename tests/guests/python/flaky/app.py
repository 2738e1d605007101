"""Flaky: fails until a cache counter reaches a number, for the retry tests.

Request body (JSON): {"key": counter key, "succeed_at": N, "how": "trap" | "err"}. Each run
increments the counter `key` (`cache.increment`); while the count is below N the run fails
(a trap, or the function's `err` with "how": "err"), from the N-th run on it answers 200
with {"runs": count, "attempt": the invocation's attempt}. "succeed_at": 0 never fails;
a number past any retry policy's attempts never succeeds.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import cache, invocation, types


class WitWorld(wit_world.WitWorld):
    """The guest's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Count this run; fail while the count is below `succeed_at`."""
        cmd = json.loads(request.body)
        runs = cache.increment(cmd["key"], 1, 0)
        if runs < int(cmd["succeed_at"]):
            if cmd.get("how") == "err":
                raise Err(f"run {runs} fails on purpose")
            raise RuntimeError(f"run {runs} traps on purpose")
        body = json.dumps({"runs": runs, "attempt": invocation.attempt()}).encode()
        return types.Response(status=200, headers=[("content-type", "application/json")],
                              body=body)
