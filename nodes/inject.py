"""``inject``: the source that starts flows on a schedule or by hand."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import time
from typing import Any, ClassVar

from croniter import croniter
from pydantic import Field, field_validator, model_validator

from engine.message import Message
from engine.node import Node
from engine.types import Duration, NodeConfig


def next_cron_time(expr: str, after: float) -> float:
    """Epoch seconds of the first firing of ``expr`` (local time, DST-aware) after ``after``.

    Naive local times on purpose: ``astimezone()`` would pin today's UTC offset, so a
    06:00 schedule would fire at 07:00 after the change to summer time; a naive time's
    ``timestamp()`` applies the offset valid on that date.
    """
    it = croniter(expr, dt.datetime.fromtimestamp(after))
    for _ in range(1000):
        # In the repeated hour when summer time ends, a naive time can map to an instant
        # before ``after``; skip those instead of firing again and again.
        nxt: dt.datetime = it.get_next(dt.datetime)
        if nxt.timestamp() > after:
            return nxt.timestamp()
    raise ValueError(f"cron expression {expr!r} never fires after {after}")


class InjectConfig(NodeConfig):
    """When to fire and what to send. With neither ``interval`` nor ``cron`` it fires only on start (if ``once``) or from the editor's button."""

    payload: Any = Field(
        default=None,
        description='Payload to send; `"$timestamp"` sends the current time in ms since the epoch.',
    )
    topic: str | None = Field(default=None, description="Topic of the message.")
    once: bool = Field(default=False, description="Fire once right after start.")
    once_delay: Duration = Field(default=0.1, description="Delay before the `once` firing.")
    interval: Duration | None = Field(default=None, description="Fire every interval (e.g. `10s`, `5m`).")
    cron: str | None = Field(
        default=None,
        description="Cron expression in local time: 5 fields (`0 6 * * *`), or 6 with seconds last (`* * * * * */10`).",
    )
    repeat: int | None = Field(
        default=None, ge=1, description="Stop after this many scheduled firings (default: unlimited)."
    )

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        try:  # valid syntax can still never fire (``0 0 30 2 *``)
            next_cron_time(value, time.time())
        except Exception:
            raise ValueError(f"cron expression {value!r} never fires") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> InjectConfig:
        if self.interval is not None and self.cron is not None:
            raise ValueError("set either interval or cron, not both")
        if self.interval is not None and self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        return self


class InjectNode(Node):
    """Inject a message on start, every interval, on a cron schedule, or by button."""

    type_name = "inject"
    category = "common"
    Config = InjectConfig
    inputs = 0
    color = "#a6bbcf"
    icon = "inject"
    config: InjectConfig

    #: Wall clock for ``$timestamp`` and cron; tests replace it to reach a cron time quickly.
    _now: ClassVar[Any] = staticmethod(time.time)

    async def start(self) -> None:
        self._paused = False
        self._fired = 0
        c = self.config
        if c.once:
            self.ctx.spawn(self._once(), "once")
        if c.interval is not None or c.cron is not None:
            self.ctx.spawn(self._schedule(), "schedule")

    def _payload(self) -> Any:
        p = self.config.payload
        if p == "$timestamp":
            return int(self._now() * 1000)
        return copy.deepcopy(p)

    async def fire(self, payload: Any = None) -> None:
        msg = Message(self._payload() if payload is None else payload, self.config.topic)
        await self.send(msg)

    async def trigger(self, payload: Any = None) -> None:
        await self.fire(payload)

    async def _once(self) -> None:
        await asyncio.sleep(self.config.once_delay)
        if not self._paused:
            await self.fire()

    async def _schedule(self) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        if c.interval is not None:
            next_at = loop.time() + c.interval
            while not self._paused and (c.repeat is None or self._fired < c.repeat):
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                if self._paused:
                    return
                self._fired += 1
                await self.fire()
                next_at += c.interval
                # A stalled loop skips missed firings instead of firing a burst.
                if next_at < loop.time():
                    next_at = loop.time() + c.interval
        else:
            assert c.cron is not None
            last = self._now()
            while not self._paused and (c.repeat is None or self._fired < c.repeat):
                nxt = next_cron_time(c.cron, last)
                await asyncio.sleep(max(0.0, nxt - self._now()))
                if self._paused:
                    return
                self._fired += 1
                await self.fire()
                # From the planned time (an early wake-up must not fire twice), but never
                # from the past (a suspended machine must not fire a burst of missed runs).
                last = max(nxt, self._now())

    async def pause(self) -> None:
        self._paused = True
