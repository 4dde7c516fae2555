"""A node's inbox: a bounded FIFO of messages that moves them in batches.

Why not ``asyncio.Queue``: at tens of thousands of messages per second the cost of a
hop between nodes is the queue, not the node — one ``put`` and one ``get`` per message,
each possibly waking a task. Here a sender puts a whole list at once (``put_many``)
and the worker takes everything waiting at once (``get_batch``), so a burst of 500
messages costs one wake-up instead of 500. The bound is still counted in messages,
so back-pressure works as before: ``put``/``put_many`` wait while the inbox is full
(``put_many`` puts what fits and waits for room for the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """Bounded FIFO with batch put/get; one event loop, any number of senders and takers."""

    __slots__ = ("_getters", "_items", "_putters", "maxsize")

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = max(1, maxsize)
        self._items: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    # -- state ---------------------------------------------------------------------------

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def has_waiting_senders(self) -> bool:
        """Whether a ``put`` waits for room or was woken and has not put yet (a drain lets it in)."""
        return bool(self._putters)

    # -- putting -------------------------------------------------------------------------

    async def put(self, item: T) -> None:
        while len(self._items) >= self.maxsize:
            await self._wait(self._putters)
        self._items.append(item)
        self._wake(self._getters)

    async def put_many(self, items: Iterable[T]) -> None:
        """Put every item in order, waiting for room whenever the inbox is full."""
        pending = items if isinstance(items, list) else list(items)
        i, n = 0, len(pending)
        q = self._items
        while i < n:
            room = self.maxsize - len(q)
            if room <= 0:
                await self._wait(self._putters)
                continue
            if i == 0 and room >= n:
                q.extend(pending)
                i = n
            else:
                q.extend(pending[i : i + room])
                i += room
            self._wake(self._getters)

    # -- taking --------------------------------------------------------------------------

    async def get(self) -> T:
        while not self._items:
            await self._wait(self._getters)
        item = self._items.popleft()
        self._wake_all(self._putters)
        return item

    async def get_batch(self, limit: int) -> list[T]:
        """Everything waiting, at most ``limit`` items; waits until there is at least one."""
        q = self._items
        while not q:
            await self._wait(self._getters)
        if len(q) <= limit:
            out = list(q)
            q.clear()
        else:
            popleft = q.popleft
            out = [popleft() for _ in range(limit)]
        self._wake_all(self._putters)
        if q:
            self._wake(self._getters)  # another taker may share this inbox (a drain)
        return out

    def take_all(self) -> list[T]:
        """Empty the inbox without waiting (a closing node hands its messages over)."""
        out = list(self._items)
        self._items.clear()
        self._wake_all(self._putters)
        return out

    # -- waiting -------------------------------------------------------------------------

    @staticmethod
    async def _wait(waiters: deque[asyncio.Future[None]]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                Inbox._wake(waiters)  # woken, then cancelled: pass the turn on
            raise
        finally:
            # Woken or cancelled: either way this waiter is done with the line.
            with contextlib.suppress(ValueError):
                waiters.remove(fut)

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
                return

    @staticmethod
    def _wake_all(waiters: deque[asyncio.Future[None]]) -> None:
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
