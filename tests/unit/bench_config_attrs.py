"""Benchmark: one attribute read of the function config (the worker reads `timeout_ms` and
`max_body_bytes` per invocation) against a plain frozen dataclass (the config before it
became a pydantic model) and a pydantic BaseModel, in the same run.

    flock /tmp/bench.lock .venv/bin/python -m tests.unit.bench_config_attrs

Not a test: pytest does not collect it.
"""

from __future__ import annotations

import dataclasses
import timeit

from pydantic import BaseModel, ConfigDict

from flotilla.config import FunctionConfig

READS = 5_000_000


@dataclasses.dataclass(frozen=True)
class OldStyle:
    """The shape of the config before: a frozen stdlib dataclass."""

    name: str
    timeout_ms: int = 30_000


class AsBaseModel(BaseModel):
    """The same fields as a frozen pydantic BaseModel."""

    model_config = ConfigDict(frozen=True)
    name: str
    timeout_ms: int = 30_000


def per_read_ns(statement: str, obj: object) -> float:
    """Best of 7 runs, in nanoseconds per execution of `statement`."""
    return min(timeit.repeat(statement, globals={"o": obj}, number=READS, repeat=7)) / READS * 1e9


def main() -> None:
    """Print the read cost of each, minus the loop's own."""
    subjects = {
        "frozen dataclass (before)": OldStyle("x"),
        "pydantic BaseModel": AsBaseModel(name="x"),
        "FunctionConfig (pydantic dataclass)": FunctionConfig("x"),
    }
    loop = per_read_ns("o", 1)
    for name, obj in subjects.items():
        cost = per_read_ns("o.timeout_ms", obj) - loop
        print(f"{name:38s} {cost:5.1f} ns per read (loop overhead subtracted)")


if __name__ == "__main__":
    main()
