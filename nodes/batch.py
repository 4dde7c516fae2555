"""``batch``: collect messages into one message whose payload is the list of their values.

Databases and HTTP APIs are far cheaper per point when written in batches. The batch
message carries the deliveries of all its parts, and each part is held until its batch
has been emitted, so a source acknowledges only what was really passed on; partial
batches are flushed when the flow stops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from engine.message import Message, merge_deliveries
from engine.node import Node
from engine.paths import get_msg
from engine.types import Duration, NodeConfig
from nodes.filter import state_key


class BatchConfig(NodeConfig):
    """When a batch is complete, and what is collected from each message."""

    count: int | None = Field(
        default=None, ge=1, description="Emit a batch once it holds this many messages."
    )
    interval: Duration | None = Field(
        default=None,
        description="Emit a batch this long after its first message arrived (e.g. `10s`), even if not full.",
    )
    key: str | None = Field(
        default=None,
        description="Property that separates batches (e.g. `topic`, `payload.device_id`); empty: one batch for all.",
    )
    property: str = Field(
        default="payload",
        description="Dotted path of what is collected from each message into the batch's list.",
    )

    @model_validator(mode="after")
    def _needs_limit(self) -> BatchConfig:
        if self.count is None and self.interval is None:
            raise ValueError("set count, interval or both")
        if self.interval is not None and self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        return self


@dataclass(slots=True)
class _Batch:
    key: Any
    deadline: float
    messages: list[Message] = field(default_factory=list)


class BatchNode(Node):
    """Collect messages into one list message by count and/or time, optionally per key.

    The batch message takes its topic and meta from its first part and adds
    ``meta["batch"] = {"count": n, "key": key}``.
    """

    type_name = "batch"
    category = "sequence"
    Config = BatchConfig
    outputs = ("out",)
    color = "#e2d96e"
    icon = "batch"
    config: BatchConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Insertion order is deadline order: every batch gets the same interval.
        self._batches: dict[Any, _Batch] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        if self.config.interval is not None:
            self.ctx.spawn(self._timer(), "timer")

    async def on_message(self, msg: Message) -> None:
        c = self.config
        raw_key = get_msg(msg, c.key) if c.key else None
        sk = state_key(raw_key)
        batch = self._batches.get(sk)
        if batch is None:
            deadline = asyncio.get_running_loop().time() + (c.interval or 0.0)
            batch = self._batches[sk] = _Batch(raw_key, deadline)
            self._wake.set()
        self.hold(msg)
        batch.messages.append(msg)
        if self._stopping or (c.count is not None and len(batch.messages) >= c.count):
            await self._emit_batch(sk)

    async def _emit_batch(self, sk: Any) -> None:
        batch = self._batches.pop(sk, None)
        if batch is None:
            return
        # The lock keeps batches in the order they were taken, whoever emits them.
        async with self._lock:
            parts = batch.messages
            first = parts[0]
            meta = dict(first.meta)
            meta["batch"] = {"count": len(parts), "key": batch.key}
            out = Message(
                [get_msg(m, self.config.property) for m in parts],
                first.topic,
                meta=meta,
                entered_at=first.entered_at,
                deliveries=merge_deliveries(parts),
            )
            try:
                await self.send(out)
            finally:
                for m in parts:
                    m.release()

    async def _timer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._batches:
                self._wake.clear()
                await self._wake.wait()
                continue
            sk, batch = next(iter(self._batches.items()))
            wait = batch.deadline - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self._emit_batch(sk)
            except Exception:  # the timer must outlive one bad batch, or batches stop expiring
                self.log.exception("emitting batch %r failed", batch.key)

    async def stop(self) -> None:
        """Emit partial batches, oldest first, rather than lose them."""
        self._stopping = True
        for sk in list(self._batches):
            await self._emit_batch(sk)
