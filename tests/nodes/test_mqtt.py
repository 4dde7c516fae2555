"""mqtt-in / mqtt-out against a real Mosquitto started per test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest

from engine.message import Message
from engine.node import Node
from engine.types import NodeConfig
from nodes.mqtt import TopicPattern, decode_payload, filter_matches
from tests.flowkit import FlowHarness, run_flow, test_registry
from tests.services.mosquitto import Mosquitto


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def publish(
    broker: Mosquitto,
    items: list[tuple[str, Any]],
    qos: int = 1,
    client_id: str | None = None,
    gap: float = 0.0,
) -> None:
    """Publish ``items`` in order over one connection, ``gap`` seconds after each."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=client_id) as c:
        for topic, payload in items:
            data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
            await c.publish(topic, data, qos=qos)
            if gap:
                await asyncio.sleep(gap)


def flow(
    broker: Mosquitto,
    *,
    topic: Any = "sensors/#",
    qos: int = 1,
    persistent: bool = False,
    extra_nodes: list[dict[str, Any]] | None = None,
    sink: str = "out",
    client_id: str = "kf-test",
    protocol: str = "3.1.1",
    fmt: str = "auto",
) -> dict[str, Any]:
    conn: dict[str, Any] = {
        "type": "mqtt",
        "url": broker.url,
        "protocol": protocol,
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
    }
    if persistent:
        conn |= {"clean_session": False, "client_id": client_id}
    return {
        "id": "mqtt-test",
        "connections": {"broker": conn},
        "nodes": [
            {
                "id": "in",
                "type": "mqtt-in",
                "broker": "broker",
                "topic": topic,
                "qos": qos,
                "payload_format": fmt,
                "wires": {"out": [sink], "error": ["errors"]},
            },
            {"id": "out", "type": "collect"},
            {"id": "errors", "type": "collect"},
            *(extra_nodes or []),
        ],
    }


async def connected(h: FlowHarness) -> None:
    conn = h.engine.connections["broker"]
    await wait_for(lambda: getattr(conn, "state", "") == "connected")
    await asyncio.sleep(0.1)  # subscription acknowledged


# -- pure parts --------------------------------------------------------------------------


def test_topic_pattern_parses_named_levels() -> None:
    p = TopicPattern("v3/{application}/devices/{device_id}/up")
    assert p.filter == "v3/+/devices/+/up"
    assert p.parse("v3/klima@ttn/devices/eui-a84041/up") == {
        "application": "klima@ttn",
        "device_id": "eui-a84041",
    }
    assert p.parse("v3/klima@ttn/devices/eui-a84041/join") is None
    assert TopicPattern("a/#").parse("a/b/c") == {}


@pytest.mark.parametrize("bad", ["a/{x}/{x}", "a/#/b", "a/b+", "a/{x"])
def test_topic_pattern_rejects_invalid(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is asserted by validation tests
        TopicPattern(bad)


def test_filter_matching_with_shared_subscriptions() -> None:
    assert filter_matches("$share/g/v3/+/devices/+/up", "v3/app/devices/d1/up")
    assert filter_matches("sensors/#", "sensors/a/b")
    assert not filter_matches("sensors/+", "sensors/a/b")
    assert not filter_matches("#", "$SYS/broker/uptime")


def test_decode_payload_formats() -> None:
    assert decode_payload(b'{"a": 1}', "auto") == {"a": 1}
    assert decode_payload(b"21.5", "auto") == 21.5
    assert decode_payload(b"on", "auto") == "on"
    assert decode_payload(b"\xff\x00", "auto") == b"\xff\x00"
    assert decode_payload(b"\x01\x02", "base64") == "AQI="
    assert decode_payload(b"{not json", "auto") == "{not json"


# -- with a real broker ------------------------------------------------------------------


async def test_mqtt_in_receives_and_parses_topic(mosquitto: Mosquitto) -> None:
    doc = flow(mosquitto, topic="v3/{application}/devices/{device_id}/up")
    async with run_flow(doc) as h:
        await connected(h)
        await publish(
            mosquitto,
            [
                ("v3/klima@ttn/devices/eui-1/up", {"n": 1}),
                ("v3/klima@ttn/devices/eui-2/up", {"n": 2}),
                ("v3/other/devices/x/join", {"n": 3}),
            ],
        )
        await wait_for(lambda: len(h.received("out")) == 2)
        got = h.received("out")
        assert [m.payload for m in got] == [{"n": 1}, {"n": 2}]
        assert [m.meta["topic_fields"] for m in got] == [
            {"application": "klima@ttn", "device_id": "eui-1"},
            {"application": "klima@ttn", "device_id": "eui-2"},
        ]
        assert got[0].topic == "v3/klima@ttn/devices/eui-1/up"
        assert h.engine.runtimes["in"].status.text == "connected"


async def test_malformed_json_goes_to_error_port(mosquitto: Mosquitto) -> None:
    async with run_flow(flow(mosquitto, fmt="json")) as h:
        await connected(h)
        await publish(mosquitto, [("sensors/a", b'{"truncated": '), ("sensors/b", {"ok": True})])
        await wait_for(lambda: len(h.received("out")) == 1 and len(h.received("errors")) == 1)
        err = h.received("errors")[0]
        assert err.meta["error"]["class"] == "MessageError"
        assert err.meta["error"]["message"].startswith("payload is not valid JSON")
        assert err.payload == b'{"truncated": '
        assert h.payloads("out") == [{"ok": True}]


class HoldConfig(NodeConfig):
    """No options."""


class HoldNode(Node):
    """Test sink that commits (releases) only when told, like a sink whose write is pending."""

    type_name = "hold"
    Config = HoldConfig
    outputs = ()
    held: list[Message]

    async def on_message(self, msg: Message) -> None:
        if not hasattr(self, "held"):
            self.held = []
        self.hold(msg)
        self.held.append(msg)

    def commit(self) -> None:
        for m in getattr(self, "held", []):
            m.release()
        self.held = []


class GateConfig(NodeConfig):
    """No options."""


class GateNode(Node):
    """Test sink that takes messages only while its gate is open: a flow that has stalled."""

    type_name = "gate"
    Config = GateConfig
    outputs = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.taken: list[Message] = []

    async def on_message(self, msg: Message) -> None:
        await self.gate.wait()
        self.taken.append(msg)


@pytest.fixture
def hold_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test sinks (`hold`, `gate`) as node types of the flows run here."""
    reg = test_registry()
    reg.add_node(HoldNode)
    reg.add_node(GateNode)
    monkeypatch.setattr("tests.flowkit.test_registry", lambda: reg)


@pytest.mark.usefixtures("hold_registry")
async def test_qos1_is_acked_only_after_commit(mosquitto_persistent: Mosquitto) -> None:
    """Uncommitted messages are redelivered after a restart; committed ones are not."""
    doc = flow(
        mosquitto_persistent, persistent=True, sink="sink", extra_nodes=[{"id": "sink", "type": "hold"}]
    )
    async with run_flow(doc, drain_timeout=0.5) as h:
        await connected(h)
        await publish(mosquitto_persistent, [("sensors/a", {"n": i}) for i in range(6)])
        sink = h.engine.node("sink")
        assert isinstance(sink, HoldNode)
        await wait_for(lambda: len(getattr(sink, "held", [])) == 6)
        # Commit the first three only, then stop the engine with three unacknowledged.
        first, rest = sink.held[:3], sink.held[3:]
        for m in first:
            m.release()
        sink.held = rest
        await asyncio.sleep(0.3)
    async with run_flow(doc) as h2:
        await connected(h2)
        sink2 = h2.engine.node("sink")
        assert isinstance(sink2, HoldNode)
        await wait_for(lambda: len(getattr(sink2, "held", [])) == 3)
        assert sorted(m.payload["n"] for m in sink2.held) == [3, 4, 5]
        sink2.commit()


async def test_persistent_session_receives_messages_sent_while_away(mosquitto_persistent: Mosquitto) -> None:
    doc = flow(mosquitto_persistent, persistent=True)
    async with run_flow(doc) as h:
        await connected(h)
    await publish(mosquitto_persistent, [("sensors/x", {"n": i}) for i in range(20)])
    async with run_flow(doc) as h2:
        await wait_for(lambda: len(h2.received("out")) == 20)
        assert [m.payload["n"] for m in h2.received("out")] == list(range(20))


async def test_broker_restart_reconnects_and_resubscribes(mosquitto_persistent: Mosquitto) -> None:
    doc = flow(mosquitto_persistent, persistent=True)
    async with run_flow(doc) as h:
        await connected(h)
        await publish(mosquitto_persistent, [("sensors/x", {"n": 0})])
        await wait_for(lambda: len(h.received("out")) == 1)
        mosquitto_persistent.restart()
        await wait_for(lambda: h.engine.connections["broker"].connects >= 2, timeout=15)  # type: ignore[attr-defined]
        await connected(h)
        await publish(mosquitto_persistent, [("sensors/x", {"n": 1})])
        await wait_for(lambda: {"n": 1} in h.payloads("out"))
        # At-least-once: if the broker went down before our PUBACK for n=0 reached it,
        # the persistent session redelivers n=0 after the restart. Nothing is lost.
        assert {m.payload["n"] for m in h.received("out")} == {0, 1}


async def test_mqtt5_shared_subscription_splits_load(mosquitto: Mosquitto) -> None:
    shared = "$share/workers/jobs/#"
    base = flow(mosquitto, topic=shared, protocol="5")
    base["nodes"].append(
        {"id": "in2", "type": "mqtt-in", "broker": "broker2", "topic": shared, "qos": 1, "wires": ["out2"]}
    )
    base["nodes"].append({"id": "out2", "type": "collect"})
    base["connections"]["broker2"] = dict(base["connections"]["broker"])
    async with run_flow(base) as h:
        await connected(h)
        await wait_for(lambda: h.engine.connections["broker2"].state == "connected")  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
        await publish(mosquitto, [("jobs/a", {"n": i}) for i in range(40)])
        await wait_for(lambda: len(h.received("out")) + len(h.received("out2")) == 40)
        a, b = h.payloads("out"), h.payloads("out2")
        assert sorted(p["n"] for p in a + b) == list(range(40))
        assert a, "first subscriber did part of the work"
        assert b, "second subscriber did part of the work"


async def test_mqtt_out_publishes_with_template_and_queues_while_broker_down(
    mosquitto_persistent: Mosquitto,
) -> None:
    mosquitto = mosquitto_persistent
    doc = {
        "id": "pub",
        "connections": {
            "broker": {"type": "mqtt", "url": mosquitto.url, "reconnect_min": 0.1, "reconnect_max": 0.3}
        },
        "nodes": [
            {
                "id": "pub",
                "type": "mqtt-out",
                "broker": "broker",
                "topic": "klima/{payload.device}/state",
                "qos": 1,
            },
        ],
    }
    received: list[tuple[str, Any]] = []

    async def listen(ready: asyncio.Event) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, identifier="listener", clean_session=False
        ) as c:
            await c.subscribe("klima/#", qos=1)
            ready.set()
            async for m in c.messages:
                received.append((m.topic.value, json.loads(m.payload)))  # type: ignore[arg-type]

    async with run_flow(doc) as h:
        ready = asyncio.Event()
        listener = asyncio.create_task(listen(ready))
        await ready.wait()
        await connected(h)
        await h.send("pub", {"device": "d1", "v": 1})
        await wait_for(lambda: len(received) == 1)
        assert received == [("klima/d1/state", {"device": "d1", "v": 1})]
        listener.cancel()
        mosquitto.stop()
        await wait_for(lambda: h.engine.connections["broker"].state != "connected")  # type: ignore[attr-defined]
        for i in range(5):
            await h.send("pub", {"device": "d2", "v": i})
        await asyncio.sleep(0.3)
        node = h.engine.node("pub")
        assert node.published == 1  # type: ignore[attr-defined]
        assert node.queue.qsize() == 4  # type: ignore[attr-defined]  # the fifth is being retried
        mosquitto.start()
        received.clear()
        ready = asyncio.Event()
        listener = asyncio.create_task(listen(ready))
        await wait_for(lambda: node.published == 6, timeout=15)  # type: ignore[attr-defined]
        await wait_for(lambda: len(received) == 5)
        assert [v for _, v in received] == [{"device": "d2", "v": i} for i in range(5)]
        listener.cancel()


async def test_messages_trickling_in_are_read_together_after_the_first(mosquitto: Mosquitto) -> None:
    """batch_linger: the first message after a quiet moment at once, the next ones read together."""
    doc = flow(mosquitto)
    doc["connections"]["broker"]["batch_linger"] = 0.5
    async with run_flow(doc) as h:
        await connected(h)
        await publish(mosquitto, [("sensors/a", {"n": 0})])
        t_first = time.time()
        await wait_for(lambda: len(h.received("out")) == 1)
        # ~150 ms of trickle, well inside the linger
        await publish(mosquitto, [("sensors/a", {"n": i}) for i in range(1, 11)], gap=0.015)
        await wait_for(lambda: len(h.received("out")) == 11)
        got = h.received("out")
        assert [m.payload["n"] for m in got] == list(range(11))
        assert got[0].entered_at - t_first < 0.3, "the first message after a quiet moment is not held back"
        trickle = [m.entered_at for m in got[1:]]
        assert max(trickle) - min(trickle) < 0.05, "the trickle was read in one go"
        assert min(trickle) - got[0].entered_at >= 0.4, "not read before the linger ran out"


async def test_without_linger_each_message_is_read_as_it_comes(mosquitto: Mosquitto) -> None:
    doc = flow(mosquitto)
    doc["connections"]["broker"]["batch_linger"] = 0
    async with run_flow(doc) as h:
        await connected(h)
        await publish(mosquitto, [("sensors/a", {"n": i}) for i in range(10)], gap=0.02)
        await wait_for(lambda: len(h.received("out")) == 10)
        times = [m.entered_at for m in h.received("out")]
        assert max(times) - min(times) > 0.1


@pytest.mark.usefixtures("hold_registry")
async def test_a_stalled_flow_stops_reads_from_the_broker_then_gets_everything(mosquitto: Mosquitto) -> None:
    """read_high_water: received messages waiting for the flow stay bounded (TCP pushes back)."""
    doc = flow(mosquitto, sink="sink", fmt="bytes", extra_nodes=[{"id": "sink", "type": "gate", "inbox": 10}])
    doc["connections"]["broker"]["read_high_water"] = 10
    body = b"x" * 20_000  # a 256 KiB read holds about a dozen of these
    async with run_flow(doc) as h:
        await connected(h)
        await publish(mosquitto, [("sensors/a", body + str(i).encode()) for i in range(200)])
        conn: Any = h.engine.connections["broker"]
        await wait_for(lambda: conn.reader is not None and conn.reader.paused)
        await asyncio.sleep(0.3)  # a reader that did not stop would take the rest meanwhile
        assert conn.client._queue.qsize() <= 10 + 15
        sink = h.engine.node("sink")
        assert isinstance(sink, GateNode)
        sink.gate.set()
        await wait_for(lambda: len(sink.taken) == 200)
        assert [m.payload for m in sink.taken] == [body + str(i).encode() for i in range(200)]
        assert not conn.reader.paused
