"""__NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in globals."""

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    """The function's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Greet the caller with what they sent."""
        body = b"Hello from __NAME__! You sent: " + request.body
        return types.Response(status=200, headers=[("content-type", "text/plain")], body=body)
