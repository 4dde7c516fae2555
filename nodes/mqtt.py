"""MQTT: the ``mqtt`` connection and the ``mqtt-in`` / ``mqtt-out`` nodes (aiomqtt 2.x).

Delivery: for QoS 1/2 subscriptions the PUBACK is sent only when every message derived
from the publish has been committed downstream (written or spooled by a sink), through
:class:`engine.message.Delivery`. aiomqtt 2.x does not expose manual acknowledgement;
it wraps a paho-mqtt 2.x client, whose ``manual_ack`` mode we switch on for the client
aiomqtt owns (``Client._client``; aiomqtt is pinned below 3 for this and for MQTT 3.1.1,
which The Things Network speaks). A message whose PUBACK was never sent is redelivered
by the broker after a reconnect when the session is persistent (``clean_session: false``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import socket
import ssl
import struct
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
import orjson
import paho.mqtt.client as paho_mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, SecretStr, field_validator, model_validator

from engine.errors import ConfigError, MessageError
from engine.message import Delivery, Message
from engine.node import Connection, Node
from engine.paths import get_path
from engine.types import ConnectionConfig, Duration, NodeConfig, connection_field

PayloadFormat = Literal["auto", "json", "text", "bytes", "base64"]


# -- value objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class TopicPattern:
    """A topic filter with named levels, e.g. ``v3/{application}/devices/{device_id}/up``.

    ``{name}`` matches one level and captures it, ``+`` matches one level, a final ``#``
    matches the rest. :attr:`filter` is the MQTT subscription filter it corresponds to.
    Immutable and validated on construction, like aiomqtt's ``Topic``.
    """

    pattern: str
    levels: tuple[str, ...] = field(init=False)
    names: tuple[str | None, ...] = field(init=False)

    def __post_init__(self) -> None:
        p = self.pattern
        if not p or len(p) > 65535:
            raise ValueError("topic pattern must not be empty")
        levels = tuple(p.split("/"))
        names: list[str | None] = []
        for i, level in enumerate(levels):
            m = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", level)
            if m:
                names.append(m.group(1))
            elif level == "#":
                if i != len(levels) - 1:
                    raise ValueError(f"'#' must be the last level in {p!r}")
                names.append(None)
            elif "{" in level or "}" in level or (("+" in level or "#" in level) and len(level) > 1):
                raise ValueError(f"invalid level {level!r} in topic pattern {p!r}")
            else:
                names.append(None)
        captured = [n for n in names if n]
        if len(captured) != len(set(captured)):
            raise ValueError(f"duplicate field name in topic pattern {p!r}")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "names", tuple(names))

    @property
    def filter(self) -> str:
        return "/".join("+" if n else lvl for lvl, n in zip(self.levels, self.names, strict=True))

    def parse(self, topic: str) -> dict[str, str] | None:
        """Captured fields if ``topic`` matches, else None."""
        parts = topic.split("/")
        out: dict[str, str] = {}
        for i, (level, name) in enumerate(zip(self.levels, self.names, strict=True)):
            if level == "#":
                return out
            if i >= len(parts):
                return None
            if name:
                out[name] = parts[i]
            elif level != "+" and level != parts[i]:
                return None
        return out if len(parts) == len(self.levels) else None


def strip_share(topic_filter: str) -> str:
    """``$share/group/a/b`` -> ``a/b``: the part messages are matched against."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return topic_filter


def filter_matches(topic_filter: str, topic: str) -> bool:
    f = strip_share(topic_filter).split("/")
    t = topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return not (i == 0 and t[0].startswith("$"))
        if i >= len(t):
            return False
        if level == "+":
            if i == 0 and t[0].startswith("$"):
                return False
            continue
        if level != t[i]:
            return False
    return len(f) == len(t)


def decode_payload(data: bytes, fmt: PayloadFormat) -> Any:
    if fmt == "bytes":
        return data
    if fmt == "base64":
        return base64.b64encode(data).decode("ascii")
    if fmt == "json":
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MessageError(f"payload is not valid JSON: {exc}") from None
    head = data[:1]
    if fmt == "auto" and (head == b"{" or head == b"["):
        # Hot path (TTN uplinks): orjson parses ~3x faster than json and validates UTF-8.
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if fmt == "text":
            raise MessageError("payload is not valid UTF-8 text") from None
        return data
    if fmt == "auto":
        stripped = text.lstrip()
        if stripped[:1] in ("{", "[", '"') or stripped in ("true", "false", "null"):
            with contextlib.suppress(ValueError):
                return json.loads(text)
        else:
            with contextlib.suppress(ValueError):
                if re.fullmatch(r"\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*", text):
                    return json.loads(text)
    return text


def encode_payload(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if value is None:
        return b""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- connection -------------------------------------------------------------------------


class MqttConfig(ConnectionConfig):
    """An MQTT broker. Give ``url`` (``mqtt://host:1883``, ``mqtts://user:pass@host:8883``) or host/port."""

    url: str | None = Field(
        default=None,
        description="Broker URL: `mqtt://[user[:pass]@]host[:port]` or `mqtts://` for TLS. Write it as `${MQTT_URL:-mqtt://127.0.0.1:1883}` so credentials stay in the environment.",
    )
    host: str = Field(default="127.0.0.1", description="Broker host (ignored when `url` is set).")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Broker port; default 1883, or 8883 with TLS."
    )
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1", description="MQTT protocol version. The Things Network speaks 3.1.1 (QoS 0 only)."
    )
    client_id: str | None = Field(
        default=None,
        description="Client identifier. Default: random with a clean session; `klimaflow-<connection>-<hostname>` with a persistent session (two engines on one host with persistent sessions need distinct ids).",
    )
    username: str | None = Field(default=None, description="User name (overrides one in `url`).")
    password: SecretStr | None = Field(default=None, description="Password, from `${ENV}` or `${file:...}`.")
    tls: bool = Field(default=False, description="Use TLS (implied by `mqtts://`).")
    ca_file: str | None = Field(default=None, description="CA certificate file for TLS.")
    cert_file: str | None = Field(default=None, description="Client certificate file for TLS.")
    key_file: str | None = Field(default=None, description="Client key file for TLS.")
    insecure: bool = Field(
        default=False,
        description="Skip verification of the broker's certificate and host name (testing only).",
    )
    keepalive: int = Field(default=60, ge=5, description="Keepalive interval in seconds.")
    clean_session: bool = Field(
        default=True,
        description="False: persistent session; the broker keeps subscriptions and queues QoS 1/2 messages while klimaflow is away.",
    )
    session_expiry: int = Field(
        default=3600,
        ge=0,
        description="MQTT 5 only: seconds the broker keeps a persistent session after disconnect.",
    )
    receive_maximum: int = Field(
        default=10000,
        ge=1,
        le=65535,
        description="MQTT 5 only: unacknowledged QoS 1/2 messages the broker may send at once (flow control).",
    )
    read_high_water: int = Field(
        default=2000,
        ge=10,
        description="Received messages that may wait for the flow before klimaflow stops reading from the broker (TCP back-pressure instead of unbounded memory).",
    )
    batch_linger: Duration = Field(
        default=0.02,
        ge=0,
        le=1,
        description=(
            "Shortest time between two reads of the broker's socket: what arrives meanwhile is "
            "read and handed to the flow together. At low rates (messages trickling in one TCP "
            "segment each) fewer, larger reads and hand-offs cost less CPU per message, for at "
            "most this much added latency; the first message after a quiet moment is read at "
            "once. 0: read whenever data arrives."
        ),
    )
    reconnect_min: Duration = Field(
        default=0.5, description="First reconnect delay; doubles up to `reconnect_max`."
    )
    reconnect_max: Duration = Field(default=30.0, description="Longest reconnect delay.")

    @model_validator(mode="after")
    def _check_url(self) -> MqttConfig:
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
                raise ValueError(f"unsupported URL scheme {parts.scheme!r}: use mqtt:// or mqtts://")
            if not parts.hostname:
                raise ValueError(f"no host in URL {self.url!r}")
        return self

    def endpoint(self) -> tuple[str, int, bool, str | None, str | None]:
        """(host, port, tls, username, password) after combining url and fields."""
        host, port, tls = self.host, self.port, self.tls
        user = self.username
        pw = self.password.get_secret_value() if self.password else None
        if self.url:
            parts = urlsplit(self.url)
            host = parts.hostname or host
            tls = tls or parts.scheme in ("mqtts", "ssl")
            port = port or parts.port
            if parts.username and user is None:
                user = unquote(parts.username)
            if parts.password and pw is None:
                pw = unquote(parts.password)
        return host, port or (8883 if tls else 1883), tls, user, pw


#: Receives the messages of one read batch that match its subscription, in order, each with
#: its own delivery (None for QoS 0): a message passed on retains its delivery once.
Handler = Callable[[list[tuple[aiomqtt.Message, Delivery | None]]], Awaitable[None]]

#: Most received messages dispatched together (one hand-off to the flow per batch).
DISPATCH_BATCH = 500


@dataclass
class Subscription:
    topic_filter: str
    qos: int
    handler: Handler
    paused: bool = False


class MqttConnection(Connection):
    """MQTT broker connection shared by all mqtt-in/mqtt-out nodes that name it; reconnects with capped backoff."""

    type_name = "mqtt"
    Config = MqttConfig
    config: MqttConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscriptions: list[Subscription] = []
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.state: Literal["idle", "connecting", "connected", "reconnecting", "closed"] = "idle"
        self.last_error: str | None = None
        self.connects = 0
        self._listeners: list[Callable[[str, str | None], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Future[None]] = set()
        self._acks = _AckBatcher()
        self._read_limit = _ReadLimit()
        #: The current session's socket reader (read throttle and linger); None between sessions.
        self.reader: _ReadThrottle | None = None
        self.unrouted = 0
        self._closing = False
        #: topic -> subscriptions it matches; cleared whenever the subscriptions change.
        self._routes: dict[str, list[Subscription]] = {}
        cfg = self.config
        if cfg.client_id:
            self.client_id = cfg.client_id
        elif cfg.clean_session:
            self.client_id = f"klimaflow-{self.name}-{uuid.uuid4().hex[:10]}"
        else:
            self.client_id = f"klimaflow-{self.name}-{socket.gethostname()}"

    def on_state(self, listener: Callable[[str, str | None], None]) -> None:
        self._listeners.append(listener)
        listener(self.state, self.last_error)

    def off_state(self, listener: Callable[[str, str | None], None]) -> None:
        """Forget a listener: a node replaced by a live reload must not keep getting states."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _set_state(
        self,
        state: Literal["idle", "connecting", "connected", "reconnecting", "closed"],
        error: str | None = None,
    ) -> None:
        self.state = state
        self.last_error = error
        for cb in list(self._listeners):
            cb(state, error)

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> Subscription:
        sub = Subscription(topic_filter, qos, handler)
        self.subscriptions.append(sub)
        self._routes.clear()
        if self.client is not None and self.connected.is_set():
            task = asyncio.ensure_future(self._subscribe(self.client, sub))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
        return sub

    async def _subscribe(self, client: aiomqtt.Client, sub: Subscription) -> None:
        await client.subscribe(sub.topic_filter, qos=sub.qos)

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a subscription of a node that stops while the connection keeps running.

        The broker is told only when no other subscription uses the same filter: during a
        live reload the replacing node subscribes to the same filter *before* the old one
        unsubscribes, so the broker never stops sending. Publishes that arrive afterwards
        for a filter nobody subscribes to any more are acknowledged (see :meth:`_dispatch`).
        """
        with contextlib.suppress(ValueError):
            self.subscriptions.remove(sub)
        self._routes.clear()
        if any(s.topic_filter == sub.topic_filter for s in self.subscriptions):
            return
        client = self.client
        if client is not None and self.connected.is_set() and not self._closing:
            task = asyncio.ensure_future(self._unsubscribe(client, sub.topic_filter))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

    async def _unsubscribe(self, client: aiomqtt.Client, topic_filter: str) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.unsubscribe(topic_filter)

    async def activate(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt:{self.name}")

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.config
        host, port, tls, user, pw = cfg.endpoint()
        v5 = cfg.protocol == "5"
        tls_context: ssl.SSLContext | None = None
        if tls:
            tls_context = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.cert_file:
                tls_context.load_cert_chain(cfg.cert_file, cfg.key_file)
            if cfg.insecure:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0 if cfg.clean_session else cfg.session_expiry
            properties.ReceiveMaximum = cfg.receive_maximum
        client = aiomqtt.Client(
            host,
            port,
            username=user,
            password=pw,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else cfg.clean_session,
            clean_start=cfg.clean_session if v5 else paho_mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=cfg.keepalive,
            properties=properties,
            tls_context=tls_context,
            tls_insecure=cfg.insecure if tls else None,
            logger=self.log,
        )
        # aiomqtt 2.x keeps its paho client private; manual acks are what make "ack after commit" possible.
        client._client.manual_ack_set(True)
        self._read_limit = _ReadLimit()
        _buffer_reads(client, self._read_limit)
        return client

    async def _run(self) -> None:
        backoff = self.config.reconnect_min
        while not self._closing:
            self._set_state("connecting" if self.connects == 0 else "reconnecting", self.last_error)
            try:
                client = self._make_client()
                async with client:
                    self.client = client
                    self.connects += 1
                    for sub in self.subscriptions:
                        await client.subscribe(sub.topic_filter, qos=sub.qos)
                    self.connected.set()
                    self._set_state("connected")
                    backoff = self.config.reconnect_min
                    # Fast path: take queued messages directly. aiomqtt's iterator creates a task
                    # and an asyncio.wait per message (it also watches for disconnects), which
                    # cost more than everything else per message; use it only when idle.
                    queue = client._queue
                    waiting = client.messages.__aiter__()
                    reader = self.reader = _ReadThrottle(
                        client, self.config.read_high_water, self.config.batch_linger
                    )
                    self._read_limit.high = self.config.read_high_water
                    get_nowait = queue.get_nowait
                    try:
                        while True:
                            try:
                                m = get_nowait()
                            except asyncio.QueueEmpty:
                                m = await waiting.__anext__()
                            batch = [m]
                            with contextlib.suppress(asyncio.QueueEmpty):
                                while len(batch) < DISPATCH_BATCH:
                                    batch.append(get_nowait())
                            reader.consumed()
                            await self._dispatch(client, batch)
                    finally:
                        reader.close()
                        self.reader = None
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if not self._closing:
                    self.log.warning("MQTT %s: %s; reconnecting in %.1fs", self.name, exc, backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the connection loop die
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.log.error("MQTT %s: unexpected %s", self.name, self.last_error)
            finally:
                if self.client is not None:
                    gone = self.client._disconnected
                    if gone.done() and not gone.cancelled():
                        gone.exception()  # seen (it is why we reconnect): keep asyncio quiet
                self.client = None
                self.connected.clear()
            if self._closing:
                break
            self._set_state("reconnecting", self.last_error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.reconnect_max)
        self._set_state("closed")

    def _route(self, topic: str) -> list[Subscription]:
        subs = self._routes.get(topic)
        if subs is None:
            subs = [s for s in self.subscriptions if filter_matches(s.topic_filter, topic)]
            if len(self._routes) >= 10_000:
                self._routes.clear()
            self._routes[topic] = subs
        return subs

    async def _dispatch(self, client: aiomqtt.Client, batch: list[aiomqtt.Message]) -> None:
        """Hand a read batch to the subscriptions' handlers, one hand-off per subscription.

        Every QoS 1/2 message gets its own :class:`Delivery`, so its PUBACK goes out once
        everything derived from it is committed downstream — independently of its batch
        mates (a message parked in a ``delay`` node must not hold up the others' acks and
        the broker's in-flight window). Messages for paused subscriptions are never
        acknowledged: the broker redelivers them on the next session.
        """
        # Per topic, the item lists of its active subscriptions (one pass over the
        # subscriptions per topic and batch; nothing awaits in between, so pause flags hold).
        targets: dict[str, list[list[tuple[aiomqtt.Message, Delivery | None]]] | None] = {}
        groups: dict[int, tuple[Subscription, list[tuple[aiomqtt.Message, Delivery | None]]]] = {}
        mine: list[Delivery] = []
        route = self._route
        ack = self._ack_for(client)
        for m in batch:
            topic = m.topic.value
            try:
                lists = targets[topic]
            except KeyError:
                subs = route(topic)
                if subs:
                    lists = []
                    for sub in subs:
                        if not sub.paused:
                            entry = groups.get(id(sub))
                            if entry is None:
                                entry = groups[id(sub)] = (sub, [])
                            lists.append(entry[1])
                else:
                    lists = None
                targets[topic] = lists
            if lists:
                delivery: Delivery | None = None
                if m.qos > 0:
                    delivery = Delivery(partial(ack, m.mid, m.qos))
                    mine.append(delivery)
                item = (m, delivery)
                for target in lists:
                    target.append(item)
                continue
            self.unrouted += 1
            if lists is None and m.qos > 0:
                # Unsubscribed while the session goes on (a node removed by a live reload): no
                # flow wants it any more. Acknowledge, or it would hold one of the broker's
                # in-flight slots (max_inflight_messages) for the rest of the session.
                ack(m.mid, m.qos, True)
            # Otherwise every subscription is paused for stop: leave it unacknowledged; the
            # broker redelivers it on the next session.
        # No try/finally: if a handler fails, the rest stays unacknowledged (redelivered).
        for sub, items in groups.values():
            if items:
                await sub.handler(items)
        for d in mine:
            d.release()

    def _ack_for(self, client: aiomqtt.Client) -> Callable[[int, int, bool], None]:
        def ack(mid: int, qos: int, _ok: bool) -> None:
            # A stale client (after a reconnect) must not ack: its message ids mean nothing
            # on the new session, where the broker redelivers the message.
            if client is self.client:
                self._acks.queue(client, mid, qos)

        return ack

    async def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: Properties | None = None
    ) -> None:
        """Publish, waiting for the connection; raises aiomqtt.MqttError if it drops meanwhile."""
        await self.connected.wait()
        client = self.client
        if client is None:
            raise aiomqtt.MqttError("not connected")
        await client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._set_state("closed")


class _ReadThrottle:
    """Stops reading the socket while ``high_water`` received messages wait for the flow.

    paho reads whatever the socket offers into aiomqtt's unbounded queue, so a flow
    slower than the broker would grow memory without bound (and make every garbage
    collection slower). With the reader paused, TCP flow control pushes back to the
    broker instead, which queues or, for QoS 0 past its own limits, drops — counted in
    its ``$SYS`` topics. Replaces aiomqtt's reader callback with an equivalent one.

    It also reads at most once per ``linger`` seconds: each read drains the socket, and
    a readable event sooner than that after the last read waits for the rest of the
    interval. At a few thousand messages a second each message otherwise arrives in a
    TCP segment of its own and costs an event-loop wakeup, two system calls and a
    hand-off through every node of the flow, more than decoding and storing it.
    """

    def __init__(self, client: aiomqtt.Client, high_water: int, linger: float = 0.0) -> None:
        self.client = client
        self.paho = client._client
        self.queue = client._queue
        self.high = high_water
        self.low = high_water // 2
        self.linger = linger
        self.loop = asyncio.get_running_loop()
        self.paused = False
        self._next_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        sock = self.paho.socket()
        self.fd = sock.fileno() if sock is not None else -1
        if self.fd >= 0:
            self.loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        if self.linger:
            now = self.loop.time()
            wait = self._next_read - now
            if wait > 0:
                if self._timer is None:
                    self.loop.remove_reader(self.fd)
                    self._timer = self.loop.call_later(wait, self._after_linger)
                return
            self._next_read = now + self.linger
        self._drain()

    def _after_linger(self) -> None:
        self._timer = None
        sock = self.paho._sock
        if self.paused or sock is None or self.client._disconnected.done() or sock.fileno() != self.fd:
            return  # paused: consumed() resumes; closed: aiomqtt has removed the reader for good
        self.loop.add_reader(self.fd, self._on_readable)
        self._next_read = self.loop.time() + self.linger
        self._drain()

    def close(self) -> None:
        """The connection ended: no timer may re-add a reader to a closed (or reused) fd."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drain(self) -> None:
        paho = self.paho
        try:
            while True:
                paho.loop_read()
                sock = paho._sock
                if (
                    sock is not None
                    and hasattr(sock, "pending")
                    and sock.pending() > 0
                    and self.queue.qsize() < self.high
                ):
                    continue  # TLS: decrypted bytes paho has not consumed yet
                break
        except Exception as exc:  # the connection broke: aiomqtt's iterator raises it
            if not self.client._disconnected.done():
                self.client._disconnected.set_exception(exc)
            return
        if self.queue.qsize() >= self.high and paho._sock is not None:
            self.loop.remove_reader(self.fd)
            self.paused = True

    def consumed(self) -> None:
        if self.paused and self.queue.qsize() <= self.low:
            self.paused = False
            if self.paho._sock is not None:
                self.loop.add_reader(self.fd, self._on_readable)
                # Packets may already sit in the read buffer, where no readable event
                # will announce them: handle them now. No linger: the flow was behind, so
                # batches are large anyway, and waiting would cap reads at one backlog a linger.
                self.loop.call_soon(self._resume)

    def _resume(self) -> None:
        if self._timer is not None or self.paused:
            return  # a linger timer reads soon anyway; or paused again meanwhile
        self._next_read = self.loop.time() + self.linger
        self._drain()


class _AckBatcher:
    """Sends the PUBACKs that became due in one event-loop tick as one write.

    paho's ``ack()`` queues one 4-byte packet per message and, with aiomqtt's event-loop
    integration, costs a wake-up write plus a writer (re)registration each time: at
    thousands of messages per second that was most of the per-message CPU. A QoS 1
    PUBACK is the same 4 bytes in MQTT 3.1.1 and 5 (success, no properties), so the
    acks of a tick are concatenated into one packet in paho's own output queue, which
    keeps them in order with everything else paho writes.
    """

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._client: aiomqtt.Client | None = None
        self._scheduled = False

    def queue(self, client: aiomqtt.Client, mid: int, qos: int) -> None:
        paho = client._client
        if qos != 1:
            paho.ack(mid, qos)  # QoS 2 (PUBCOMP) is rare: let paho do it
            return
        if self._client is not client:
            self.flush()
            self._client = client
        self._pending.append(mid)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        client, mids = self._client, self._pending
        self._pending = []
        if client is None or not mids:
            return
        paho = client._client
        if paho._sock is None:
            return  # disconnected: the broker redelivers on the next session
        packet = b"".join(struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids)
        paho._packet_queue(_PUBACK, packet, 0, 1)
        logger = paho._logger
        if logger is not None and logger.isEnabledFor(logging.DEBUG):
            for mid in mids:  # paho's own wording, so logs read the same as without batching
                logger.debug("Sending PUBACK (Mid: %d)", mid)


_PUBACK = 0x40


class _Topic:
    """The one attribute of aiomqtt's ``Topic`` the dispatch reads, without its validation."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value


class _Incoming:
    """A PUBLISH decoded by the fast path; quacks like ``aiomqtt.Message`` for ``_dispatch``."""

    __slots__ = ("mid", "payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        self.topic = _Topic(topic)
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.mid = mid


class _ReadLimit:
    """How many received messages may wait before reads stop; 0 until the consumer runs
    (the handshake and SUBACKs must be read whatever the backlog a session resumes with)."""

    __slots__ = ("high",)

    def __init__(self) -> None:
        self.high = 0


def _buffer_reads(client: aiomqtt.Client, limit: _ReadLimit) -> None:
    """Read the socket in 256 KiB chunks and decode PUBLISH packets without paho's machinery.

    paho reads a packet's command byte, its length bytes and its body with separate
    system calls, handles one packet per readable event, and runs ~15 µs of Python per
    PUBLISH (parsing, ``MQTTMessage``, callbacks, aiomqtt's ``Message`` and ``Topic``).
    Here the socket is read in large chunks; complete QoS 0/1 PUBLISH packets at the head
    of the buffer are decoded directly into aiomqtt's message queue, and every other
    packet (CONNACK, SUBACK, PINGRESP, QoS 2, MQTT 5 packets with properties, anything
    malformed) is left to paho, reading from the same buffer. Packets are handled until
    the buffer is empty, so none waits for a readable event that will not come.
    """
    paho = client._client
    queue = client._queue
    chunk = b""
    pos = 0
    sock_recv = paho._sock_recv
    v5 = paho._protocol == paho_mqtt.MQTTv5
    monotonic = paho_mqtt.time_func  # the clock paho compares keepalive times with

    failed: BaseException | None = None  # met by read(): raised to paho at its next recv
    eof = False

    def recv(bufsize: int) -> bytes:
        nonlocal chunk, pos, failed, eof
        if pos >= len(chunk):
            if failed is not None:
                exc, failed = failed, None
                raise exc
            if eof:
                eof = False
                return b""
            data = sock_recv(262144)
            if not data:
                return data
            chunk, pos = data, 0
        out = chunk[pos : pos + bufsize]  # paho handles short reads
        pos += len(out)
        return out

    def fast_publishes() -> None:
        nonlocal pos
        data, p, end = chunk, pos, len(chunk)
        taken = 0
        logger = paho._logger
        debug = logger is not None and logger.isEnabledFor(logging.DEBUG)
        while p < end:
            b0 = data[p]
            qos = (b0 >> 1) & 3
            if b0 >> 4 != 3 or qos == 2:
                break
            remaining, mult, i = 0, 1, p + 1
            while i < end and i - p <= 4:
                byte = data[i]
                remaining += (byte & 0x7F) * mult
                mult <<= 7
                i += 1
                if byte < 0x80:
                    break
            else:
                break  # length incomplete (or malformed): paho takes it from here
            last = i + remaining
            if last > end or remaining < 2:
                break
            tlen = (data[i] << 8) | data[i + 1]
            j = i + 2 + tlen
            if tlen == 0 or j > last:
                break
            try:
                topic = data[i + 2 : j].decode("utf-8")
            except UnicodeDecodeError:
                break
            mid = 0
            if qos:
                if j + 2 > last:
                    break
                mid = (data[j] << 8) | data[j + 1]
                j += 2
            if v5:
                if j >= last or data[j] != 0:
                    break  # properties (topic alias, user properties...): paho decodes them
                j += 1
            payload = data[j:last]
            if debug:  # paho's own wording, so logs read the same with the fast path
                logger.debug(  # type: ignore[union-attr]
                    "Received PUBLISH (d%d, q%d, r%d, m%d), '%s', ...  (%d bytes)",
                    (b0 >> 3) & 1,
                    qos,
                    b0 & 1,
                    mid,
                    topic,
                    len(payload),
                )
            queue.put_nowait(_Incoming(topic, payload, qos, bool(b0 & 1), mid))  # type: ignore[arg-type]
            taken += 1
            p = last
        if taken:
            pos = p
            paho._last_bytes_received = monotonic()  # paho's keepalive bookkeeping

    def read(max_packets: int = 1) -> MQTTErrorCode:
        nonlocal chunk, pos, failed, eof
        while paho._sock is not None:
            if paho._in_packet["command"] == 0:
                if pos >= len(chunk) and failed is None and not eof:
                    # Refill here rather than in paho's read: the first packet of a fresh chunk
                    # would otherwise take paho's slow path, and at low rates a chunk is often
                    # a single packet.
                    try:
                        data = sock_recv(262144)
                    except BlockingIOError:
                        return paho_mqtt.MQTT_ERR_SUCCESS
                    except Exception as exc:  # paho meets it at its next recv and handles it
                        failed = exc
                    else:
                        if data:
                            chunk, pos = data, 0
                        else:
                            eof = True  # likewise: paho sees the connection closed
                if pos < len(chunk):
                    fast_publishes()
                    if pos >= len(chunk) and failed is None and not eof:
                        if limit.high and queue.qsize() >= limit.high:
                            return paho_mqtt.MQTT_ERR_SUCCESS
                        continue  # all taken: refill above, so the next packet takes the fast path too
            if limit.high and queue.qsize() >= limit.high:
                # Enough waits for the flow: read no further (the read throttle pauses the
                # socket and calls this again when it resumes, for what is still buffered).
                return paho_mqtt.MQTT_ERR_SUCCESS
            rc = paho._packet_read()
            if rc > 0:
                return paho._loop_rc_handle(rc)
            if rc == paho_mqtt.MQTT_ERR_AGAIN:
                return paho_mqtt.MQTT_ERR_SUCCESS
        return paho_mqtt.MQTT_ERR_NO_CONN

    paho._sock_recv = recv  # type: ignore[method-assign]
    paho.loop_read = read  # type: ignore[method-assign]
    # aiomqtt registers no per-topic paho callbacks, but paho still walks its topic
    # matcher for every message it decodes itself: skip that walk.
    paho._on_message_filtered = _NoFilteredCallbacks()  # type: ignore[assignment]


class _NoFilteredCallbacks:
    """Stands in for paho's ``MQTTMatcher`` when no ``message_callback_add`` is used."""

    def iter_match(self, topic: str) -> tuple[()]:
        return ()

    def __setitem__(self, key: str, value: Any) -> None:
        raise NotImplementedError("klimaflow dispatches messages itself")


def _mqtt(node: Node, name: str) -> MqttConnection:
    conn = node.ctx.connection(name)
    if not isinstance(conn, MqttConnection):
        raise ConfigError(f"connection {name!r} is not an MQTT connection")
    return conn


def _state_status(node: Node) -> Callable[[str, str | None], None]:
    def update(state: str, error: str | None) -> None:
        if state == "connected":
            node.status("ok", "connected")
        elif state == "reconnecting":
            node.status("warning", f"reconnecting: {error}" if error else "reconnecting")
        elif state == "closed":
            node.status("warning", "closed")
        else:
            node.status("warning", state)

    return update


# -- mqtt-in ----------------------------------------------------------------------------


class MqttInConfig(NodeConfig):
    """What to subscribe to and how to read it."""

    broker: str = connection_field("mqtt", "Name of the `mqtt` connection to use.")
    topic: str | list[str] = Field(
        description="Topic filter(s) with `+`/`#` wildcards, or a pattern with named levels like `v3/{application}/devices/{device_id}/up`. `$share/GROUP/...` for MQTT 5 shared subscriptions."
    )
    qos: Literal[0, 1, 2] = Field(
        default=1,
        description="Subscription QoS. QoS 1/2 are acknowledged only after the message was committed downstream.",
    )
    payload_format: PayloadFormat = Field(
        default="auto",
        description="How to decode the payload: `auto` (JSON if it parses, else text, else bytes), `json`, `text`, `bytes`, `base64`.",
    )
    topic_fields: str = Field(
        default="topic_fields",
        description="Message property that receives the named levels parsed from the topic.",
    )

    @field_validator("topic")
    @classmethod
    def _check_topics(cls, value: str | list[str]) -> str | list[str]:
        topics = [value] if isinstance(value, str) else value
        if not topics:
            raise ValueError("at least one topic is required")
        for t in topics:
            inner = strip_share(t)
            if t.startswith("$share/") and (not inner or t.count("/") < 2):
                raise ValueError(f"invalid shared subscription {t!r}: use $share/GROUP/filter")
            TopicPattern(inner)
        return value


class MqttInNode(Node):
    """Subscribe to MQTT topics; emits one message per publish, topic levels parsed into fields."""

    type_name = "mqtt-in"
    category = "network"
    Config = MqttInConfig
    inputs = 0
    color = "#d8bfd8"
    icon = "bridge"
    config: MqttInConfig

    async def start(self) -> None:
        self.conn = _mqtt(self, self.config.broker)
        topics = [self.config.topic] if isinstance(self.config.topic, str) else list(self.config.topic)
        self._subs: list[Subscription] = []
        for t in topics:
            prefix = t[: len(t) - len(strip_share(t))]
            pattern = TopicPattern(strip_share(t))
            handler = self._make_handler(pattern)
            self._subs.append(self.conn.subscribe(prefix + pattern.filter, self.config.qos, handler))
        self._on_state = _state_status(self)
        self.conn.on_state(self._on_state)

    def _make_handler(self, pattern: TopicPattern) -> Handler:
        fmt = self.config.payload_format
        fields_key = self.config.topic_fields
        has_names = any(pattern.names)
        parsed: dict[str, dict[str, str]] = {}  # topic -> its fields (topics repeat per device)

        async def handle(batch: list[tuple[aiomqtt.Message, Delivery | None]]) -> None:
            out: list[Message] = []
            failed: list[tuple[Message, MessageError]] = []
            raw_bytes = fmt == "bytes"
            for m, delivery in batch:
                topic = m.topic.value
                meta: dict[str, Any] = {"qos": m.qos, "retain": m.retain}
                if has_names:
                    found = parsed.get(topic)
                    if found is None:
                        found = pattern.parse(topic) or {}
                        if len(parsed) >= 10_000:
                            parsed.clear()
                        parsed[topic] = found
                    meta[fields_key] = found.copy()
                if delivery is not None:
                    delivery.retain()
                    deliveries: tuple[Delivery, ...] = (delivery,)
                else:
                    deliveries = ()
                raw = m.payload
                if type(raw) is not bytes:
                    raw = bytes(raw) if isinstance(raw, bytearray) else encode_payload(raw)
                if raw_bytes:
                    out.append(Message(raw, topic, meta=meta, deliveries=deliveries))
                    continue
                try:
                    payload = decode_payload(raw, fmt)
                except MessageError as exc:
                    failed.append((Message(raw, topic, meta=meta, deliveries=deliveries), exc))
                    continue
                out.append(Message(payload, topic, meta=meta, deliveries=deliveries))
            await self.send_many(out)
            for msg, problem in failed:
                try:
                    await self.emit_error(msg, problem)
                finally:
                    msg.release()

        return handle

    async def pause(self) -> None:
        for sub in getattr(self, "_subs", []):
            sub.paused = True

    async def stop(self) -> None:
        """Hand the subscription over (live reload), unless paused (shutdown).

        Not paused: the engine is replacing or removing this node while the connection keeps
        running, so the subscription is removed; a replacing node has already subscribed to
        the same filter, so the broker keeps sending. Paused: the connection is about to
        close, so the paused subscription stays registered and what the broker sends until
        then stays unacknowledged, to be redelivered on the next session.
        """
        conn: MqttConnection | None = getattr(self, "conn", None)
        if conn is None:
            return
        for sub in self._subs:
            if not sub.paused:
                conn.unsubscribe(sub)
        conn.off_state(self._on_state)


# -- mqtt-out ---------------------------------------------------------------------------


class MqttOutConfig(NodeConfig):
    """Where and how to publish."""

    broker: str = connection_field("mqtt", "Name of the `mqtt` connection to use.")
    topic: str | None = Field(
        default=None,
        description="Topic, may use `{property.path}` placeholders, e.g. `klima/{payload.device_id}/state`. Default: the message's topic.",
    )
    qos: Literal[0, 1, 2] = Field(
        default=1,
        description="Publish QoS; the message is acknowledged upstream once the broker confirmed it.",
    )
    retain: bool = Field(default=False, description="Publish as retained message.")
    queue_size: int = Field(
        default=10000,
        ge=1,
        description="Messages queued while the broker is away; when full, the flow waits (back-pressure) instead of dropping.",
    )
    message_expiry: int | None = Field(
        default=None, ge=1, description="MQTT 5: message expiry interval in seconds."
    )
    content_type: str | None = Field(default=None, description="MQTT 5: content type property.")
    user_properties: dict[str, str] = Field(default_factory=dict, description="MQTT 5: user properties.")
    flush_timeout: Duration = Field(
        default=5.0,
        description="On stop, how long to wait for queued messages to be published; unsent ones stay unacknowledged upstream.",
    )

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str | None) -> str | None:
        if value is not None and ("+" in value or "#" in value):
            raise ValueError("a publish topic cannot contain wildcards")
        return value


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")


class MqttOutNode(Node):
    """Publish messages to MQTT; queues (bounded, counted) while the broker is away."""

    type_name = "mqtt-out"
    category = "network"
    Config = MqttOutConfig
    color = "#d8bfd8"
    icon = "bridge"
    config: MqttOutConfig

    async def start(self) -> None:
        self.conn = _mqtt(self, self.config.broker)
        self.queue: asyncio.Queue[tuple[Message, str, bytes]] = asyncio.Queue(self.config.queue_size)
        self.published = 0
        self.queued_peak = 0
        self._on_state = _state_status(self)
        self.conn.on_state(self._on_state)
        self.ctx.spawn(self._sender(), "sender")

    def _topic(self, msg: Message) -> str:
        template = self.config.topic
        if template is None:
            if not msg.topic:
                raise MessageError("no topic: set `topic` on the node or send a message with a topic")
            return msg.topic
        if "{" not in template:
            return template
        view = msg.to_dict()

        def repl(m: re.Match[str]) -> str:
            value = get_path(view, m.group(1))
            if value is None:
                raise MessageError(f"topic placeholder {{{m.group(1)}}} is missing in the message")
            return str(value)

        return _PLACEHOLDER.sub(repl, template)

    def _properties(self) -> Properties | None:
        c = self.config
        if not (c.message_expiry or c.content_type or c.user_properties):
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if c.message_expiry:
            props.MessageExpiryInterval = c.message_expiry
        if c.content_type:
            props.ContentType = c.content_type
        if c.user_properties:
            props.UserProperty = list(c.user_properties.items())
        return props

    async def on_message(self, msg: Message) -> None:
        topic = self._topic(msg)
        payload = encode_payload(msg.payload)
        self.hold(msg)
        await self.queue.put((msg, topic, payload))
        self.queued_peak = max(self.queued_peak, self.queue.qsize())

    async def _sender(self) -> None:
        props = self._properties() if self.conn.config.protocol == "5" else None
        backoff = 0.2
        while True:
            msg, topic, payload = await self.queue.get()
            while True:
                try:
                    await self.conn.publish(topic, payload, self.config.qos, self.config.retain, props)
                    break
                except aiomqtt.MqttError as exc:
                    self.status("warning", f"queued {self.queue.qsize() + 1}: {exc}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            backoff = 0.2
            self.published += 1
            self.queue.task_done()
            msg.release()

    async def stop(self) -> None:
        # Flush what is queued while the broker is reachable; unsent messages stay unacknowledged.
        if not hasattr(self, "queue"):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout=self.config.flush_timeout)
        self.conn.off_state(self._on_state)
