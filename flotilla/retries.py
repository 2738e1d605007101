"""When a failed job runs again: the retry policy as pure functions.

A job attempt that ends with an outcome in its function's `retry.on` is retried while
`attempt < retry.max_attempts`; the next attempt is due after an exponential backoff with
*equal jitter*: the n-th retry waits `cap / 2 + uniform(0, cap / 2)` where
`cap = min(backoff_max_ms, backoff_ms * 2**(n - 1))`. Equal rather than full jitter (AWS
architecture blog, "Exponential Backoff And Jitter"): full jitter may retry at once, and a
user who sets `backoff_ms` to give a downstream time to recover expects at least half of
it; the random half still spreads a burst of failures out.

Synchronous invocations are never retried (the caller decides), and only the attempt
counted on the envelope counts: a redelivery after a worker crash is not an attempt.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

from flotilla.config import RetryPolicy
from flotilla.outcomes import Outcome


class Verdict(enum.Enum):
    """What follows a finished job attempt."""

    DONE = "done"  # succeeded, or failed in a way the policy does not retry: the result stands
    RETRY = "retry"  # failed, retryable, attempts left: run it again after `backoff_ms`
    EXHAUSTED = "exhausted"  # failed, retryable, no attempt left: the result stands, and the
    # envelope goes to the dead letters


def verdict(policy: RetryPolicy, attempt: int, outcome: Outcome | str) -> Verdict:
    """What follows attempt `attempt` (from 1) ending with `outcome`.

    EXHAUSTED only for a policy that retries at all (`max_attempts > 1`): a function without
    retries fails as before, without a dead letter.
    """
    if str(outcome) not in policy.on:
        return Verdict.DONE
    if attempt < policy.max_attempts:
        return Verdict.RETRY
    return Verdict.EXHAUSTED if policy.max_attempts > 1 else Verdict.DONE


def backoff_ms(
    policy: RetryPolicy, attempt: int, uniform: Callable[[float, float], float] = random.uniform
) -> int:
    """Milliseconds before the attempt after `attempt` (equal jitter, see the module doc)."""
    exponent = min(max(attempt, 1) - 1, 62)  # 2**62 ms is far past any cap
    cap = min(policy.backoff_max_ms, policy.backoff_ms * 2**exponent)
    return round(cap / 2 + uniform(0, cap / 2))
