"""The shipped flow flows/ttn-sensors.yaml end to end: real Mosquitto, real influxd, real klimaflow.

Settings come from the environment exactly as in production (MQTT_URL, MQTT_QOS=1,
MQTT_CLEAN_SESSION=false, a fixed MQTT_CLIENT_ID, INFLUX_URL, INFLUX_DB, TTN_REGISTRY).
The failure tests check at-least-once delivery: a message may be written twice (identical
points overwrite), so "nothing lost" means the *distinct* points equal the messages sent.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from pathlib import Path
from typing import Any

from engine.message import Message
from engine.runtime import Engine
from engine.validation import load_and_validate
from tests.flows.ttn_load import (
    MQTT_CONNECTION,
    REGISTRY_CSV,
    SHIPPED_FLOW,
    STORE_NODE,
    EngineProcess,
    Publisher,
    count_points,
    field_types,
    flow_env,
    line_time,
    make_uplinks,
    messages,
    points,
    publish,
    running_engine,
    spooled_lines,
    wait_for_points,
    wait_until,
)
from tests.services.influxdb import InfluxDB
from tests.services.mosquitto import Mosquitto
from tests.shared_data import shared_path

N = 2000
REGISTERED = {"Demo Marktplatz", "Demo Burgwiese", "Demo Stadtwald"}


def counters(engine: Engine) -> dict[str, dict[str, Any]]:
    return {n["id"]: n["counters"] for n in engine.snapshot()["nodes"]}


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["device_id"], r["f_cnt"]): r for r in rows}


def ns_of(text: str) -> int:
    """Reference RFC 3339 (UTC, ``Z``) -> ns conversion, independent of the code under test."""
    whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return whole * 1_000_000_000 + int(text[20:-1].ljust(9, "0"))


# -- N in, N out -------------------------------------------------------------------------------


async def test_every_uplink_becomes_exactly_one_point_with_exact_values(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    uplinks = make_uplinks(N)
    async with running_engine(flow_env(mosquitto, influxdb), tmp_path / "data") as engine:
        await publish(mosquitto, messages(uplinks))
        await wait_for_points(influxdb, N)
        assert await engine.wait_idle(5)
        c = counters(engine)
        unhandled = engine.unhandled_errors

    rows = points(influxdb)
    assert len(rows) == N
    assert {r["measurement"] for r in rows} == REGISTERED
    # Every point, every tag and field, and its timestamp.
    assert by_key(rows) == {u.key: u.row() for u in uplinks}

    # Two points spelled out, so the expectations do not only come from the generator.
    assert by_key(rows)[("eui-a8404100000d3e02", 1411)] == {
        "measurement": "Demo Burgwiese",
        "time": 1715701880915176456,  # received_at 2024-05-14T15:51:20.915176456Z
        "application": "klimadaten-bad-belzig",
        "dev_eui": "A8404100000D3E02",
        "device_id": "eui-a8404100000d3e02",
        "land_use": "Wiese/Weide",
        "location": "Bad Belzig",
        "registered": "true",
        "site": "Demo Burgwiese",
        "soil_type": "Lehm",
        "Bat": 3.238,
        "TempC_DS18B20": 0.2,
        "conduct_SOIL": 658.0,
        "temp_SOIL": 25.74,
        "water_SOIL": 10.42,
        "f_port": 2,
        "f_cnt": 1411,
        "rssi": -94.0,
        "snr": 6.0,
        "gateway_count": 1,
        "spreading_factor": 11,
        "frequency": 868500000,
        "latitude": 52.13957,
        "longitude": 12.58644,
    }
    assert b'"received_at": "2024-05-14T15:51:20.915176456Z"' in uplinks[1234].payload
    first = by_key(rows)[("eui-a8404100000d3e01", 1000)]
    assert (first["time"], first["TempC_DS18B20"], first["temp_SOIL"], first["water_SOIL"]) == (
        1715677200569498830,
        -10.0,
        -5.0,
        0.0,
    )

    # Decoder numbers are floats; frame counters and radio settings integers (no type conflicts later).
    assert field_types(influxdb, "Demo Stadtwald") == {
        "Bat": "float",
        "TempC_DS18B20": "float",
        "conduct_SOIL": "float",
        "f_cnt": "integer",
        "f_port": "integer",
        "frequency": "integer",
        "gateway_count": "integer",
        "latitude": "float",
        "longitude": "float",
        "rssi": "float",
        "snr": "float",
        "spreading_factor": "integer",
        "temp_SOIL": "float",
        "water_SOIL": "float",
    }
    assert c["ttn-uplinks"]["sent"] == N
    assert c["ttn-decode"]["errors"] == 0
    assert c["ttn-registry"]["errors"] == 0
    assert c["ttn-store"]["received"] == N
    assert c["ttn-store"]["errors"] == 0
    assert c["ttn-errors"]["received"] == 0
    assert unhandled == 0


# -- the shared samples and real uplinks ---------------------------------------------------------


def _sample_messages() -> tuple[list[tuple[str, bytes]], dict[str, bytes]]:
    """(topic, payload) of every sample in manifest order, and the payloads by file name."""
    base = shared_path("ttn", "messages")
    manifest = json.loads((base / "manifest.json").read_text(encoding="utf-8"))
    out: list[tuple[str, bytes]] = []
    by_name: dict[str, bytes] = {}
    for sample in manifest["samples"]:
        data = (base.parent / sample["file"]).read_bytes()
        by_name[Path(sample["file"]).name] = data
        out.append((sample["topic"], data))
    return out, by_name


def _storage_records(name: str) -> list[tuple[str, bytes]]:
    """Real Storage Integration records (``{"result": {...}}``), each as the MQTT message of its device."""
    records = json.loads(shared_path("ttn", "real", name).read_text(encoding="utf-8"))
    out = []
    for rec in records:
        ids = rec["result"]["end_device_ids"]
        topic = f"v3/{ids['application_ids']['application_id']}@ttn/devices/{ids['device_id']}/up"
        out.append((topic, json.dumps(rec).encode()))
    return out


async def test_shared_samples_real_uplinks_and_bad_messages(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    samples, by_name = _sample_messages()
    real_lse01 = _storage_records("humidr_lse01_storage_integration_41_uplinks.json")
    real_lgt92 = _storage_records("humidr_lgt92_no_decoded_payload_3_uplinks.json")
    # A wildcard subscription (v3/+/devices/+/#) would bring joins and downlink events in on
    # the uplink path; the shipped flow must keep them out of InfluxDB either way.
    up_topic = "v3/klimadaten-bad-belzig@ttn/devices/{}/up"
    events_on_up = [
        (up_topic.format("eui-a840413e61878cad"), by_name["join_lse01.json"]),
        (up_topic.format("eui-2cf7f1c044300015"), by_name["down_ack_s2120.json"]),
    ]
    before, after = make_uplinks(100), make_uplinks(100, start=100)
    sequence = [
        *messages(before[:50]),
        *samples,
        *messages(before[50:]),
        *real_lse01[:20],
        *real_lgt92,
        *events_on_up,
        *real_lse01[20:],
        *messages(after),
    ]
    up_published = sum(1 for topic, _ in sequence if topic.endswith("/up"))
    assert up_published == len(sequence) - 2  # the join and down/ack samples on their own topics

    async with running_engine(flow_env(mosquitto, influxdb), tmp_path / "data") as engine:
        errors: list[dict[str, Any]] = []
        engine.subscribe(lambda event: errors.append(event["error"]) if event["kind"] == "error" else None)
        await publish(mosquitto, sequence)
        await wait_for_points(influxdb, 200 + 5 + 41)
        errors_node: Any = engine.node("ttn-errors")
        events_node: Any = engine.node("ttn-events")
        await wait_until(lambda: len(errors_node.recent) >= 5 and len(events_node.recent) >= 2, 10, "errors")
        assert await engine.wait_idle(5)
        error_log = list(errors_node.recent)
        event_log = list(events_node.recent)
        c = counters(engine)
        unhandled = engine.unhandled_errors

    rows = points(influxdb)
    registered = [r for r in rows if r["measurement"] in REGISTERED]
    ttn = {(r["device_id"], r["time"]): r for r in rows if r["measurement"] == "ttn"}
    assert len(rows) == 246
    # The generated uplinks around the bad messages are all there, unaffected.
    assert by_key(registered) == {u.key: u.row() for u in before + after}

    # LSE01 with the Device Repository formatter: the exact normalised reading.
    assert ttn[("eui-a84041edd184a0c0", 1715678467569498830)] == {
        "measurement": "ttn",
        "time": 1715678467569498830,
        "application": "klimadaten-bad-belzig",
        "dev_eui": "A84041EDD184A0C0",
        "device_id": "eui-a84041edd184a0c0",
        "registered": "false",
        "Bat": 3.625,
        "TempC_DS18B20": 24.1,
        "conduct_SOIL": 28200.0,
        "temp_SOIL": 24.59,
        "water_SOIL": 19.57,
        "f_port": 2,
        "f_cnt": 1432,
        "rssi": -97.0,
        "snr": 6.5,
        "gateway_count": 1,
        "spreading_factor": 9,
        "frequency": 867500000,
    }
    # Dragino's own formatter: same sensor type, so the same field names (BatV -> Bat ...).
    assert ttn[("eui-a84041b081878ca7", 1718888564434842631)] == {
        "measurement": "ttn",
        "time": 1718888564434842631,
        "application": "klimadaten-bad-belzig",
        "dev_eui": "A84041B081878CA7",
        "device_id": "eui-a84041b081878ca7",
        "registered": "false",
        "Bat": 3.412,
        "Mod": 0.0,
        "Node_type": "LSE01",
        "TempC_DS18B20": 0.0,
        "conduct_SOIL": 42.0,
        "i_flag": 0.0,
        "s_flag": 1.0,
        "temp_SOIL": 18.37,
        "water_SOIL": 6.15,
        "f_port": 2,
        "f_cnt": 377,
        "rssi": -101.0,
        "snr": 2.0,
        "gateway_count": 1,
        "spreading_factor": 9,
        "frequency": 867700000,
    }
    assert "BatV" not in field_types(influxdb, "ttn")
    assert "temp_DS18B20" not in field_types(influxdb, "ttn")
    winter = ttn[("eui-a84041f35187c320", ns_of("2024-01-17T06:40:12.442018419Z"))]
    assert (winter["TempC_DS18B20"], winter["temp_SOIL"], winter["f_cnt"]) == (-1.5, -1.49, 2218)
    weather = ttn[("eui-2cf7f1c044300015", ns_of("2024-01-17T06:45:03.581386712Z"))]
    assert (weather["air_temperature"], weather["barometric_pressure"], weather["f_cnt"]) == (
        -3.4,
        101320.0,
        5120,
    )
    assert ("eui-2cf7f1c044300015", ns_of("2024-01-16T07:00:01.491456958Z")) in ttn

    # The 41 real uplinks (units inside the strings, f_cnt omitted when 0).
    real = sorted(
        (r for r in ttn.values() if r["device_id"] == "eui-a8404194a1875ff3"), key=lambda r: r["time"]
    )
    assert [r["time"] for r in real] == sorted(
        ns_of(json.loads(p)["result"]["received_at"]) for _, p in real_lse01
    )
    assert [r.get("f_cnt") for r in real] == [None, 1, *range(86, 125)]
    assert real[0] == {
        "measurement": "ttn",
        "time": 1687271672869542824,  # 2023-06-20T14:34:32.869542824Z
        "application": "soulmbengue-app-lorawansrv-1",
        "dev_eui": "A8404194A1875FF3",
        "device_id": "eui-a8404194a1875ff3",
        "registered": "false",
        "Bat": 3.384,
        "TempC_DS18B20": 0.0,
        "conduct_SOIL": 0.0,
        "temp_SOIL": 30.11,
        "water_SOIL": 0.0,
        "f_port": 2,
        "rssi": -42.0,
        "snr": 5.8,
        "gateway_count": 1,
        "spreading_factor": 12,
        "frequency": 867500000,
    }
    assert sorted({r["device_id"] for r in ttn.values()}) == [
        "eui-2cf7f1c044300015",
        "eui-a8404194a1875ff3",
        "eui-a84041b081878ca7",
        "eui-a84041edd184a0c0",
        "eui-a84041f35187c320",
    ]

    # Malformed JSON and uplinks nothing can decode: on the error path, counted, not written.
    no_decoder = "uplink has no decoded_payload and no decoder is configured for device "
    assert [(e["class"], e["node"], e["message"]) for e in errors] == [
        ("DecodeError", "ttn-decode", no_decoder + "eui-8cf9572000064df7"),
        (
            "DecodeError",
            "ttn-decode",
            "TTN message is not valid JSON: Unterminated string starting at: line 33 column 9 (char 950)",
        ),
        *[("DecodeError", "ttn-decode", no_decoder + "dragino-gps-lgt-92-a840410001819394")] * 3,
    ]
    # ... and each one reached the `ttn-errors` debug node (the error log).
    assert [e["topic"] for e in error_log] == [
        "v3/klimadaten-bad-belzig@ttn/devices/eui-8cf9572000064df7/up",
        "v3/klimadaten-bad-belzig@ttn/devices/eui-a84041edd184a0c0/up",
        *["v3/soulmbengue-app-lorawansrv-1@ttn/devices/dragino-gps-lgt-92-a840410001819394/up"] * 3,
    ]
    # Joins and downlink events: never stored; arriving on /up they go to the events port.
    assert [e["topic"] for e in event_log] == [topic for topic, _ in events_on_up]
    assert c["ttn-uplinks"]["sent"] == up_published
    assert c["ttn-decode"]["errors"] == 5
    assert c["ttn-errors"]["received"] == 5
    assert c["ttn-store"]["received"] == 246
    assert c["ttn-store"]["errors"] == 0
    assert unhandled == 0


async def test_error_and_event_logs_show_the_reason(tmp_path: Path) -> None:
    """What an operator reads in the log: the error itself and the kind of event, not ``null``."""
    env = {
        "MQTT_URL": "mqtt://127.0.0.1:1",  # nothing listens: this test feeds the decoder directly
        "INFLUX_URL": "http://127.0.0.1:1",
        "TTN_REGISTRY": str(REGISTRY_CSV),
    }
    engine = Engine(load_and_validate([SHIPPED_FLOW], environ=env), data_dir=tmp_path)
    await engine.start()
    try:
        join = {"end_device_ids": {"device_id": "eui-a840413e61878cad"}, "join_accept": {}}
        await engine.runtimes["ttn-decode"].put(Message(b'{"end_device_ids": {', "v3/a@ttn/devices/x/up"))
        await engine.runtimes["ttn-decode"].put(Message(join, "v3/a@ttn/devices/eui-a840413e61878cad/join"))
        assert await engine.wait_idle(5)
        errors: Any = engine.node("ttn-errors")
        events: Any = engine.node("ttn-events")
        shown = [e["value"] for e in errors.recent]
        assert [v.get("class") if isinstance(v, dict) else v for v in shown] == ["DecodeError"]
        assert [e["value"] for e in events.recent] == ["join"]
    finally:
        await engine.stop(drain_timeout=1)


# -- failures: nothing lost ----------------------------------------------------------------------


async def test_broker_restart_mid_stream_loses_nothing(
    mosquitto_persistent: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    broker = mosquitto_persistent
    uplinks = make_uplinks(N)
    half = N // 2
    env = flow_env(broker, influxdb, client_id="klimaflow-e2e-broker-restart")
    async with running_engine(env, tmp_path / "data") as engine:
        conn: Any = engine.connections[MQTT_CONNECTION]
        async with Publisher(broker) as pub:
            await pub.publish(messages(uplinks[:half]))
            # At once: the engine is still batching the first half, nothing of it acknowledged yet.
            await asyncio.to_thread(broker.restart)
            await pub.publish(messages(uplinks[half:]))
            assert pub.reconnects >= 1
        await wait_for_points(influxdb, N, timeout=30)
        assert await engine.wait_idle(5)
        assert conn.connects == 2
        received = counters(engine)["ttn-uplinks"]["sent"]

    rows = points(influxdb)
    assert len(rows) == N  # identical points of redelivered messages overwrote each other
    assert by_key(rows) == {u.key: u.row() for u in uplinks}
    # What the broker had sent before the restart and was never acknowledged came again.
    assert received > N


async def test_influxdb_outage_is_spooled_and_replayed_in_order(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    uplinks = make_uplinks(1500)
    before, during, after = uplinks[:500], uplinks[500:1000], uplinks[1000:]
    data = tmp_path / "data"
    env = flow_env(mosquitto, influxdb, client_id="klimaflow-e2e-influx-outage")
    async with running_engine(env, data) as engine:
        store: Any = engine.node(STORE_NODE)
        async with Publisher(mosquitto) as pub:
            await pub.publish(messages(before))
            await wait_for_points(influxdb, 500)
            await asyncio.to_thread(influxdb.stop)
            down_since = time.monotonic()
            await pub.publish(messages(during), pace=0.008)  # a stream over several batches
            status = engine.runtimes[STORE_NODE]
            await wait_until(
                lambda: "InfluxDB unreachable: 500 point(s) spooled" in status.status.text,
                15,
                "500 spooled points",
            )
            # On disk in the order the messages came in, and nothing else.
            assert [line_time(line) for line in spooled_lines(data)] == [u.time_ns for u in during]
            await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - down_since)))
            await asyncio.to_thread(influxdb.start)
            await pub.publish(messages(after))
        await wait_for_points(influxdb, 1500, timeout=30)
        await wait_until(lambda: spooled_lines(data) == [], 10, "an empty spool")
        stats = dict(store.stats)

    rows = points(influxdb, where="ORDER BY time")
    assert len(rows) == 1500
    assert by_key(rows) == {u.key: u.row() for u in uplinks}
    for device in ("eui-a8404100000d3e01", "eui-a8404100000d3e02", "eui-a8404100000d3e03"):
        series = [r for r in rows if r["device_id"] == device]
        assert [r["f_cnt"] for r in series] == sorted(
            u.f_cnt for u in uplinks if u.device.device_id == device
        )
    assert stats["spooled"] >= 500  # newer batches queue behind the spool until it is replayed
    assert stats["replayed"] == stats["spooled"]
    assert stats["written"] == 1500  # each point written once
    assert stats["rejected"] == 0


async def test_engine_killed_while_influxdb_down_recovers_spool_and_unacked_messages(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    uplinks = make_uplinks(1500)
    first, rest = uplinks[:300], uplinks[300:]
    data = tmp_path / "data"
    env = flow_env(mosquitto, influxdb, client_id="klimaflow-e2e-killed")
    engine = EngineProcess(env, data, tmp_path / "engine.log")
    try:
        engine.start()
        await engine.wait_subscribed()
        async with Publisher(mosquitto) as pub:
            await pub.publish(messages(first))
            await wait_for_points(influxdb, 300)
            await asyncio.to_thread(influxdb.stop)
            stream = asyncio.create_task(pub.publish(messages(rest), pace=0.004))
            # Kill while messages are in flight (received, not yet spooled or acknowledged): not
            # in the few ms after a spool write acknowledged everything read so far.
            await wait_until(
                lambda: len(spooled_lines(data)) >= 200 and engine.received_publishes() > engine.acks_sent(),
                15,
                "spooled points and messages in flight",
            )
            engine.kill()
            spooled_at_kill = len(spooled_lines(data))
            in_flight = engine.received_publishes() - engine.acks_sent()
            await stream  # the rest waits at the broker for the persistent session
        assert spooled_at_kill >= 200
        assert in_flight > 0, "every received message was acknowledged: nothing was in flight"

        await asyncio.to_thread(influxdb.start)
        assert count_points(influxdb) == 300  # the spooled points exist only on disk so far
        engine.start()
        await wait_for_points(influxdb, 1500, timeout=30)
        await wait_until(lambda: spooled_lines(data) == [], 10, "an empty spool")
        assert engine.received_publishes(redelivered=True) >= in_flight
        assert "replaying them first" in engine.log_text()
        assert engine.terminate() == 0
    finally:
        engine.cleanup()

    rows = points(influxdb)
    assert len(rows) == 1500
    assert by_key(rows) == {u.key: u.row() for u in uplinks}
