"""The common part of every open-data parser: file message in, readings and rejected rows out.

A parser subclass only turns decoded text into :class:`Reading` and :class:`Rejection`
items; this base reads the file message (contracts: raw ``bytes`` payload, ``meta["file"]``),
decodes it, sends the readings on in lists of at most ``chunk_size`` and reports every
rejection as :class:`RecordRejected` through the error path, so one bad row never costs
the rest of the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from engine.errors import MessageError, RecordRejected
from engine.message import Message
from engine.node import Node
from engine.types import NodeConfig
from nodes.opendata._text import decode_bytes, zone
from nodes.ttn import Reading


class ParserConfig(NodeConfig):
    """Options every open-data parser has."""

    timezone: str = Field(
        default="Europe/Berlin",
        description="Time zone of the dates in the files (local dates become UTC timestamps).",
    )
    chunk_size: int = Field(
        default=5000, ge=1, le=100_000, description="Readings per emitted message at most."
    )

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        zone(value)
        return value


@dataclass(frozen=True, slots=True)
class FileInfo:
    """Where a file message came from; ``archive_name`` is set for a ZIP member."""

    path: str
    name: str
    archive_name: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A skipped row (``line`` None: the whole file) and why."""

    line: int | None
    reason: str
    text: str = ""


def file_info(msg: Message) -> FileInfo:
    """The file a message carries, from ``meta["file"]`` (or the topic, for hand-made messages)."""
    meta = msg.meta.get("file")
    info: dict[str, Any] = meta if isinstance(meta, dict) else {}
    path = info.get("path") or msg.topic
    if not isinstance(path, str) or not path:
        raise MessageError("not a file message: meta.file.path and topic are both missing")
    name = info.get("name")
    archive = info.get("archive_name")
    return FileInfo(
        path=path,
        name=name if isinstance(name, str) and name else os.path.basename(path),
        archive_name=archive if isinstance(archive, str) and archive else None,
    )


class FileParserNode(Node):
    """Base of the open-data parsers (not registered itself)."""

    category = "parser"
    color = "#debd5c"
    icon = "parser-csv"
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    config: ParserConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tz: ZoneInfo = zone(self.config.timezone)

    def parse(self, file: FileInfo, text: str) -> Iterable[Reading | Rejection]:
        """Readings and rejections of one decoded file, in file order."""
        raise NotImplementedError

    async def on_message(self, msg: Message) -> None:
        file = file_info(msg)
        payload = msg.payload
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if not isinstance(payload, bytes | bytearray):
            raise MessageError(
                f"{file.path}: payload is a {type(payload).__name__}, not the file content (bytes)"
            )
        text, encoding = decode_bytes(bytes(payload))
        msg.payload = None  # consumed: error copies of the message stay small
        chunk: list[Reading] = []
        points = rejected = 0
        for item in self.parse(file, text):
            if isinstance(item, Rejection):
                rejected += 1
                await self._reject(msg, file, item)
                continue
            chunk.append(item)
            points += 1
            if len(chunk) >= self.config.chunk_size:
                await self._send(msg, file, chunk)
                chunk = []
        if chunk:
            await self._send(msg, file, chunk)
        self.log.info("%s (%s): %d points, %d rows rejected", file.path, encoding, points, rejected)
        self.status(
            "warning" if rejected else "ok",
            f"{file.name}: {points} points" + (f", {rejected} rejected" if rejected else ""),
        )

    async def _send(self, msg: Message, file: FileInfo, readings: list[Reading]) -> None:
        await self.send(msg.derive(readings))

    async def _reject(self, msg: Message, file: FileInfo, item: Rejection) -> None:
        out = msg.derive(item.text, record={"file": file.path, "line": item.line})
        try:
            await self.emit_error(out, RecordRejected(file.path, item.line, item.reason))
        finally:
            out.release()
