"""``catch`` and ``status``: nodes that observe the rest of their flow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from engine.message import Message
from engine.node import Node
from engine.types import NodeConfig


class CatchConfig(NodeConfig):
    """Which errors to receive."""

    scope: list[str] | None = Field(
        default=None,
        description="Ids of other nodes of the same flow whose errors are caught (validation refuses any other id); empty or absent means every node of the flow.",
    )
    classes: list[str] | None = Field(
        default=None,
        description="Only errors of these classes (or subclasses), e.g. `DecodeError`, `TransientError`. See the exception hierarchy in docs/errors.md.",
    )


class CatchNode(Node):
    """Receive errors raised by nodes of the same flow (message with `error` info attached)."""

    type_name = "catch"
    category = "common"
    Config = CatchConfig
    inputs = 0
    color = "#e49191"
    icon = "alert"
    config: CatchConfig

    def catches(self, node_id: str, error_classes: Sequence[str]) -> bool:
        c = self.config
        if c.scope and node_id not in c.scope:
            return False
        return not c.classes or any(cls in error_classes for cls in c.classes)

    async def on_message(self, msg: Message) -> None:
        await self.emit(msg)


class StatusConfig(NodeConfig):
    """Which nodes to watch."""

    scope: list[str] | None = Field(
        default=None,
        description="Ids of other nodes of the same flow to watch (validation refuses any other id); empty or absent means every node of the flow.",
    )


class StatusNode(Node):
    """Emit a message whenever a node of the same flow changes its status."""

    type_name = "status"
    category = "common"
    Config = StatusConfig
    inputs = 0
    color = "#94c1d0"
    icon = "status"
    config: StatusConfig

    async def start(self) -> None:
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._unsubscribe: Callable[[], None] = self.ctx.subscribe_events(self._on_event)
        self.ctx.spawn(self._pump(), "pump")

    def _on_event(self, event: dict[str, Any]) -> None:
        if (
            event.get("kind") != "status"
            or event.get("flow") != self.ctx.flow_id
            or event.get("node") == self.ctx.node_id
        ):
            return
        if self.config.scope and event.get("node") not in self.config.scope:
            return
        if self._queue.full():  # status is a sample of the latest state: drop the oldest
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    async def _pump(self) -> None:
        while True:
            event = await self._queue.get()
            status = {"level": event["level"], "text": event["text"], "node": event["node"]}
            await self.send(Message(status, meta={"status": dict(status)}))

    async def pause(self) -> None:
        self._unsubscribe()
