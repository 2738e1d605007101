"""Pure policy: how a failed call or a returned value maps onto an Outcome."""

from __future__ import annotations

from flotilla.outcomes import Outcome

# Text wasmtime or common guest runtimes produce when linear memory runs out: the store
# limiter makes memory.grow fail (-1), and the guest's allocator then aborts.
MEMORY_MARKERS = (
    "exceeds memory limits",  # instantiation: initial memory above the limit
    "memory allocation of",  # Rust's alloc error handler
    "memoryerror",  # CPython (componentize-py)
    "out of memory",
    "failed to grow memory",
    "cannot allocate memory",
)
TIMEOUT_MARKERS = ("wasm trap: interrupt", "epoch deadline")
# wasmtime bounds the data one call copies between host and guest ("hostcall fuel"); through
# the C API's dynamic values a list<u8> result of ~2.6 MiB already exhausts it, so a guest
# that returns more gets this error instead of a response: a bad response.
TRANSFER_MARKERS = ("too much data is being copied",)


def classify_error(message: str, stderr_tail: str = "", *, past_deadline: bool = False) -> Outcome:
    """Outcome of a guest call that failed with wasmtime error `message`.

    `stderr_tail` is the end of what the guest wrote to stderr (a runtime's last words);
    `past_deadline` tells that the invocation's time had run out when the call failed.
    """
    text = message.lower()
    if any(m in text for m in TIMEOUT_MARKERS):
        return Outcome.TIMEOUT
    if any(m in text for m in TRANSFER_MARKERS):
        return Outcome.BAD_RESPONSE
    tail = stderr_tail.lower()
    if any(m in text or m in tail for m in MEMORY_MARKERS):
        return Outcome.MEMORY_LIMIT
    if past_deadline and "interrupt" in text:
        return Outcome.TIMEOUT
    return Outcome.TRAP


def check_response(status: int, body_len: int, max_body_bytes: int) -> str | None:
    """Why a response is unacceptable, or None when it is fine."""
    if not 100 <= status <= 599:
        return f"status {status} is outside 100-599"
    if body_len > max_body_bytes:
        return f"response body of {body_len} bytes exceeds max_body_bytes={max_body_bytes}"
    return None
