"""Limits and outcomes: each failure stays inside its invocation; the next one succeeds."""

from __future__ import annotations

import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from flotilla.config import MAX_MAX_BODY_BYTES
from flotilla.hosts.base import HostError
from flotilla.sandbox import LoadedFunction, Outcome, RequestTooLarge, Sandbox
from tests.sandbox.conftest import FakeCache, config, req


def assert_next_ok(sandbox: Sandbox, fn: LoadedFunction) -> None:
    """The invocation after a failure, on the same Sandbox, works."""
    result = sandbox.invoke(fn, config(), req(b"after"))
    assert result.outcome is Outcome.OK, result.error
    assert result.response is not None and result.response.body == b"after"


def test_echo_round_trip(sandbox: Sandbox, echo: LoadedFunction) -> None:
    headers = (("x-one", "1"), ("x-ünï", "çødé"), ("x-one", "again"))
    result = sandbox.invoke(echo, config(), req(b"\x00hello\xff", headers))
    assert result.outcome is Outcome.OK
    assert result.response is not None
    assert (result.response.status, result.response.headers, result.response.body) == (
        200,
        headers,
        b"\x00hello\xff",
    )
    assert result.timings.total_us > 0


def test_every_invocation_gets_a_fresh_instance(sandbox: Sandbox, modes: LoadedFunction) -> None:
    counts = [sandbox.invoke(modes, config(), req(b"c")).response.body for _ in range(5)]
    assert counts == [struct.pack("<I", 1)] * 5


def test_infinite_loop_times_out(sandbox: Sandbox, modes: LoadedFunction) -> None:
    result = sandbox.invoke(modes, config(timeout_ms=50), req(b"l"))
    assert result.outcome is Outcome.TIMEOUT
    assert "interrupt" in (result.error or "")
    assert_next_ok(sandbox, modes)


def test_memory_bomb_fails_alone(sandbox: Sandbox, modes: LoadedFunction) -> None:
    # The WAT bomb traps when memory.grow is refused at the store limit; it prints nothing,
    # so it is a plain trap (runtimes that report the failure are classified memory_limit).
    result = sandbox.invoke(modes, config(memory_limit_mb=8), req(b"m"))
    assert result.outcome in (Outcome.TRAP, Outcome.MEMORY_LIMIT)
    assert "unreachable" in (result.error or "")
    assert_next_ok(sandbox, modes)


def test_deep_recursion_traps_with_backtrace(sandbox: Sandbox, modes: LoadedFunction) -> None:
    result = sandbox.invoke(modes, config(), req(b"r"))
    assert result.outcome is Outcome.TRAP
    assert "recurse" in (result.error or "")  # the wasm backtrace names the function
    assert_next_ok(sandbox, modes)


def test_unreachable_is_a_trap(sandbox: Sandbox, modes: LoadedFunction) -> None:
    result = sandbox.invoke(modes, config(), req(b"u"))
    assert result.outcome is Outcome.TRAP
    assert "unreachable" in (result.error or "")
    assert_next_ok(sandbox, modes)


def test_function_error_carries_the_guest_string(sandbox: Sandbox, modes: LoadedFunction) -> None:
    result = sandbox.invoke(modes, config(), req(b"e"))
    assert (result.outcome, result.error, result.response) == (Outcome.FUNCTION_ERROR, "boom", None)


def test_bad_status_is_a_bad_response(sandbox: Sandbox, modes: LoadedFunction) -> None:
    result = sandbox.invoke(modes, config(), req(b"s"))
    assert result.outcome is Outcome.BAD_RESPONSE
    assert "status 99" in (result.error or "")


def test_response_over_max_body_is_a_bad_response(sandbox: Sandbox, modes: LoadedFunction) -> None:
    body = b"b" + struct.pack("<I", 256 * 1024)
    result = sandbox.invoke(modes, config(max_body_bytes=64 * 1024), req(body))
    assert result.outcome is Outcome.BAD_RESPONSE
    assert "262144 bytes exceeds max_body_bytes=65536" in (result.error or "")
    fits = sandbox.invoke(modes, config(max_body_bytes=256 * 1024), req(body))
    assert fits.outcome is Outcome.OK and len(fits.response.body) == 256 * 1024
    assert_next_ok(sandbox, modes)


def test_response_larger_than_memory_limit_cannot_be_built(
    sandbox: Sandbox, modes: LoadedFunction
) -> None:
    body = b"b" + struct.pack("<I", 100 * 1024 * 1024)  # 100 MiB with a 16 MiB memory cap
    result = sandbox.invoke(modes, config(memory_limit_mb=16), req(body))
    assert result.outcome is Outcome.TRAP
    assert_next_ok(sandbox, modes)


def test_100_mib_response_is_a_bad_response(sandbox: Sandbox, modes: LoadedFunction) -> None:
    body = b"b" + struct.pack("<I", 100 * 1024 * 1024)  # fits the 128 MiB default memory
    result = sandbox.invoke(
        modes, config(memory_limit_mb=128, max_body_bytes=MAX_MAX_BODY_BYTES), req(body)
    )
    assert result.outcome is Outcome.BAD_RESPONSE
    # stopped in the guest, before wasmtime copies anything out (flotilla/sandbox/rawabi.py)
    assert "body over 8388608 bytes" in (result.error or "")
    assert_next_ok(sandbox, modes)


def test_largest_allowed_body_round_trips_and_one_more_byte_is_refused(
    sandbox: Sandbox, echo: LoadedFunction
) -> None:
    # The config cap sits below wasmtime's per-call copy budget, so the largest body a
    # config allows must make it in and back out of the guest.
    cfg = config(max_body_bytes=MAX_MAX_BODY_BYTES)
    body = bytes(range(256)) * (MAX_MAX_BODY_BYTES // 256)
    result = sandbox.invoke(echo, cfg, req(body))
    assert result.outcome is Outcome.OK, result.error
    assert result.response is not None and result.response.body == body
    with pytest.raises(RequestTooLarge, match=f"exceeds max_body_bytes={MAX_MAX_BODY_BYTES}"):
        sandbox.invoke(echo, cfg, req(body + b"x"))


def test_request_over_max_body_is_refused(sandbox: Sandbox, echo: LoadedFunction) -> None:
    with pytest.raises(RequestTooLarge, match="exceeds max_body_bytes=10"):
        sandbox.invoke(echo, config(max_body_bytes=10), req(b"x" * 11))


def test_host_call_results_reach_the_guest(
    sandbox: Sandbox, modes: LoadedFunction, fake_cache: FakeCache
) -> None:
    fake_cache.behaviour = lambda key: b"value-of-" + key.encode()
    result = sandbox.invoke(modes, config(), req(b"g"))
    assert (result.response.status, result.response.body) == (200, b"value-of-k")
    fake_cache.behaviour = lambda key: None
    assert sandbox.invoke(modes, config(), req(b"g")).response.status == 404
    assert fake_cache.calls == ["k", "k"]


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (HostError("invalid-argument", "key too long"), 501, b"key too long"),
        (HostError("unavailable", "redis down"), 500, b"redis down"),
        (HostError("no-such-case", "odd"), 500, b"no-such-case: odd"),
        (RuntimeError("host bug"), 500, b"internal error in cache.get: RuntimeError"),
    ],
)
def test_host_errors_become_the_error_variant(
    sandbox: Sandbox,
    modes: LoadedFunction,
    fake_cache: FakeCache,
    error: Exception,
    status: int,
    detail: bytes,
) -> None:
    def fail(key: str) -> bytes:
        raise error

    fake_cache.behaviour = fail
    result = sandbox.invoke(modes, config(), req(b"g"))
    assert result.outcome is Outcome.OK
    assert (result.response.status, result.response.body) == (status, detail)


def test_host_calls_after_the_deadline_do_not_run(
    sandbox: Sandbox, modes: LoadedFunction, fake_cache: FakeCache
) -> None:
    release = threading.Event()

    def slow(key: str) -> None:
        release.wait(0.3)  # the first call outlives the 100 ms deadline

    fake_cache.behaviour = slow
    result = sandbox.invoke(modes, config(timeout_ms=100), req(b"h"))
    assert result.outcome is Outcome.TIMEOUT
    assert len(fake_cache.calls) == 1  # every later call failed without reaching the host
    assert_next_ok(sandbox, modes)


def test_a_guest_hammering_a_host_call_times_out(
    sandbox: Sandbox, modes: LoadedFunction, fake_cache: FakeCache
) -> None:
    result = sandbox.invoke(modes, config(timeout_ms=100), req(b"h"))
    assert result.outcome is Outcome.TIMEOUT
    assert len(fake_cache.calls) > 1
    assert_next_ok(sandbox, modes)


def test_log_host_records_into_the_invocation(sandbox: Sandbox, modes: LoadedFunction) -> None:
    result = sandbox.invoke(modes, config(), req(b"L"))
    assert [(r.level, r.message) for r in result.logs] == [("info", "k")]
    assert sandbox.invoke(modes, config(), req(b"x")).logs == ()


def test_two_threads_at_once(sandbox: Sandbox, modes: LoadedFunction) -> None:
    def run(i: int) -> bytes:
        result = sandbox.invoke(modes, config(), req(b"c"))
        assert result.outcome is Outcome.OK
        return result.response.body

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(run, range(40))) == [struct.pack("<I", 1)] * 40


def test_a_looping_guest_does_not_block_another_thread(
    sandbox: Sandbox, modes: LoadedFunction
) -> None:
    done = threading.Event()
    outcome: list[Outcome] = []

    def loop() -> None:
        outcome.append(sandbox.invoke(modes, config(timeout_ms=3_000), req(b"l")).outcome)
        done.set()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for _ in range(5):  # wasm runs without the GIL, so these finish while the loop spins
            assert_next_ok(sandbox, modes)
        assert not done.is_set()
    finally:
        thread.join()
    assert outcome == [Outcome.TIMEOUT]
