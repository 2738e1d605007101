"""Echo: returns the request's body and headers with status 200."""

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    """The function's entry point."""

    def handle(self, request: types.Request) -> types.Response:
        """Reply with the request's own headers and body."""
        return types.Response(status=200, headers=list(request.headers), body=request.body)
