"""Pure policies of the host bridge and the engine, table-driven."""

from __future__ import annotations

import pytest

from flotilla.hosts.registry import INTERFACES
from flotilla.sandbox.engine import EngineSettings, engine_fingerprint

BY_NAME = {i.name: i for i in INTERFACES}


@pytest.mark.parametrize(
    ("interface", "case", "detail", "expected"),
    [
        ("cache", "unavailable", "down", ("unavailable", "down")),
        ("cache", "invalid-argument", None, ("invalid-argument", "")),
        ("cache", "denied", "x", ("unavailable", "denied: x")),
        ("http", "timeout", "ignored", ("timeout", None)),
        ("http", "too-large", None, ("too-large", None)),
        ("http", "unavailable", "dns", ("connection", "unavailable: dns")),
        ("s3", "denied", "bucket", ("denied", "bucket")),
        ("dynamodb", "whatever", None, ("unavailable", "whatever")),
    ],
)
def test_error_case(
    interface: str, case: str, detail: str | None, expected: tuple[str, str | None]
) -> None:
    assert BY_NAME[interface].error(case, detail) == expected


@pytest.mark.parametrize(
    ("interface", "expected"),
    [
        ("http", ("timeout", None)),
        ("cache", ("unavailable", "invocation deadline exceeded")),
        ("s3", ("unavailable", "invocation deadline exceeded")),
    ],
)
def test_deadline_case(interface: str, expected: tuple[str, str | None]) -> None:
    assert BY_NAME[interface].deadline == expected


def test_fingerprint_changes_with_code_affecting_settings() -> None:
    base = engine_fingerprint(EngineSettings())
    assert base == engine_fingerprint(EngineSettings())
    assert base != engine_fingerprint(EngineSettings(max_wasm_stack=2 << 20))
    assert base != engine_fingerprint(EngineSettings(pooling=False))
    # Pool sizes do not change generated code: artifacts stay shareable.
    assert base == engine_fingerprint(EngineSettings(total_memories=8))


@pytest.mark.parametrize(
    "sequence",
    [
        [(b"x" * 10, 0), (b"y" * 5000, 3), (b"z" * 3, 1), (b"", 2), (b"w" * 70_000, 0)],
        [(bytes(range(256)) * 40, 2), (b"a", 5)],
    ],
)
def test_borrowed_requests_reuse_the_scratch_buffer(sequence: list[tuple[bytes, int]]) -> None:
    from flotilla.sandbox import abi

    for body, n_headers in sequence:  # shrinking and growing bodies, headers after the body
        headers = [(f"h{i}", f"v{i}" * i) for i in range(n_headers)]
        request = abi.BorrowedRequest("inv-ü", "fn", headers, body)
        inv, name, hdrs, got = abi.get_fields(request.val)
        assert (abi.get_string(inv), abi.get_string(name)) == ("inv-ü", "fn")
        assert abi.get_headers(hdrs) == headers
        assert abi.get_bytes(got) == body
