"""Live reload under load: the shipped TTN flow is edited ten times (plus one invalid edit) while a
publisher sends QoS 1 uplinks at 2,000 msg/s; afterwards every published uplink is in InfluxDB.

Real Mosquitto, real influxd, the real Supervisor watching the flow directory (edits are
saved the way editors save: a hidden temporary file renamed over the flow file).
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from ruamel.yaml import YAML

from engine.supervisor import ReloadResult, Supervisor
from tests.flows.ttn_load import (
    DB,
    MQTT_CONNECTION,
    SHIPPED_FLOW,
    STORE_NODE,
    Uplink,
    count_points,
    flow_env,
    make_uplinks,
    wait_until,
)
from tests.services.influxdb import InfluxDB
from tests.services.mosquitto import Mosquitto

RATE = 2000  # messages per second
CAPACITY = 30_000  # uplinks prepared; the publisher stops when the edits are done


class RatePublisher(threading.Thread):
    """Publishes QoS 1 at a steady rate from its own thread (paho), until stopped.

    Pipelined (many PUBACKs outstanding) so the rate does not depend on round trips;
    :meth:`finish` waits until the broker acknowledged every message sent.
    """

    def __init__(self, port: int, uplinks: list[Uplink], rate: float) -> None:
        super().__init__(name="rate-publisher", daemon=True)
        self.uplinks = uplinks
        self.rate = rate
        self.sent = 0
        self.stopping = threading.Event()
        self.infos: list[paho.MQTTMessageInfo] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="live-reload-publisher")
        self.client.max_inflight_messages_set(2000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stopping.is_set() and self.sent < len(self.uplinks):
            due = min(len(self.uplinks), int((time.monotonic() - t0) * self.rate) + 1)
            while self.sent < due:
                u = self.uplinks[self.sent]
                self.infos.append(self.client.publish(u.topic, u.payload, qos=1))
                self.sent += 1
            time.sleep(0.005)

    def finish(self, timeout: float = 20.0) -> int:
        self.stopping.set()
        self.join(timeout)
        for info in self.infos:
            info.wait_for_publish(timeout)
            assert info.is_published()
        self.client.loop_stop()
        self.client.disconnect()
        return self.sent


class FlowEditor:
    """Edits the flow file structurally (ruamel round trip) and saves it atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.yaml = YAML()
        self.yaml.preserve_quotes = True
        self.doc: Any = self.yaml.load(SHIPPED_FLOW.read_text(encoding="utf-8"))
        self.save()

    def node(self, node_id: str) -> Any:
        return next(n for n in self.doc["nodes"] if n["id"] == node_id)

    def save(self) -> None:
        buf = io.StringIO()
        self.yaml.dump(self.doc, buf)
        self.write(buf.getvalue())

    def write(self, text: str) -> None:
        tmp = self.path.parent / f".{self.path.name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)


async def test_ten_edits_under_2000_msgs_per_second_lose_nothing(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    uplinks = make_uplinks(CAPACITY)
    flows = tmp_path / "flows"
    flows.mkdir()
    editor = FlowEditor(flows / "ttn-sensors.yaml")
    env = flow_env(mosquitto, influxdb, client_id="klimaflow-live-reload")
    sup = Supervisor([flows], data_dir=tmp_path / "data", drain_timeout=10.0, environ=env)
    await sup.start()
    stop_watch = asyncio.Event()
    watch = asyncio.create_task(sup.watch(debounce=0.05, stop=stop_watch, settle=0.1))
    publisher: RatePublisher | None = None
    try:
        assert sup.engine is not None
        engine = sup.engine
        conn: Any = engine.connections[MQTT_CONNECTION]
        await wait_until(lambda: conn.state == "connected", 10, "the MQTT connection")
        await asyncio.sleep(0.3)  # the watch is set up
        publisher = RatePublisher(mosquitto.port, uplinks, RATE)
        publisher.start()
        await asyncio.sleep(0.5)

        async def edit(change: Callable[[], None], ok: bool = True) -> ReloadResult:
            before = len(sup.history)
            change()
            await wait_until(lambda: len(sup.history) > before, 30, "the reload")
            result = sup.history[-1]
            assert result.ok is ok, result.to_dict()
            assert (result.drain_timeout_hit, result.undrained) == (False, 0), result.to_dict()
            await asyncio.sleep(0.3)  # traffic flows through the new flow for a while
            return result

        def add_tagger() -> None:
            editor.node("ttn-registry")["wires"]["out"] = ["tagger"]
            editor.doc["nodes"].append(
                {
                    "id": "tagger",
                    "type": "change",
                    "rules": [{"set": "payload.tags.pipeline", "to": "r1"}],
                    "wires": {"out": ["ttn-store"], "error": ["ttn-errors"]},
                }
            )
            editor.save()

        def change_tagger() -> None:
            editor.node("tagger")["rules"][0]["to"] = "r2"
            editor.save()

        def batch_size(n: int) -> Callable[[], None]:
            def change() -> None:
                editor.node(STORE_NODE)["batch_size"] = n
                editor.save()

            return change

        def add_tap() -> None:
            editor.node("ttn-decode")["wires"]["out"] = ["ttn-registry", "tap"]
            editor.doc["nodes"].append(
                {"id": "tap", "type": "debug", "name": "readings tap", "log": False, "level": "debug"}
            )
            editor.save()

        def invalid() -> None:
            buf = io.StringIO()
            editor.yaml.dump(editor.doc, buf)
            text = buf.getvalue()
            assert text.count("type: influxdb-out\n") == 1
            editor.write(text.replace("type: influxdb-out\n", "type: influxdb-outt\n"))  # a typo

        def remove_tagger() -> None:
            editor.node("ttn-registry")["wires"]["out"] = [STORE_NODE]
            editor.doc["nodes"] = [n for n in editor.doc["nodes"] if n["id"] != "tagger"]
            editor.save()

        def set_field(node_id: str, key: str, value: Any) -> Callable[[], None]:
            def change() -> None:
                editor.node(node_id)[key] = value
                editor.save()

            return change

        def remove_tap() -> None:
            editor.node("ttn-decode")["wires"]["out"] = ["ttn-registry"]
            editor.doc["nodes"] = [n for n in editor.doc["nodes"] if n["id"] != "tap"]
            editor.save()

        results = [await edit(add_tagger)]
        results.append(await edit(change_tagger))
        results.append(await edit(batch_size(500)))
        results.append(await edit(add_tap))

        store_rt = engine.runtimes[STORE_NODE]
        revision = sup.revision
        refused = await edit(invalid, ok=False)
        assert refused.message == "refused: the running flows stay as they are"
        assert [e["message"] for e in refused.to_dict()["errors"]] == [
            "unknown node type 'influxdb-outt'; did you mean 'influxdb-out'?"
        ]
        assert sup.revision == revision
        assert engine.runtimes[STORE_NODE] is store_rt
        received = store_rt.counters.received
        await asyncio.sleep(0.3)
        assert store_rt.counters.received > received  # the old flow keeps ingesting

        results.append(await edit(remove_tagger))
        results.append(await edit(set_field("ttn-decode", "measurement", "ttn-unregistered")))
        results.append(await edit(set_field("ttn-registry", "check_interval", 2)))
        results.append(await edit(set_field("ttn-uplinks", "name", "TTN uplinks (edited)")))
        results.append(await edit(batch_size(2000)))
        results.append(await edit(remove_tap))

        published = publisher.finish()
        publisher = None
        assert published >= 2 * RATE  # the edits happened under load

        diffs = [r.diff for r in results]
        assert [(d.added, d.removed, d.changed, d.rewired) for d in diffs if d is not None] == [
            (("tagger",), (), (), ("ttn-registry",)),
            ((), (), ("tagger",), ()),
            ((), (), (STORE_NODE,), ()),
            (("tap",), (), (), ("ttn-decode",)),
            ((), ("tagger",), (), ("ttn-registry",)),
            ((), (), ("ttn-decode",), ()),
            ((), (), ("ttn-registry",), ()),
            ((), (), ("ttn-uplinks",), ()),
            ((), (), (STORE_NODE,), ()),
            ((), ("tap",), (), ("ttn-decode",)),
        ]
        assert len(sup.history) == 1 + 11  # start, ten edits, the refused one: one reload per save

        expected = {u.key for u in uplinks[:published]}
        await wait_until(lambda: count_points(influxdb) >= published, 30, f"{published} points")
        assert await engine.wait_idle(5)
        # The MQTT session was never interrupted: same connection object, connected once,
        # and no publish arrived without a subscriber (the edited mqtt-in was handed over).
        assert engine.connections[MQTT_CONNECTION] is conn
        assert (conn.connects, conn.unrouted) == (1, 0)
        assert engine.unhandled_errors == 0
        assert engine.runtimes["ttn-errors"].counters.received == 0
    finally:
        if publisher is not None:
            publisher.finish()
        stop_watch.set()
        await asyncio.wait_for(watch, 5)
        await sup.stop()

    rows = influxdb.query('SELECT "f_cnt" FROM /.*/ GROUP BY "device_id"', DB)
    seen = [(s["tags"]["device_id"], v[1]) for s in rows for v in s["values"]]
    assert set(seen) == expected  # every published uplink is in InfluxDB
    assert len(seen) == published  # ... exactly once
