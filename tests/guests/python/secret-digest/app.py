"""Secret digest: reads the secret the request body names and answers only its SHA-256.

The tests that prove a secret's value never leaves Flotilla use it: the guest reads the value
through `secrets.get` and shows nothing a log or response grep could find.

Request body: the secret's name (UTF-8). Answer (200, JSON):
  {"function", "secret", "found": true, "sha256": hex, "length": characters}
  {"function", "secret", "found": false}                 when the function has no such secret
  {"function", "secret", "error": {"case", "detail"}}     when the host call failed
"""

import hashlib
import json
import os

import wit_world
from componentize_py_types import Err
from wit_world.imports import secrets, types


class WitWorld(wit_world.WitWorld):
    """The guest's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Digest the named secret."""
        name = request.body.decode("utf-8")
        answer = {"function": os.environ.get("FLOTILLA_FUNCTION_NAME"), "secret": name}
        try:
            value = secrets.get(name)
        except Err as exc:
            detail = getattr(exc.value, "value", None)
            answer["error"] = {"case": type(exc.value).__name__, "detail": detail}
        else:
            answer["found"] = value is not None
            if value is not None:
                answer["sha256"] = hashlib.sha256(value.encode("utf-8")).hexdigest()
                answer["length"] = len(value)
        body = json.dumps(answer).encode()
        return types.Response(status=200, headers=[("content-type", "application/json")],
                              body=body)
