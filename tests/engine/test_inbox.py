"""The inbox: order, the bound, batch puts and takes, waking, cancellation, hand-over."""

from __future__ import annotations

import asyncio

from engine.inbox import Inbox


async def test_batches_come_out_in_order_up_to_the_limit() -> None:
    box: Inbox[int] = Inbox(100)
    await box.put_many(list(range(10)))
    await box.put(10)
    assert await box.get_batch(4) == [0, 1, 2, 3]
    assert await box.get_batch(100) == [4, 5, 6, 7, 8, 9, 10]
    assert box.empty()


async def test_put_many_puts_what_fits_and_waits_for_room_for_the_rest() -> None:
    box: Inbox[int] = Inbox(3)
    sender = asyncio.create_task(box.put_many([1, 2, 3, 4, 5]))
    await asyncio.sleep(0.01)
    assert not sender.done()
    assert box.qsize() == 3
    assert box.has_waiting_senders()
    assert await box.get_batch(2) == [1, 2]
    await asyncio.sleep(0.01)
    assert sender.done()
    assert await box.get_batch(10) == [3, 4, 5]
    assert not box.has_waiting_senders()


async def test_a_waiting_taker_wakes_on_put() -> None:
    box: Inbox[str] = Inbox(10)
    taker = asyncio.create_task(box.get_batch(10))
    await asyncio.sleep(0.01)
    assert not taker.done()
    await box.put_many(["a", "b"])
    assert await asyncio.wait_for(taker, 1) == ["a", "b"]


async def test_put_waits_while_full_and_get_makes_room() -> None:
    box: Inbox[int] = Inbox(1)
    await box.put(1)
    second = asyncio.create_task(box.put(2))
    await asyncio.sleep(0.01)
    assert not second.done()
    assert await box.get() == 1
    await asyncio.wait_for(second, 1)
    assert box.take_all() == [2]
    assert box.empty()


async def test_a_cancelled_sender_leaves_nothing_behind_and_others_still_get_in() -> None:
    box: Inbox[int] = Inbox(1)
    await box.put(0)
    cancelled = asyncio.create_task(box.put(1))
    waiting = asyncio.create_task(box.put(2))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.sleep(0.01)
    assert box.take_all() == [0]
    await asyncio.wait_for(waiting, 1)
    assert box.take_all() == [2]
    assert not box.has_waiting_senders()


async def test_a_woken_taker_that_is_cancelled_passes_its_turn_on() -> None:
    box: Inbox[int] = Inbox(10)
    first = asyncio.create_task(box.get_batch(10))
    second = asyncio.create_task(box.get_batch(10))
    await asyncio.sleep(0.01)
    await box.put(7)  # there is room: no wait; wakes the first taker ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == [7]
