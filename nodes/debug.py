"""``debug``: show messages in the log and keep the last few for the editor's sidebar."""

from __future__ import annotations

import collections
import json
import time
from typing import Any, Literal

from pydantic import Field

from engine.message import Message
from engine.node import Node
from engine.paths import get_path
from engine.types import NodeConfig


class DebugConfig(NodeConfig):
    """What to show, and where."""

    property: str = Field(
        default="payload",
        description="Dotted path of what to show (`payload`, `payload.temperature`, `topic`), or `msg` for the whole message.",
    )
    log: bool = Field(default=True, description="Also write to the engine's log.")
    level: Literal["debug", "info", "warning"] = Field(default="info", description="Log level.")
    keep: int = Field(
        default=100, ge=0, le=10000, description="How many recent messages to keep for the editor."
    )
    active: bool = Field(default=True, description="Switch output off without unwiring the node.")


class DebugNode(Node):
    """Log a message (or part of it) and keep the last N for the editor."""

    type_name = "debug"
    category = "common"
    Config = DebugConfig
    outputs = ()
    color = "#87a980"
    icon = "debug"
    config: DebugConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.config.keep or None)
        self._active = self.config.active

    @property
    def active(self) -> bool:
        """Whether the node shows messages now; starts as ``config.active``."""
        return self._active

    def set_active(self, active: bool) -> None:
        """Switch output on or off at runtime (the editor's toggle) without touching the config,
        so the configured default stays what the flow file says."""
        self._active = active

    async def on_message(self, msg: Message) -> None:
        c = self.config
        if not self._active:
            return
        view = msg.to_dict()
        value = view if c.property == "msg" else get_path(view, c.property)
        record = {
            "time": time.time(),
            "msg_id": msg.id,
            "topic": msg.topic,
            "property": c.property,
            "value": value,
        }
        if c.keep:
            self.recent.append(record)
        self.ctx.publish_debug(record)
        if c.log:
            text = json.dumps(value, ensure_ascii=False, default=str)
            if len(text) > 2000:
                text = text[:2000] + "…"
            getattr(self.log, c.level)("%s%s", f"[{msg.topic}] " if msg.topic else "", text)
