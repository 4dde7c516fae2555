"""Live events for the editor: debug output, node status, errors and reloads.

The engine calls its subscribers synchronously from node code, so the hub must never
block or raise there: each client gets a bounded queue, and a client that falls behind
loses events (and is told how many) instead of slowing the flows down. Each event is
serialized (and redacted) once, when it happens, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from editor_api.redact import Redactor, secret_values

if TYPE_CHECKING:
    from engine.runtime import Engine
    from engine.supervisor import Supervisor

log = logging.getLogger("klimaflow.api.events")

EVENT_KINDS = ("debug", "status", "error", "reload")


@dataclass(frozen=True, slots=True)
class Event:
    """One engine event, ready to send: its sequence number, kind, node and JSON text."""

    seq: int
    kind: str
    node: str | None
    data: str


@dataclass(eq=False)
class Subscription:
    """One client's view: which kinds and nodes it wants, and its queue."""

    kinds: frozenset[str]
    nodes: frozenset[str] | None
    queue: asyncio.Queue[Event | None]
    dropped: int = 0

    def wants(self, kind: str, node: str | None) -> bool:
        return kind in self.kinds and (self.nodes is None or node is None or node in self.nodes)

    def offer(self, event: Event | None) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            if event is None:  # closing: make room for the end marker
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                self.queue.put_nowait(None)
            else:
                self.dropped += 1

    async def events(self) -> AsyncIterator[Event | int]:
        """Events until the hub closes; an ``int`` reports events dropped before the next one."""
        while True:
            item = await self.queue.get()
            if self.dropped:
                lost, self.dropped = self.dropped, 0
                yield lost
            if item is None:
                return
            yield item


@dataclass
class EventHub:
    """Follows the supervisor's current engine and fans its events out to subscriptions."""

    supervisor: Supervisor
    queue_size: int = 1000
    redactor: Redactor = field(default_factory=Redactor)
    #: Runtime on/off of debug nodes (node id -> active); re-applied after every reload.
    debug_active: dict[str, bool] = field(default_factory=dict)
    #: Reload outcomes seen: "applied", "unchanged", "refused".
    reloads: collections.Counter[str] = field(default_factory=collections.Counter)
    on_reload: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._engine: Engine | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._revision: str | None = None
        self._seq = itertools.count(1)
        self._closed = False

    # -- following the engine ------------------------------------------------------------------

    def attach(self) -> None:
        """Subscribe to the supervisor's engine if it is a new one; refresh the secrets to mask."""
        engine = self.supervisor.engine
        if engine is not self._engine:
            if self._unsubscribe is not None:
                self._unsubscribe()
            self._engine = engine
            self._unsubscribe = engine.subscribe(self._on_event) if engine is not None else None
            self.apply_debug_overrides()
        if self.supervisor.revision != self._revision:
            self._revision = self.supervisor.revision
            self.redactor.update(secret_values(self.supervisor.validated))

    async def follow(self, interval: float = 0.5) -> None:
        """Keep :meth:`attach` current, in case a reload replaces the engine object."""
        while not self._closed:
            self.attach()
            await asyncio.sleep(interval)

    def apply_debug_overrides(self) -> None:
        engine = self.supervisor.engine
        if engine is None:
            return
        for node_id, active in self.debug_active.items():
            rt = engine.runtimes.get(node_id)
            if rt is not None:
                set_debug_active(rt.node, active)

    # -- events ----------------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("kind"))
        if kind == "reload":
            self._after_reload(event)
        if not self._subs:
            return
        node = event.get("node")
        node_id = node if isinstance(node, str) else None
        wanted = [s for s in self._subs if s.wants(kind, node_id)]
        if not wanted:
            return
        try:
            data = self.redactor.dumps(event)
        except Exception:  # an unserializable payload must not break the node that emitted it
            log.exception("cannot serialize %s event", kind)
            return
        item = Event(next(self._seq), kind, node_id, data)
        for sub in wanted:
            sub.offer(item)

    def _after_reload(self, event: dict[str, Any]) -> None:
        result = event.get("result")
        if isinstance(result, dict):
            if not result.get("ok"):
                self.reloads["refused"] += 1
            elif result.get("message") == "no change":
                self.reloads["unchanged"] += 1
            elif result.get("trigger") != "start":
                self.reloads["applied"] += 1
        self.attach()
        self.apply_debug_overrides()
        for cb in self.on_reload:
            cb()

    def subscribe(
        self, kinds: Iterable[str] = EVENT_KINDS, nodes: Iterable[str] | None = None
    ) -> Subscription:
        self.attach()
        sub = Subscription(
            frozenset(kinds), frozenset(nodes) if nodes is not None else None, asyncio.Queue(self.queue_size)
        )
        if self._closed:
            sub.offer(None)
        else:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def clients(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """End every stream (server shutdown) and stop following the engine."""
        self._closed = True
        for sub in list(self._subs):
            sub.offer(None)
        self._subs.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._engine = None


def set_debug_active(node: Any, active: bool) -> bool:
    """Switch a debug node on or off at runtime (:meth:`DebugNode.set_active`); False if not one."""
    from nodes.debug import DebugNode

    if not isinstance(node, DebugNode):
        return False
    node.set_active(active)
    return True
