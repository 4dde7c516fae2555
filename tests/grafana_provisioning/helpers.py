"""A small TTN deployment (soil sensors and a weather station) and the uplinks it stores, for the Grafana tests.

Expected values are written down here, never computed by the code under test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.validation import ValidatedDeployment
from tests.flowkit import validate_doc

SOIL_1 = "eui-a8404100000d3e01"
SOIL_2 = "eui-a8404100000d3e02"
WEATHER = "eui-2cf7f1c0430001a1"

REGISTRY = """device_id;location;measurement;soil_type;land_use;latitude;longitude
eui-a8404100000d3e01;Bad Belzig;Boden Marktplatz;Sand;Garten/Acker;52.14212;12.59083
eui-a8404100000d3e02;Bad Belzig;Boden Burgwiese;Lehm;Wiese/Weide;52.13957;12.58644
eui-2cf7f1c0430001a1;Wiesenburg;Wetter Schlosspark;Lehm;Wiese/Weide;52.11650;12.46050
"""
#: device -> (location, land_use) as in REGISTRY.
SITES = {
    SOIL_1: ("Bad Belzig", "Garten/Acker"),
    SOIL_2: ("Bad Belzig", "Wiese/Weide"),
    WEATHER: ("Wiesenburg", "Wiese/Weide"),
}
MEASUREMENTS = ["Boden Marktplatz", "Boden Burgwiese", "Wetter Schlosspark", "ttn"]


def write_registry(tmp_path: Path) -> Path:
    path = tmp_path / "sensoren.csv"
    path.write_text(REGISTRY, encoding="utf-8")
    return path


def flow_doc(registry: Path, influx: dict[str, Any], *, flow_id: str = "klima") -> dict[str, Any]:
    """ttn-uplink -> registry-enrich -> influxdb-out, as the shipped TTN flow (without MQTT)."""
    return {
        "id": flow_id,
        "label": "Klimasensoren",
        "connections": {"influx": {"type": "influxdb", **influx}},
        "nodes": [
            {"id": "decode", "type": "ttn-uplink", "wires": {"out": ["enrich"]}},
            {"id": "enrich", "type": "registry-enrich", "path": str(registry), "wires": {"out": ["store"]}},
            {"id": "store", "type": "influxdb-out", "server": "influx", "batch_interval": 0.05},
        ],
    }


def validated(doc: dict[str, Any], environ: dict[str, str] | None = None) -> ValidatedDeployment:
    result, issues = validate_doc(doc, environ=environ)
    assert result is not None, [i.format() for i in issues]
    return result


@dataclass(frozen=True, slots=True)
class Sent:
    """One uplink: device, time (ns), and the fields it must store."""

    device_id: str
    time_ns: int
    fields: dict[str, float]


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def soil_payload(bat: float, ds: float, water: float, temp: float, conduct: int) -> dict[str, Any]:
    """An LSE01 decoded_payload as TTN's Device Repository formatter sends it (strings from toFixed)."""
    return {
        "Bat": bat,
        "TempC_DS18B20": f"{ds:.1f}",
        "water_SOIL": f"{water:.2f}",
        "temp_SOIL": f"{temp:.2f}",
        "conduct_SOIL": conduct,
    }


def weather_payload(values: dict[str, float]) -> dict[str, Any]:
    """A SenseCAP S2120 decoded_payload (the repository decoder's messages list-of-lists)."""
    ids = {
        "air_temperature": 4097,
        "air_humidity": 4098,
        "light_intensity": 4099,
        "uv_index": 4190,
        "wind_speed": 4105,
        "wind_direction": 4104,
        "rain_hourly": 4113,
        "barometric_pressure": 4101,
    }
    items = [
        {"measurementId": str(ids[k]), "measurementValue": v, "type": k}
        for k, v in values.items()
        if k in ids
    ]
    messages: list[Any] = [items]
    if "battery" in values:
        messages.append([{"Battery(%)": values["battery"]}])
    return {"err": 0, "payload": "", "valid": True, "messages": messages}


def uplink(device_id: str, time_ns: int, decoded: dict[str, Any], rssi: float, snr: float) -> dict[str, Any]:
    return {
        "end_device_ids": {"device_id": device_id, "application_ids": {"application_id": "klima-test"}},
        "received_at": rfc3339(time_ns),
        "uplink_message": {
            "f_port": 2,
            "f_cnt": 7,
            "decoded_payload": decoded,
            "rx_metadata": [{"rssi": rssi, "snr": snr}],
        },
    }


def make_uplinks(base_ns: int) -> tuple[list[dict[str, Any]], list[Sent]]:
    """Three rounds, ten minutes apart, of both soil sensors and the weather station; 5 s past a minute."""
    messages: list[dict[str, Any]] = []
    sent: list[Sent] = []
    for k in range(3):
        t = base_ns + k * 600_000_000_000 + 5_000_000_000
        for n, dev in enumerate((SOIL_1, SOIL_2)):
            bat, ds, water, temp, conduct = (
                3.1 + k / 10,
                12.5 + n,
                20.25 + 5 * k + n,
                10.5 + k,
                200 + 10 * k + n,
            )
            rssi, snr = -80.0 - k - n, 7.5 - k
            messages.append(
                uplink(dev, t + n * 1_000_000_000, soil_payload(bat, ds, water, temp, conduct), rssi, snr)
            )
            fields = {
                "Bat": bat,
                "TempC_DS18B20": ds,
                "water_SOIL": water,
                "temp_SOIL": temp,
                "conduct_SOIL": float(conduct),
                "rssi": rssi,
                "snr": snr,
            }
            sent.append(Sent(dev, t + n * 1_000_000_000, fields))
        weather = {
            "air_temperature": 18.5 + k,
            "air_humidity": 60.0 + k,
            "light_intensity": 1000.0 * (k + 1),
            "uv_index": 2.0 + k,
            "wind_speed": 3.5 + k,
            "wind_direction": 90.0 * k,
            "rain_hourly": 0.5 * k,
            "barometric_pressure": 101300.0 + 10 * k,
            "battery": 90.0 - k,
        }
        messages.append(uplink(WEATHER, t + 2_000_000_000, weather_payload(weather), -95.0 - k, -2.5 + k))
        sent.append(Sent(WEATHER, t + 2_000_000_000, {**weather, "rssi": -95.0 - k, "snr": -2.5 + k}))
    return messages, sent


#: Soil sensor coordinates as in REGISTRY: device -> (latitude, longitude).
COORDS = {SOIL_1: (52.14212, 12.59083), SOIL_2: (52.13957, 12.58644), WEATHER: (52.11650, 12.46050)}

#: A declared dashboard with every panel kind (fields of the TTN flow's node `store`).
DECLARED: dict[str, Any] = {
    "uid": "klima-boden-uebersicht",
    "title": "Boden: Übersicht",
    "folder": "Klima",
    "from": "now-24h",
    "to": "now",
    "refresh": "1m",
    "tags": ["boden"],
    "panels": [
        {
            "type": "timeseries",
            "title": "Bodenfeuchte",
            "fields": ["water_SOIL"],
            "decimals": 1,
            "min": 0,
            "max": 100,
            "thresholds": [
                {"color": "red"},
                {"value": 15, "color": "yellow"},
                {"value": 25, "color": "green"},
            ],
        },
        {
            "type": "stat",
            "title": "Temperatur Marktplatz",
            "fields": ["temp_SOIL"],
            "measurement": "Boden Marktplatz",
        },
        {
            "type": "gauge",
            "title": "Batterie",
            "fields": ["Bat"],
            "min": 2.5,
            "max": 3.6,
            "thresholds": [{"color": "dark-red"}, {"value": 3.0, "color": "#73BF69"}],
        },
        {
            "type": "bargauge",
            "title": "Leitfähigkeit",
            "fields": ["conduct_SOIL"],
            "tags": {"location": "Bad Belzig"},
        },
        {"type": "barchart", "title": "Feuchte und Temperatur", "fields": ["water_SOIL", "temp_SOIL"]},
        {
            "type": "table",
            "title": "Letzte Werte",
            "fields": ["water_SOIL", "Bat"],
            "grid": {"x": 0, "y": 0, "w": 24, "h": 6},
        },
        {"type": "geomap", "title": "Standorte", "fields": ["air_humidity"]},
        {
            "type": "table",
            "title": "Funk (roh)",
            "query": 'SELECT last("rssi") AS "rssi" FROM /.*/ WHERE $timeFilter GROUP BY "device_id"',
        },
    ],
}
