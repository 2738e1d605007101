"""Load scenarios named by shape: which function, which body, sync or async.

Every scenario runs against the guests `loadtest.fleet` deploys: `echo` (examples/echo) and
`probe` (tests/guests/python/probe, whose JSON ops give host calls and CPU work).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class Scenario:
    """One load shape; `async_share` of the calls go through jobs instead of a sync invoke."""

    name: str
    function: str
    body: bytes
    description: str
    async_share: float = 0.0


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


# A read-through in two host calls: read the key, fill it only when absent.
CACHE_OPS = {"op": "batch", "ops": [
    {"op": "cache.get", "key": "loadtest-readthrough"},
    {"op": "cache.set_if_absent", "key": "loadtest-readthrough", "value": "v" * 256,
     "ttl_ms": 600_000},
]}

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("echo", "echo", b"hello", "trivial echo: 5-byte body, Python echo guest"),
    Scenario("cache", "probe", _json(CACHE_OPS),
             "cache read-through: cache.get + cache.set_if_absent on Redis"),
    Scenario("cpu", "probe", _json({"op": "sleep", "ms": 20}),
             "CPU-heavy guest: 20 ms busy loop inside the sandbox"),
    Scenario("large-64k", "echo", b"x" * (64 * KIB), "large payload: 64 KiB echoed"),
    Scenario("large-1m", "echo", b"x" * (1024 * KIB), "large payload: 1 MiB echoed"),
    Scenario("mixed", "echo", b"hello",
             "mixed: half sync invokes, half jobs (submit + wait for the result)",
             async_share=0.5),
)}


def get(name: str) -> Scenario:
    """The scenario called `name` (ValueError naming the known ones otherwise)."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


def with_payload(scenario: Scenario, size: int) -> Scenario:
    """The scenario with a body of `size` bytes instead of its own (echo-shaped only)."""
    return Scenario(f"{scenario.name}-{size}B", scenario.function, b"x" * size,
                    f"{scenario.description} (body {size} bytes)", scenario.async_share)
