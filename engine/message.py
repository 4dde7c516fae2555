"""Message envelopes and delivery tracking.

A :class:`Message` is what travels along wires. It is mutable (nodes such as
``change`` edit it in place, like Node-RED's ``msg``) but every receiver of a
fan-out gets its own deep copy, so one branch never sees another's edits.

A :class:`Delivery` is how "ack only when the sink has committed" works: a source
that needs acknowledgement (MQTT QoS 1, an HTTP request) attaches one to the message
it emits. Every copy of the message and every message derived from it (a batch, a
split part) holds a reference; the delivery settles once all references are
released. Sinks release only after they have committed (written or spooled); any
other node's references are released by the runtime when it finishes handling.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

_counter = itertools.count(1)
_prefix = f"{os.getpid():x}-{time.time_ns() & 0xFFFFFFFF:x}"


def new_message_id() -> str:
    """Unique within this process and practically unique across processes, cheap to make."""
    return f"{_prefix}-{next(_counter):x}"


class Delivery:
    """Reference count that calls ``on_settled(ok)`` when the last reference is released.

    ``ok`` is False if any holder released with failure (e.g. the message went to an
    error port because a sink rejected it permanently). Sources typically still ack in
    that case, because the failure was recorded on the error path rather than lost.
    """

    __slots__ = ("_failed", "_on_settled", "_pending", "settled")

    def __init__(self, on_settled: Callable[[bool], None] | None = None) -> None:
        self._pending = 1
        self._failed = False
        self._on_settled = on_settled
        self.settled = False

    @property
    def pending(self) -> int:
        return self._pending

    def retain(self, n: int = 1) -> None:
        if self.settled:
            return
        self._pending += n

    def release(self, ok: bool = True) -> None:
        if self.settled:
            return
        if not ok:
            self._failed = True
        self._pending -= 1
        if self._pending <= 0:
            self.settled = True
            if self._on_settled is not None:
                self._on_settled(not self._failed)


class Message:
    """The envelope: ``payload``, ``topic``, unique ``id``, ``entered_at`` and ``meta``.

    ``meta`` holds everything else (parsed topic fields, error info, parts of a split).
    ``deliveries`` are the acknowledgement handles this message keeps alive.
    """

    __slots__ = ("_id", "deliveries", "entered_at", "meta", "payload", "topic")

    def __init__(
        self,
        payload: Any = None,
        topic: str | None = None,
        *,
        meta: dict[str, Any] | None = None,
        id: str | None = None,
        entered_at: float | None = None,
        deliveries: tuple[Delivery, ...] = (),
    ) -> None:
        self.payload = payload
        self.topic = topic
        self.meta: dict[str, Any] = meta if meta is not None else {}
        self._id = id or None  # made on first use: most messages of a stream never need one
        self.entered_at = entered_at if entered_at is not None else time.time()
        self.deliveries = deliveries

    @property
    def id(self) -> str:
        """Unique message id (``_msgid`` in expressions); copies and derived messages share it."""
        found = self._id
        if found is None:
            found = self._id = new_message_id()
        return found

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    def copy(self) -> Message:
        """Deep copy of payload and meta; deliveries are shared and retained once more."""
        payload = copy.deepcopy(self.payload)  # first: a failing copy must not leak a retain
        meta = copy.deepcopy(self.meta)
        for d in self.deliveries:
            d.retain()
        return Message(
            payload,
            self.topic,
            meta=meta,
            id=self.id,
            entered_at=self.entered_at,
            deliveries=self.deliveries,
        )

    def derive(self, payload: Any, **meta: Any) -> Message:
        """A new message carrying this one's id, time, topic and deliveries (retained)."""
        # Deep, so derived messages (split parts, rows) never share nested meta objects.
        m = copy.deepcopy(self.meta)
        m.update(meta)
        for d in self.deliveries:
            d.retain()
        return Message(
            payload,
            self.topic,
            meta=m,
            id=self.id,
            entered_at=self.entered_at,
            deliveries=self.deliveries,
        )

    def release(self, ok: bool = True) -> None:
        """Give up this message's hold on its deliveries (the runtime does this for you)."""
        for d in self.deliveries:
            d.release(ok)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict view used by expressions (JSONata, Jinja2) and by the debug sidebar."""
        d: dict[str, Any] = dict(self.meta)
        d["payload"] = self.payload
        d["topic"] = self.topic
        d["_msgid"] = self.id
        d["entered_at"] = self.entered_at
        return d

    def update_from_dict(self, d: dict[str, Any]) -> None:
        """Inverse of :meth:`to_dict`: apply an edited dict view back onto the message."""
        d = dict(d)
        self.payload = d.pop("payload", None)
        topic = d.pop("topic", None)
        self.topic = None if topic is None else str(topic)
        d.pop("_msgid", None)
        d.pop("entered_at", None)
        self.meta = d

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, topic={self.topic!r}, payload={self.payload!r:.80})"


def merge_deliveries(messages: Iterable[Message]) -> tuple[Delivery, ...]:
    """Deliveries of several messages, each retained once, for a combined message."""
    seen: dict[int, Delivery] = {}
    for msg in messages:
        for d in msg.deliveries:
            if id(d) not in seen:
                seen[id(d)] = d
    out = tuple(seen.values())
    for d in out:
        d.retain()
    return out


def retain_all(messages: Iterable[Message]) -> None:
    """Retain every message's deliveries once: what :meth:`Message.copy` does, for a batch."""
    for msg in messages:
        for d in msg.deliveries:
            d.retain()


def release_all(messages: Iterable[Message]) -> None:
    """:meth:`Message.release` (ok) for each message of a batch."""
    for msg in messages:
        for d in msg.deliveries:
            d.release()
