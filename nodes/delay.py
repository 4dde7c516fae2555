"""``delay``: hold each message for a fixed time, or limit the message rate.

Delayed and queued messages keep their deliveries open (so an MQTT message is
acknowledged only once it has been passed on), are flushed rather than lost when the
flow stops, and a message that has to be dropped goes to the ``dropped`` port and is
counted: nothing vanishes silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, Literal

from pydantic import Field, model_validator

from engine.message import Message
from engine.node import Node
from engine.types import Duration, NodeConfig


class DelayConfig(NodeConfig):
    """Fixed delay or rate limit, and what happens to messages over the limit."""

    mode: Literal["delay", "rate"] = Field(
        default="delay",
        description="`delay`: hold every message for `delay`; `rate`: pass at most `rate` messages per `period`.",
    )
    delay: Duration = Field(default=1.0, description="`delay` mode: how long each message is held.")
    rate: int = Field(default=1, ge=1, description="`rate` mode: messages allowed per `period`.")
    period: Duration = Field(default=1.0, description="`rate` mode: the time window of `rate`.")
    drop: bool = Field(
        default=False,
        description="`rate` mode: send messages over the limit to the `dropped` port at once instead of queueing them.",
    )
    queue_size: int = Field(
        default=1000,
        ge=1,
        description=(
            "Most messages waiting in this node. `delay` mode: further messages wait upstream "
            "(back-pressure); `rate` mode: further messages go to the `dropped` port."
        ),
    )

    @model_validator(mode="after")
    def _check_period(self) -> DelayConfig:
        if self.mode == "rate" and self.period <= 0:
            raise ValueError("period must be greater than 0")
        return self


class DelayNode(Node):
    """Delay each message by a fixed time, or limit the rate (queue or drop the excess)."""

    type_name = "delay"
    category = "function"
    Config = DelayConfig
    outputs = ("out", "dropped")
    color = "#e6e0f8"
    icon = "timer"
    config: DelayConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``(due time, message)``; in rate mode the due time is unused (0).
        self._queue: collections.deque[tuple[float, Message]] = collections.deque()
        self._sent_at: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._flush = asyncio.Event()
        self._stopping = False
        self.dropped = 0
        self._warned_unwired = False

    async def start(self) -> None:
        if self.config.mode == "delay" or not self.config.drop:
            self.ctx.spawn(self._pump(), "pump")

    # -- input ---------------------------------------------------------------------------

    async def on_message(self, msg: Message) -> None:
        c = self.config
        if self._stopping:
            await self.emit(msg)
            return
        if c.mode == "delay":
            while len(self._queue) >= c.queue_size and not self._stopping:
                self._space.clear()
                await self._space.wait()
            if self._stopping:
                await self.emit(msg)
                return
            self._enqueue(asyncio.get_running_loop().time() + c.delay, msg)
        elif c.drop:
            if self._window_wait() > 0:
                await self._drop(msg)
            else:
                self._sent_at.append(asyncio.get_running_loop().time())
                await self.emit(msg)
        elif len(self._queue) >= c.queue_size:
            await self._drop(msg)
        else:
            # Always through the queue, so a message never overtakes one still queued.
            self._enqueue(0.0, msg)

    def _enqueue(self, due: float, msg: Message) -> None:
        self.hold(msg)
        self._queue.append((due, msg))
        self._wake.set()

    async def _drop(self, msg: Message) -> None:
        self.dropped += 1
        counters = getattr(self.ctx, "counters", None)
        if counters is not None and hasattr(counters, "dropped"):
            counters.dropped += 1
        if not self._warned_unwired and not self.ctx.has_wires("dropped"):
            self._warned_unwired = True
            self.log.warning("rate limit exceeded and the dropped port is not wired: messages are discarded")
        self._show()
        await self.emit(msg, "dropped")

    def _show(self) -> None:
        # Only on drops and at stop: a status event per message would flood the editor.
        self.status("warning" if self.dropped else "ok", f"dropped {self.dropped}" if self.dropped else "")

    # -- output --------------------------------------------------------------------------

    def _window_wait(self) -> float:
        """Seconds until the rate window allows one more message (0 if it does now)."""
        now = asyncio.get_running_loop().time()
        sent = self._sent_at
        while sent and sent[0] <= now - self.config.period:
            sent.popleft()
        if len(sent) < self.config.rate:
            return 0.0
        return sent[0] + self.config.period - now

    def _head_wait(self) -> float:
        if self.config.mode == "rate":
            return self._window_wait()
        return self._queue[0][0] - asyncio.get_running_loop().time()

    async def _pump(self) -> None:
        while not self._stopping:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._head_wait()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush.wait(), wait)
                continue
            async with self._lock:
                if self._stopping or not self._queue:
                    return
                _, msg = self._queue.popleft()
                if self.config.mode == "rate":
                    self._sent_at.append(asyncio.get_running_loop().time())
                try:
                    await self.emit(msg)
                finally:
                    msg.release()
                    self._space.set()

    async def stop(self) -> None:
        """Emit everything still waiting now, in order, instead of losing it."""
        self._stopping = True
        self._flush.set()
        self._space.set()
        self._wake.set()
        async with self._lock:
            while self._queue:
                _, msg = self._queue.popleft()
                try:
                    await self.emit(msg)
                finally:
                    msg.release()
            self._show()
