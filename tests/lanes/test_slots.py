"""The worker's sandbox slots (worker/consumer.py `_Slots`): sync calls before jobs, one
reserve slot for a sync call while jobs fill the others, jobs round-robin over functions."""

from __future__ import annotations

import asyncio

from worker.consumer import _Slots


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _waiting(slots: _Slots, lane: str | None, order: list[str], name: str) -> asyncio.Task[bool]:
    async def take() -> bool:
        got = await slots.acquire(lane)
        order.append(name)
        return got

    return asyncio.ensure_future(take())


async def test_jobs_fill_the_slots_and_a_sync_call_still_starts_in_the_reserve() -> None:
    slots = _Slots(2, reserve=1)
    assert await slots.acquire("a") and await slots.acquire("a")
    order: list[str] = []
    job = _waiting(slots, "a", order, "a3")
    sync = _waiting(slots, None, order, "sync")
    await _settle()
    assert sync.done() and sync.result()
    # The sync call did not wait for a job; the third job does.
    assert order == ["sync"] and not job.done() and slots.running == 3
    # A second sync call waits (one reserve slot), and goes before the waiting job.
    sync2 = _waiting(slots, None, order, "sync2")
    await _settle()
    assert not sync2.done()
    slots.release("a")
    await _settle()
    assert order == ["sync", "sync2"] and not job.done()
    slots.release(None)
    slots.release(None)
    await _settle()
    assert order == ["sync", "sync2", "a3"] and slots.running == 2


async def test_sync_calls_alone_never_use_the_reserve() -> None:
    slots = _Slots(2, reserve=1)
    assert await slots.acquire(None) and await slots.acquire(None)
    order: list[str] = []
    third = _waiting(slots, None, order, "s3")
    await _settle()
    assert not third.done() and slots.running == 2
    slots.release(None)
    await _settle()
    assert order == ["s3"]


async def test_waiting_jobs_are_served_round_robin_over_functions() -> None:
    slots = _Slots(1)
    assert await slots.acquire("a")
    order: list[str] = []
    tasks = [_waiting(slots, "a", order, f"a{n}") for n in range(1, 4)]
    tasks.append(_waiting(slots, "b", order, "b1"))  # came after three jobs of a
    tasks.append(_waiting(slots, "c", order, "c1"))
    await _settle()
    for _ in tasks:
        slots.release("a" if not order else order[-1][0])
        await _settle()
    assert order == ["a1", "b1", "c1", "a2", "a3"]


async def test_a_sync_call_waiting_goes_before_jobs_waiting_longer() -> None:
    slots = _Slots(1, reserve=0)
    assert await slots.acquire("a")
    order: list[str] = []
    _waiting(slots, "a", order, "job")
    _waiting(slots, None, order, "sync")
    await _settle()
    slots.release("a")
    await _settle()
    assert order == ["sync"]


async def test_close_gives_every_waiter_false() -> None:
    slots = _Slots(1, reserve=1)
    assert await slots.acquire("a")
    assert await slots.acquire(None)  # the reserve
    order: list[str] = []
    job, sync = _waiting(slots, "b", order, "b"), _waiting(slots, None, order, "s")
    await _settle()
    slots.close()
    assert not await job and not await sync
    assert not await slots.acquire(None)


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = _Slots(1)
    assert await slots.acquire("a")
    order: list[str] = []
    first = _waiting(slots, "b", order, "b")
    second = _waiting(slots, "c", order, "c")
    await _settle()
    first.cancel()
    slots.release("a")
    await _settle()
    assert order == ["c"] and slots.running == 1
    assert second.done()
