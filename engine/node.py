"""The node and connection base classes: the whole contract between a node type and the engine.

Lifecycle of a node, kept deliberately small (Redpanda Connect's input/output split,
Node-RED's ``input``/``close`` events)::

    __init__(ctx, config)      build state; no I/O
    await start()              open connections, spawn source loops
    await on_message(msg)      handle one message; ``await self.emit(msg, port)`` 0..n times
    await on_batch(msgs)       optional: handle several at once; ``await self.emit_many(...)``
    await pause()              sources only: stop producing (called first on stop/reload)
    await stop()               flush what is buffered (may still emit), then close

The runtime calls ``on_message`` for one message at a time per node, releases the
message's deliveries after ``on_message`` returns (call :meth:`Node.hold` to keep them,
e.g. until a batched write committed), and routes any exception to the node's
``error`` port, the flow's ``catch`` nodes, or the log.

Batches are for throughput: a node that overrides :meth:`Node.on_batch` gets every
message waiting in its inbox at once (up to :data:`BATCH_LIMIT`), in order, and sends
its results on with one :meth:`Node.emit_many`; one hop then costs one task switch per
batch instead of one per message. Such a node routes a single message's failure itself
(``await self.emit_error(msg, exc)``); an exception that escapes ``on_batch`` is routed
for every message of the batch. Nodes that override only ``on_message`` see no change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from engine.message import Message, release_all
from engine.types import ConnectionConfig, NodeConfig

if TYPE_CHECKING:
    from pydantic import BaseModel

StatusLevel = Literal["ok", "warning", "error"]

#: Most messages a batch-handling node gets per ``on_batch`` call.
BATCH_LIMIT = 500


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What the editor shows under a node: a level and a short text."""

    level: StatusLevel = "ok"
    text: str = ""


@dataclass(slots=True)
class Counters:
    """Per-node counters; ``inbox`` is filled in when a snapshot is taken."""

    received: int = 0
    sent: int = 0
    errors: int = 0
    dropped: int = 0
    processing_seconds: float = 0.0

    def snapshot(self, inbox: int) -> dict[str, float | int]:
        return {
            "received": self.received,
            "sent": self.sent,
            "errors": self.errors,
            "dropped": self.dropped,
            "inbox": inbox,
            "processing_seconds": round(self.processing_seconds, 6),
        }


class NodeContext(Protocol):
    """What the runtime offers a node: emitting, errors, status, connections, storage."""

    node_id: str
    flow_id: str
    logger: logging.Logger
    counters: Counters

    async def emit(self, msg: Message, port: str) -> None: ...

    async def emit_many(self, msgs: list[Message], port: str) -> None: ...

    async def emit_error(self, msg: Message, exc: BaseException) -> None: ...

    def has_wires(self, port: str) -> bool: ...

    def set_status(self, status: NodeStatus) -> None: ...

    def connection(self, name: str) -> Connection: ...

    def data_dir(self) -> str: ...

    def publish_debug(self, record: dict[str, Any]) -> None: ...

    def subscribe_events(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]: ...

    def spawn(self, coro: Awaitable[Any], name: str) -> None: ...


class Node:
    """Base class of every node type. Subclasses set the class attributes and override hooks."""

    #: The name used in flow files (``type: inject``); set by subclasses.
    type_name: ClassVar[str] = ""
    #: Palette group in the editor and section in docs/nodes.md.
    category: ClassVar[str] = "function"
    #: The config model; its docstring and field descriptions become the docs.
    Config: ClassVar[type[NodeConfig]] = NodeConfig
    #: 0 for sources, 1 for everything else.
    inputs: ClassVar[int] = 1
    #: Named output ports. Every node also has the implicit ``error`` port.
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    #: Editor hints.
    color: ClassVar[str] = "#a6bbcf"
    icon: ClassVar[str] = ""

    def __init__(self, ctx: NodeContext, config: NodeConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.log = ctx.logger

    # -- type-level description -------------------------------------------------------

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring: the one-line summary in ``klimaflow nodes``."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else cls.type_name

    @classmethod
    def output_ports(cls, config: BaseModel | None) -> tuple[str, ...]:
        """Ports for a given config; nodes with config-defined ports (``switch``) override."""
        return cls.outputs

    @classmethod
    def is_source(cls) -> bool:
        return cls.inputs == 0

    # -- lifecycle hooks ----------------------------------------------------------------

    async def start(self) -> None:
        """Open resources; sources start producing here (via ``ctx.spawn``)."""

    async def on_message(self, msg: Message) -> None:
        """Handle one message. The default passes it on unchanged."""
        await self.emit(msg)

    async def on_batch(self, msgs: list[Message]) -> None:
        """Handle several messages in order; override (with :meth:`emit_many`) for throughput.

        The runtime calls this instead of :meth:`on_message` only for node types that
        override it; this default is what such an override can fall back to.
        """
        for msg in msgs:
            await self.on_message(msg)

    async def pause(self) -> None:
        """Sources: stop producing new messages. Called before any drain."""

    async def stop(self) -> None:
        """Flush buffered work (emitting is still allowed) and release resources."""

    async def trigger(self, payload: Any = None) -> None:
        """Manual trigger from the editor (e.g. the inject button). No-op by default."""

    def catches(self, node_id: str, error_classes: Sequence[str]) -> bool:
        """Catch nodes: whether an error of ``node_id`` (same flow) is delivered here."""
        return False

    # -- helpers for subclasses ---------------------------------------------------------

    async def emit(self, msg: Message, port: str = "out") -> None:
        """Send ``msg`` to every node wired to ``port``; waits if a receiver's inbox is full."""
        await self.ctx.emit(msg, port)

    async def emit_many(self, msgs: list[Message], port: str = "out") -> None:
        """Send several messages in order, as one hand-off per receiver (see :meth:`on_batch`)."""
        if msgs:
            await self.ctx.emit_many(msgs, port)

    async def send_many(self, msgs: list[Message], port: str = "out") -> None:
        """For sources: :meth:`emit_many` messages this node created, then drop their references."""
        try:
            if msgs:
                await self.ctx.emit_many(msgs, port)
        finally:
            release_all(msgs)

    async def send(self, msg: Message, port: str = "out") -> None:
        """For sources: emit a message this node created, then drop the creator's reference."""
        try:
            await self.ctx.emit(msg, port)
        finally:
            msg.release()

    async def emit_error(self, msg: Message, exc: BaseException) -> None:
        """Route ``msg`` with ``exc`` to the error port / catch nodes, as if ``exc`` were raised."""
        await self.ctx.emit_error(msg, exc)

    def hold(self, msg: Message) -> None:
        """Keep ``msg``'s deliveries open past ``on_message``; call ``msg.release()`` later."""
        for d in msg.deliveries:
            d.retain()

    def status(self, level: StatusLevel = "ok", text: str = "") -> None:
        self.ctx.set_status(NodeStatus(level, text))


class Connection:
    """Shared, named configuration with a live resource (an MQTT client, an HTTP pool).

    One instance per connection name serves every node that references it, so a
    broker is connected once however many ``mqtt-in`` nodes use it.
    """

    type_name: ClassVar[str] = ""
    Config: ClassVar[type[ConnectionConfig]] = ConnectionConfig

    def __init__(self, name: str, config: ConnectionConfig, logger: logging.Logger) -> None:
        self.name = name
        self.config = config
        self.log = logger

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else cls.type_name

    async def start(self) -> None:
        """Prepare; called before any node starts, so nodes can register with the connection."""

    async def activate(self) -> None:
        """Called once every node has started: connect now, when every subscriber is registered."""

    async def stop(self) -> None:
        """Disconnect and free resources."""
