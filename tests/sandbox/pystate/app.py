"""State probe guest: module-level state that a fresh instance must always find untouched."""

import json

import wit_world
from wit_world.imports import types

CALLS = [0]
KEPT: dict[int, bytes] = {}


class WitWorld(wit_world.WitWorld):
    """Counts its calls and keeps 256 KiB per call: both must start over in every instance."""

    def handle(self, request: types.Request) -> types.Response:
        """Report what this instance saw before this call, then add to it."""
        seen = {"calls": CALLS[0], "kept": len(KEPT), "bytes": sum(map(len, KEPT.values()))}
        CALLS[0] += 1
        KEPT[len(KEPT)] = bytes([CALLS[0] % 251]) * (256 * 1024)
        return types.Response(status=200, headers=[], body=json.dumps(seen).encode())
