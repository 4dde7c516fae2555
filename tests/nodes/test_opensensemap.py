"""opensensemap-measurements on the documented API answers (shared apidoc examples and the
synthetic Bad Belzig box), in a real Engine."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.message import Message
from nodes.opensensemap import OpenSenseMapNode
from tests.flowkit import FlowHarness, run_flow
from tests.shared_data import shared_path

RABEN = "6332e3ca1b5cff001b7f1abe"
SOIL = "6332e3ca1b5cff001b7f1ac7"


def load(name: str) -> Any:
    return json.loads(shared_path("opensensemap", name).read_text(encoding="utf-8"))


def raben_box() -> dict[str, Any]:
    box: dict[str, Any] = load(f"SYNTHETIC_box_bad_belzig_{RABEN}.json")
    return box


FLOW = {
    "id": "f",
    "nodes": [
        {
            "id": "osm",
            "type": "opensensemap-measurements",
            "wires": {"out": ["out"], "sensors": ["sensors"], "error": ["bad"]},
        },
        {"id": "out", "type": "collect"},
        {"id": "sensors", "type": "collect"},
        {"id": "bad", "type": "collect"},
    ],
}


async def settle(h: FlowHarness) -> None:
    await h.idle()


def soil_context() -> dict[str, str]:
    return {
        "box_id": RABEN,
        "box_name": "Naturparkzentrum Raben",
        "sensor_id": SOIL,
        "phenomenon": "Bodenfeuchte",
        "unit": "%",
        "sensor_type": "SMT50",
    }


#: 2024-06-20T14:00:00Z: "now" for the synthetic data (the API serves at most a month back).
NOW = 1718892000.0


async def test_a_box_yields_each_sensors_new_last_measurement_and_a_fetch_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(OpenSenseMapNode, "_now", staticmethod(lambda: NOW))
    async with run_flow(FLOW, data_dir=tmp_path) as h:
        await h.send("osm", raben_box())
        await settle(h)
        [readings] = h.payloads("out")
        requests = list(h.received("sensors"))
        # The same answer again: nothing is new.
        await h.send("osm", raben_box())
        await settle(h)
        assert len(h.payloads("out")) == 1
        assert len(h.received("sensors")) == 8
        # One sensor measured again.
        box = raben_box()
        box["sensors"][7]["lastMeasurement"] = {"value": "11.30", "createdAt": "2024-06-20T13:09:38.500Z"}
        await h.send("osm", box)
        await settle(h)
        assert h.received("bad") == []

    # 8 of 9 sensors have a lastMeasurement (Bodentemperatur has none).
    assert len(readings) == 8
    assert readings[0] == {
        "measurement": "opensensemap",
        "tags": {
            "box_id": RABEN,
            "box_name": "Naturparkzentrum Raben",
            "sensor_id": "6332e3ca1b5cff001b7f1ac0",
            "phenomenon": "Temperatur",
            "unit": "°C",
            "sensor_type": "HDC1080",
        },
        # currentLocation.coordinates is [lon, lat]
        "fields": {"value": 21.72, "lon": 12.5316, "lat": 52.0707},
        "time": 1718888691112000000,  # 2024-06-20T13:04:51.112Z
    }
    assert [(r["tags"]["phenomenon"], r["fields"]["value"]) for r in readings] == [
        ("Temperatur", 21.72),
        ("rel. Luftfeuchte", 48.3),
        ("Luftdruck", 1012.44),
        ("Beleuchtungsstärke", 35870.0),
        ("UV-Intensität", 412.5),
        ("PM10", 7.8),
        ("PM2.5", 4.1),
        ("Bodenfeuchte", 11.36),
    ]
    assert len(requests) == 8
    soil = requests[7]
    assert soil.payload == {**soil_context(), "from_date": None}
    assert soil.meta["opensensemap"] == soil_context()

    [_first, newer] = h.payloads("out")
    assert [(r["tags"]["sensor_id"], r["fields"]["value"], r["time"]) for r in newer] == [
        (SOIL, 11.3, 1718888978500000000)
    ]
    # The fetch asks for everything since the last measurement seen before.
    assert h.received("sensors")[8].payload == {**soil_context(), "from_date": "2024-06-20T13:04:51.112Z"}


async def test_from_date_reaches_back_at_most_a_month(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(OpenSenseMapNode, "_now", staticmethod(lambda: NOW + 40 * 86400))
    async with run_flow(FLOW, data_dir=tmp_path) as h:
        await h.send("osm", raben_box())
        box = raben_box()
        box["sensors"][7]["lastMeasurement"] = {"value": "11.30", "createdAt": "2024-07-30T13:00:00Z"}
        await h.send("osm", box)
        await settle(h)
    # 40 days after 2024-06-20T14:00Z, less 31 days
    assert h.received("sensors")[8].payload["from_date"] == "2024-06-29T14:00:00.000Z"


async def test_the_apidoc_box_example(tmp_path: Path) -> None:
    async with run_flow(FLOW, data_dir=tmp_path) as h:
        await h.send("osm", load("box_GET_boxes_boxId_apidoc_example.json"))
        await settle(h)
    [readings] = h.payloads("out")
    assert [(r["tags"]["phenomenon"], r["tags"]["unit"], r["fields"]["value"]) for r in readings] == [
        ("UV-Intensität", "μW/cm²", 0.0),
        ("Beleuchtungsstärke", "lx", 0.0),
        ("Luftdruck", "hPa", 1019.21),
        ("rel. Luftfeuchte", "%", 99.38),
        ("Temperatur", "°C", 0.21),
        ("Wifi-Stärke", "dBm", -66.0),
        ("Eingangsspannung", "V", 2.73),
    ]
    assert {(r["fields"]["lon"], r["fields"]["lat"], r["time"]) for r in readings} == {
        (7.64568, 51.962372, 1478899321675000000)  # 2016-11-11T21:22:01.675Z
    }
    assert readings[0]["tags"]["box_name"] == "Oststr/Mauritzsteinpfad"


async def test_measurement_list_new_ones_only_and_bad_records_rejected(tmp_path: Path) -> None:
    records = load(f"SYNTHETIC_measurements_bad_belzig_Bodenfeuchte_{SOIL}.json")
    url = f"https://api.opensensemap.org/boxes/{RABEN}/data/{SOIL}"
    meta: dict[str, Any] = {"opensensemap": soil_context(), "http_request": {"url": url}}
    bad = [
        {"location": [12.5316, 52.0707], "createdAt": "2024-06-20T13:20:00.000Z", "value": "n/a"},
        {"location": [12.5316, 52.0707], "value": "11.2"},
        {"location": [52.0707], "createdAt": "2024-06-20T13:21:00.000Z", "value": "11.2"},
        {"location": [12.5316, 52.0707], "createdAt": "2024-06-20T13:22:00.000Z", "value": "11.25"},
    ]
    async with run_flow(FLOW, data_dir=tmp_path) as h:
        await h.send("osm", records, **meta)
        await settle(h)
        await h.send("osm", records, **meta)  # fetched again: nothing new
        await settle(h)
        await h.send("osm", bad + records, **meta)
        await settle(h)
    first, third = h.payloads("out")
    assert [(r["fields"]["value"], r["time"]) for r in first] == [
        (11.45, 1718887541660000000),
        (11.41, 1718887829015000000),
        (11.41, 1718888116377000000),
        (11.38, 1718888403904000000),
        (11.36, 1718888691112000000),
    ]
    assert first[0]["tags"] == soil_context()
    assert first[0]["fields"] == {"value": 11.45, "lon": 12.5316, "lat": 52.0707}
    assert [(r["fields"]["value"], r["time"]) for r in third] == [(11.25, 1718889720000000000)]
    errors = [m.meta["error"] for m in h.received("bad")]
    assert [(e["class"], e["message"]) for e in errors] == [
        ("RecordRejected", f"{url}:1: value is not a number: 'n/a'"),
        ("RecordRejected", f"{url}:2: createdAt is not a time: None"),
        ("RecordRejected", f"{url}:3: location is not [lon, lat]: [52.0707]"),
    ]


async def test_unusable_answers_are_message_errors(tmp_path: Path) -> None:
    async with run_flow(FLOW, data_dir=tmp_path) as h:
        await h.send("osm", [{"createdAt": "2024-06-20T13:04:51.112Z", "value": "1"}])
        await h.send("osm", "createdAt,value\n")
        await h.send("osm", {"sensors": []})
        box = raben_box()
        box["sensors"][0]["lastMeasurement"]["value"] = ""
        await h.send("osm", box)
        deadline = time.monotonic() + 5
        while len(h.received("bad")) < 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    messages: list[Message] = h.received("bad")
    assert [m.meta["error"]["message"] for m in messages] == [
        "a measurement list needs meta.opensensemap naming the sensor "
        "(the `sensors` output of an opensensemap-measurements node sets it)",
        "expected an openSenseMap box (an object with `sensors`) or a measurement list, got str",
        "the box has no `_id`",
        f"openSenseMap box {RABEN}:1: sensor 6332e3ca1b5cff001b7f1ac0 (Temperatur): value is not a number: ''",
    ]
    # The rest of that box still counts.
    assert len(h.payloads("out")[0]) == 7


#: The shipped flow's pair: one node for box answers, one for measurement lists.
PAIR = {
    "id": "f",
    "nodes": [
        {
            "id": "box",
            "type": "opensensemap-measurements",
            "wires": {"out": ["last"], "sensors": ["sensors"]},
        },
        {"id": "data", "type": "opensensemap-measurements", "wires": {"out": ["out"]}},
        {"id": "last", "type": "collect"},
        {"id": "sensors", "type": "collect"},
        {"id": "out", "type": "collect"},
    ],
}


async def test_a_restart_continues_where_the_last_run_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(OpenSenseMapNode, "_now", staticmethod(lambda: NOW))
    records = load(f"SYNTHETIC_measurements_bad_belzig_Bodenfeuchte_{SOIL}.json")
    meta: dict[str, Any] = {"opensensemap": soil_context()}
    async with run_flow(PAIR, data_dir=tmp_path) as h:
        await h.send("box", raben_box())
        await h.send("data", records, **meta)
        await settle(h)
        assert len(h.payloads("out")[0]) == 5
    saved = json.loads((tmp_path / "nodes" / "box" / "last.json").read_text(encoding="utf-8"))
    assert saved[SOIL] == "2024-06-20T13:04:51.112Z"
    assert len(saved) == 8
    saved = json.loads((tmp_path / "nodes" / "data" / "last.json").read_text(encoding="utf-8"))
    assert saved == {SOIL: "2024-06-20T13:04:51.112Z"}

    newer = {"location": [12.5316, 52.0707], "createdAt": "2024-06-20T13:09:38.500Z", "value": "11.30"}
    box = raben_box()
    box["sensors"][7]["lastMeasurement"] = {"value": "11.30", "createdAt": newer["createdAt"]}
    async with run_flow(PAIR, data_dir=tmp_path) as h:
        await h.send("box", raben_box())  # what the last run saw: nothing new
        await h.send("data", records, **meta)
        await settle(h)
        assert (h.payloads("out"), h.payloads("sensors")) == ([], [])
        await h.send("box", box)
        await h.send("data", [newer, *records], **meta)
        await settle(h)
    # Only the soil sensor has news; its fetch starts at the last run's newest measurement.
    assert [p["from_date"] for p in h.payloads("sensors")] == ["2024-06-20T13:04:51.112Z"]
    assert [[r["fields"]["value"] for r in p] for p in h.payloads("out")] == [[11.3]]

    # remember: false keeps nothing on disk.
    other = tmp_path / "other"
    flow = json.loads(json.dumps(PAIR))
    flow["nodes"][1]["remember"] = False
    async with run_flow(flow, data_dir=other) as h:
        await h.send("data", records, **meta)
        await settle(h)
    assert len(h.payloads("out")) == 1
    assert not (other / "nodes" / "data" / "last.json").exists()
