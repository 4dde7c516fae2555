"""``split``: one message per element of a list, entry of a dict, or piece of a string.

Each part carries ``meta["parts"]`` as in Node-RED (``id``, ``index``, ``count``,
``type``; ``key`` for dicts, ``ch`` for strings) so a later join can reassemble it, and
the original's deliveries, so the source is acknowledged only after every part.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from engine.errors import MessageError
from engine.message import Message
from engine.node import Node
from engine.paths import set_msg
from engine.types import NodeConfig


class SplitConfig(NodeConfig):
    """How lists and strings are cut, and where a dict entry's key goes."""

    separator: str = Field(
        default="\n", min_length=1, description="String payloads are split on this (default: newline)."
    )
    skip_empty: bool = Field(
        default=False, description="Drop empty pieces of a split string (e.g. after a trailing newline)."
    )
    chunk: int = Field(
        default=1, ge=1, description="List payloads: elements per part; above 1 each part is a list."
    )
    key_property: str | None = Field(
        default=None,
        description="Dict payloads: also write each entry's key to this property (e.g. `topic`).",
    )


class SplitNode(Node):
    """Split a list, dict or string payload into one message per element."""

    type_name = "split"
    category = "sequence"
    Config = SplitConfig
    outputs = ("out",)
    color = "#e2d96e"
    icon = "split"
    config: SplitConfig

    async def on_message(self, msg: Message) -> None:
        c = self.config
        payload = msg.payload
        keys: list[str] | None = None
        info: dict[str, Any]
        pieces: list[Any]
        if isinstance(payload, list):
            pieces = (
                payload
                if c.chunk == 1
                else [payload[i : i + c.chunk] for i in range(0, len(payload), c.chunk)]
            )
            info = {"type": "array"} if c.chunk == 1 else {"type": "array", "len": c.chunk}
        elif isinstance(payload, dict):
            keys = [str(k) for k in payload]
            pieces = list(payload.values())
            info = {"type": "object"}
        elif isinstance(payload, str):
            pieces = self._cut(payload.split(c.separator))
            info = {"type": "string", "ch": c.separator}
        elif isinstance(payload, bytes):
            pieces = self._cut(payload.split(c.separator.encode()))
            info = {"type": "buffer", "ch": c.separator}
        else:
            raise MessageError(
                f"cannot split a payload of type {type(payload).__name__} (need a list, dict or string)"
            )
        count = len(pieces)
        for index, piece in enumerate(pieces):
            parts: dict[str, Any] = {"id": msg.id, "index": index, "count": count, **info}
            if keys is not None:
                parts["key"] = keys[index]
            if "parts" in msg.meta:
                parts["parts"] = msg.meta["parts"]  # nested split: keep the outer sequence
            part = msg.derive(piece, parts=parts)
            # derive() copies meta shallowly; parts travel independently, so nested meta must not be shared.
            part.meta = copy.deepcopy(part.meta)
            if keys is not None and c.key_property:
                set_msg(part, c.key_property, keys[index])
            await self.send(part)

    def _cut(self, pieces: Sequence[Any]) -> list[Any]:
        return [p for p in pieces if p] if self.config.skip_empty else list(pieces)
