"""Declared panels proven against a real InfluxDB: the flow stores real uplinks, then every
target of every declared panel, with Grafana's macros expanded, returns exactly that data."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from grafana_provisioning.macros import expand_influxql
from grafana_provisioning.provision import generate
from tests.flowkit import run_flow
from tests.grafana_provisioning.helpers import (
    COORDS,
    DECLARED,
    SOIL_1,
    SOIL_2,
    WEATHER,
    Sent,
    flow_doc,
    make_uplinks,
    validated,
    write_registry,
)
from tests.services.influxdb import InfluxDB

MINUTE_NS = 60_000_000_000
ALL: dict[str, Any] = {"device": None, "location": None, "land_use": None, "soil_type": None}


async def _store(influxdb: InfluxDB, tmp_path: Path) -> tuple[dict[str, Any], list[Sent], int, int]:
    now_ns = time.time_ns()
    base_ns = (now_ns // MINUTE_NS - 40) * MINUTE_NS
    messages, sent = make_uplinks(base_ns)
    doc = flow_doc(write_registry(tmp_path), {"url": influxdb.url, "database": "klima"})
    doc["dashboards"] = [DECLARED]
    async with run_flow(doc, data_dir=tmp_path / "data") as h:
        for m in messages:
            await h.send("decode", m)
        await h.idle()
        for _ in range(100):
            rows = influxdb.rows('SELECT count("rssi") FROM /.*/', "klima")
            if sum(r["count"] for r in rows) == len(sent):
                break
            await asyncio.sleep(0.05)
    [declared] = [d for d in generate(validated(doc)).dashboards if d.uid == DECLARED["uid"]]
    return declared.to_json(), sent, base_ns // 1_000_000 - 60_000, now_ns // 1_000_000 + 60_000


def _latest(sent: list[Sent], field: str, devices: set[str]) -> dict[str, float]:
    out: dict[str, tuple[int, float]] = {}
    for s in sent:
        if field in s.fields and s.device_id in devices and s.time_ns > out.get(s.device_id, (0, 0.0))[0]:
            out[s.device_id] = (s.time_ns, s.fields[field])
    return {dev: v for dev, (_, v) in out.items()}


async def test_every_declared_panel_returns_the_stored_values(influxdb: InfluxDB, tmp_path: Path) -> None:
    dashboard, sent, from_ms, to_ms = await _store(influxdb, tmp_path)
    soil = {SOIL_1, SOIL_2}

    def run(panel: int, target: int = 0, variables: dict[str, Any] = ALL) -> list[dict[str, Any]]:
        query = dashboard["panels"][panel]["targets"][target]["query"]
        text = expand_influxql(query, from_ms=from_ms, to_ms=to_ms, interval="1m", variables=variables)
        return influxdb.rows(text, "klima")

    # timeseries: per-minute mean of each soil sensor (one uplink per sensor and minute).
    assert {(r["device_id"], r["time"], r["water_SOIL"]) for r in run(0)} == {
        (s.device_id, s.time_ns // MINUTE_NS * MINUTE_NS, s.fields["water_SOIL"])
        for s in sent
        if s.device_id in soil
    }
    # stat on one measurement only ("Boden Marktplatz" = SOIL_1).
    assert (
        {r["device_id"]: r["temp_SOIL"] for r in run(1)}
        == _latest(sent, "temp_SOIL", {SOIL_1})
        == {SOIL_1: 12.5}
    )
    # gauge: each soil sensor's latest battery voltage.
    assert {r["device_id"]: r["Bat"] for r in run(2)} == _latest(sent, "Bat", soil)
    # bargauge with the tag filter location = 'Bad Belzig'.
    assert {r["device_id"]: r["conduct_SOIL"] for r in run(3)} == {SOIL_1: 220.0, SOIL_2: 221.0}
    # barchart and table: one row per device with the latest of every field.
    assert {r["device_id"]: (r["water_SOIL"], r["temp_SOIL"]) for r in run(4)} == {
        SOIL_1: (30.25, 12.5),
        SOIL_2: (31.25, 12.5),
    }
    bat = 3.1 + 2 / 10  # the third round's battery voltage, as sent (3.3000000000000003)
    assert {r["device_id"]: (r["water_SOIL"], r["Bat"]) for r in run(5)} == {
        SOIL_1: (30.25, bat),
        SOIL_2: (31.25, bat),
    }
    # geomap: coordinates of every registered device, the weather station's humidity.
    assert {r["device_id"]: (r["latitude"], r["longitude"], r["air_humidity"]) for r in run(6)} == {
        SOIL_1: (*COORDS[SOIL_1], None),
        SOIL_2: (*COORDS[SOIL_2], None),
        WEATHER: (*COORDS[WEATHER], 62.0),
    }
    # the raw query, as written.
    assert {r["device_id"]: r["rssi"] for r in run(7)} == _latest(sent, "rssi", {SOIL_1, SOIL_2, WEATHER})
    # A chosen device narrows every field panel to it.
    one = {**ALL, "device": [SOIL_2]}
    assert {r["device_id"] for p in (0, 2, 3, 4, 5, 6) for r in run(p, variables=one)} == {SOIL_2}
    assert run(1, variables=one) == []  # SOIL_2 does not write to "Boden Marktplatz"


async def test_geomap_with_coordinates_in_tags(influxdb: InfluxDB, tmp_path: Path) -> None:
    """Coordinates stored as tags: grouped by, and converted to numbers for the marker layer."""
    doc: dict[str, Any] = {
        "id": "pegel",
        "connections": {"influx": {"type": "influxdb", "url": influxdb.url, "database": "pegel"}},
        "nodes": [
            {
                "id": "store",
                "type": "influxdb-out",
                "server": "influx",
                "measurement": "wasserstand",
                "tags": {"device_id": "payload.dev", "lat": "payload.lat", "lon": "payload.lon"},
                "fields": {"level": "payload.level"},
                "units": {"level": "lengthmm"},
                "batch_interval": 0.05,
            }
        ],
        "dashboards": [
            {
                "title": "Pegel",
                "panels": [
                    {
                        "type": "geomap",
                        "title": "Pegel",
                        "fields": ["level"],
                        "latitude": "lat",
                        "longitude": "lon",
                    }
                ],
            }
        ],
    }
    influxdb.create_database("pegel")
    from_ms = time.time_ns() // 1_000_000 - 60_000
    async with run_flow(doc, data_dir=tmp_path / "data") as h:
        for dev, lat, lon, level in (
            ("p1", "52.1", "12.5", 812.0),
            ("p2", "52.2", "12.6", 640.0),
            ("p1", "52.1", "12.5", 815.0),
        ):
            await h.send("store", {"dev": dev, "lat": lat, "lon": lon, "level": level})
        await h.idle()
        for _ in range(100):
            if (
                sum(r["count"] for r in influxdb.rows('SELECT count("level") FROM "wasserstand"', "pegel"))
                == 3
            ):
                break
            await asyncio.sleep(0.05)
    [declared] = [d for d in generate(validated(doc)).dashboards if d.title == "Pegel"]
    panel = declared.to_json()["panels"][0]
    assert panel["transformations"] == [
        {
            "id": "convertFieldType",
            "options": {
                "conversions": [
                    {"targetField": "lat", "destinationType": "number"},
                    {"targetField": "lon", "destinationType": "number"},
                ]
            },
        }
    ]
    assert panel["fieldConfig"]["defaults"]["unit"] == "lengthmm"
    query = panel["targets"][0]["query"]
    assert query == (
        'SELECT last("level") AS "level" FROM "wasserstand" WHERE "device_id" =~ /^$device$/ AND $timeFilter '
        'GROUP BY "device_id", "lat", "lon"'
    )
    text = expand_influxql(
        query, from_ms=from_ms, to_ms=from_ms + 600_000, interval="1m", variables={"device": None}
    )
    rows = influxdb.rows(text, "pegel")
    assert {(r["device_id"], r["lat"], r["lon"], r["level"]) for r in rows} == {
        ("p1", "52.1", "12.5", 815.0),
        ("p2", "52.2", "12.6", 640.0),
    }
