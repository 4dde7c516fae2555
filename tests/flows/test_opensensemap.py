"""The shipped flow flows/opensensemap.yaml end to end: a local server answering as the
documented openSenseMap API does (serving the shared example files), the real Engine, and a
real InfluxDB."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.runtime import Engine
from engine.validation import load_and_validate
from grafana_provisioning.macros import expand_influxql
from grafana_provisioning.provision import generate
from nodes.opensensemap import OpenSenseMapNode
from tests.nodes.test_http import serve
from tests.services.influxdb import InfluxDB
from tests.shared_data import REPO, shared_path

FLOW = REPO / "flows" / "opensensemap.yaml"
DB = "klimadaten_osm"
RABEN = "6332e3ca1b5cff001b7f1abe"
SOIL = "6332e3ca1b5cff001b7f1ac7"
APIDOC_BOX = "57000b8745fd40c8196ad04c"
UNKNOWN_BOX = "5a0000000000000000000000"
#: 2024-06-20T14:00:00Z, "now" for the synthetic data (the flow asks at most a month back).
NOW = 1718892000.0


def load(name: str) -> Any:
    return json.loads(shared_path("opensensemap", name).read_text(encoding="utf-8"))


class FakeOpenSenseMap:
    """``GET /boxes/:id`` and ``GET /boxes/:id/data/:sensorId`` as the API documents them.

    Measurements of a sensor without a shared example file are its ``lastMeasurement``
    (at the box's position). ``from-date`` is inclusive; answers are newest first.
    """

    def __init__(self) -> None:
        self.boxes: dict[str, dict[str, Any]] = {
            RABEN: load(f"SYNTHETIC_box_bad_belzig_{RABEN}.json"),
            APIDOC_BOX: load("box_GET_boxes_boxId_apidoc_example.json"),
        }
        self.data: dict[str, list[dict[str, Any]]] = {
            SOIL: load(f"SYNTHETIC_measurements_bad_belzig_Bodenfeuchte_{SOIL}.json")
        }
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.app = Starlette(
            routes=[
                Route("/boxes/{box_id}", self.box),
                Route("/boxes/{box_id}/data/{sensor_id}", self.measurements),
            ]
        )

    def _log(self, request: Request) -> None:
        self.requests.append((request.url.path, dict(request.query_params)))

    def paths(self, kind: str) -> list[str]:
        return [p for p, _q in self.requests if ("/data/" in p) == (kind == "data")]

    async def box(self, request: Request) -> Response:
        self._log(request)
        box = self.boxes.get(request.path_params["box_id"])
        if box is None:
            return JSONResponse({"code": "NotFound", "message": "Box not found"}, status_code=404)
        return JSONResponse(box)

    async def measurements(self, request: Request) -> Response:
        self._log(request)
        box = self.boxes.get(request.path_params["box_id"])
        sensor_id = request.path_params["sensor_id"]
        sensor = next((s for s in box["sensors"] if s["_id"] == sensor_id), None) if box else None
        if box is None or sensor is None:
            return JSONResponse({"code": "NotFound", "message": "Sensor not found"}, status_code=404)
        if sensor_id in self.data:
            records = copy.deepcopy(self.data[sensor_id])
        elif "lastMeasurement" in sensor:
            last = sensor["lastMeasurement"]
            position = box["currentLocation"]["coordinates"]
            records = [{"location": position, "createdAt": last["createdAt"], "value": last["value"]}]
        else:
            records = []
        since = request.query_params.get("from-date")
        if since:
            records = [r for r in records if r["createdAt"] >= since]
        records.sort(key=lambda r: r["createdAt"], reverse=True)
        return JSONResponse(records)


@pytest.fixture
async def fake_api() -> AsyncIterator[tuple[FakeOpenSenseMap, str]]:
    fake = FakeOpenSenseMap()
    async with serve(fake.app) as url:
        yield fake, url


async def wait_until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def count(influx: InfluxDB) -> int:
    series = influx.query('SELECT count("value") FROM "opensensemap"', DB)
    return int(series[0]["values"][0][1]) if series else 0


async def test_poll_stores_every_new_measurement_once(
    fake_api: tuple[FakeOpenSenseMap, str],
    influxdb: InfluxDB,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = fake_api
    monkeypatch.setattr(OpenSenseMapNode, "_now", staticmethod(lambda: NOW))
    influxdb.create_database(DB)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(
        json.dumps(
            [
                {"box_id": RABEN, "box_name": "Naturparkzentrum Raben"},
                {"box_id": APIDOC_BOX, "box_name": "Oststr/Mauritzsteinpfad"},
                {"box_id": UNKNOWN_BOX, "box_name": "gone"},
            ]
        ),
        encoding="utf-8",
    )
    env = {
        "OPENSENSEMAP_URL": url,
        "OPENSENSEMAP_BOXES": str(boxes),
        "OPENSENSEMAP_INTERVAL": "1h",
        "INFLUX_URL": influxdb.url,
        "INFLUX_DB": DB,
    }
    engine = Engine(load_and_validate([FLOW], environ=env), data_dir=tmp_path / "data", drain_timeout=5)
    await engine.start()
    try:
        # Poll 1 (fired once at start): 5 soil measurements + 7 other Raben sensors + 7 apidoc sensors.
        await wait_until(lambda: count(influxdb) == 19, "19 points")
        assert await engine.wait_idle(5)
        assert len(fake.paths("box")) == 3
        assert len(fake.paths("data")) == 15
        assert (f"/boxes/{RABEN}/data/{SOIL}", {"format": "json"}) in fake.requests  # no from-date: 48 h
        store = engine.runtimes["osm-store"].counters
        stored_messages = store.received
        get_box = engine.runtimes["osm-get-box"].counters
        assert get_box.errors == 1  # the unknown box: 404, reported, the others still stored

        # Poll 2: nothing new anywhere, so no measurements are fetched and nothing is stored.
        await engine.node("osm-poll").trigger()
        await wait_until(lambda: len(fake.paths("box")) == 6, "the second poll")
        assert await engine.wait_idle(5)
        assert len(fake.paths("data")) == 15
        assert store.received == stored_messages
        assert count(influxdb) == 19

        # Poll 3: the soil sensor measured again; only that measurement is fetched and stored.
        new = {"location": [12.5316, 52.0707], "createdAt": "2024-06-20T13:09:38.500Z", "value": "11.30"}
        fake.data[SOIL].insert(0, new)
        fake.boxes[RABEN]["sensors"][7]["lastMeasurement"] = {"value": "11.30", "createdAt": new["createdAt"]}
        await engine.node("osm-poll").trigger()
        await wait_until(lambda: count(influxdb) == 20, "the 20th point")
        assert await engine.wait_idle(5)
        data_requests = [r for r in fake.requests if "/data/" in r[0]]
        assert data_requests[-1] == (
            f"/boxes/{RABEN}/data/{SOIL}",
            {"from-date": "2024-06-20T13:04:51.112Z", "format": "json"},
        )
        assert len(fake.paths("data")) == 16
        assert engine.unhandled_errors == 0
    finally:
        await engine.stop()

    rows = influxdb.rows(f"SELECT * FROM \"opensensemap\" WHERE sensor_id = '{SOIL}'", DB)
    assert [(r["time"], r["value"]) for r in rows] == [
        (1718887541660000000, 11.45),
        (1718887829015000000, 11.41),
        (1718888116377000000, 11.41),
        (1718888403904000000, 11.38),
        (1718888691112000000, 11.36),
        (1718888978500000000, 11.3),
    ]
    assert rows[0] == {
        "time": 1718887541660000000,
        "box_id": RABEN,
        "box_name": "Naturparkzentrum Raben",
        "sensor_id": SOIL,
        "phenomenon": "Bodenfeuchte",
        "unit": "%",
        "sensor_type": "SMT50",
        "value": 11.45,
        "lon": 12.5316,
        "lat": 52.0707,
    }
    [wifi] = influxdb.rows("SELECT * FROM \"opensensemap\" WHERE sensor_id = '576996be6c521810002479dd'", DB)
    assert (wifi["time"], wifi["value"], wifi["unit"], wifi["phenomenon"], wifi["lon"], wifi["lat"]) == (
        1478899321675000000,
        -66.0,
        "dBm",
        "Wifi-Stärke",
        7.64568,
        51.962372,
    )
    per_box = influxdb.query('SELECT count("value") FROM "opensensemap" GROUP BY "box_id"', DB)
    assert {s["tags"]["box_id"]: s["values"][0][1] for s in per_box} == {RABEN: 13, APIDOC_BOX: 7}

    # The flow's declared dashboard shows these points: every panel, macros expanded.
    [dashboard] = [
        d.to_json()
        for d in generate(load_and_validate([FLOW], environ=env)).dashboards
        if d.uid == "klima-opensensemap"
    ]
    to_ms = int(NOW * 1000) + 3_600_000
    panels = {
        p["title"]: [
            r
            for t in p["targets"]
            for r in influxdb.rows(
                expand_influxql(t["query"], from_ms=1_400_000_000_000, to_ms=to_ms, interval="1h"), DB
            )
        ]
        for p in dashboard["panels"]
    }
    latest = {(r["box_name"], r["phenomenon"]): r["Wert"] for r in panels["Letzte Werte"]}
    assert len(latest) == 15
    assert latest[("Naturparkzentrum Raben", "Bodenfeuchte")] == 11.3
    stations = {r["box_name"]: (r["latitude"], r["longitude"]) for r in panels["Stationen"]}
    assert stations["Naturparkzentrum Raben"] == (52.0707, 12.5316)
    assert {r["box_name"] for r in panels["Messwerte je Sensor"]} == set(stations)
