"""The shipped demo flow replays the real TTN uplinks (data/ttn/real/) as six Bad Belzig
sensors through a real Mosquitto into the shipped TTN flow and a real InfluxDB."""

from __future__ import annotations

import json
from pathlib import Path

from engine.runtime import Engine
from engine.validation import load_and_validate
from tests.flows.ttn_load import count_points, flow_env, points, wait_for_points, wait_until
from tests.services.influxdb import InfluxDB
from tests.services.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parents[2]
UPLINKS = REPO / "data" / "ttn" / "real" / "humidr_lse01_storage_integration_41_uplinks.json"
REGISTRY = REPO / "data" / "ttn" / "ttn-sensoren.csv"
SITES = {
    "Zegg Neupflanzung",
    "Zegg Kiefer",
    "Maisacker 1dm",
    "Belziger Landschaftswiesen/Mitte",
    "Marktplatz- schwacher Baum",
    "Marktplatz- starker Baum",
}


async def test_the_demo_replays_every_real_uplink_into_influxdb(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    influxdb.create_database("klimadaten")
    env = flow_env(
        mosquitto,
        influxdb,
        DEMO_PERIOD="20ms",
        DEMO_UPLINKS=str(UPLINKS),
        TTN_REGISTRY=str(REGISTRY),
    )
    env["INFLUX_DB"] = "klimadaten"
    validated = load_and_validate(
        [REPO / "flows" / "ttn-sensors.yaml", REPO / "flows" / "demo.yaml"], environ=env
    )
    engine = Engine(validated, data_dir=tmp_path, drain_timeout=10.0)
    await engine.start()
    try:
        await wait_for_points(influxdb, 41, timeout=30.0, db="klimadaten")
    finally:
        await engine.stop()
    rows = points(influxdb, db="klimadaten")
    assert {r["measurement"] for r in rows} == SITES
    assert len({r["device_id"] for r in rows}) == 6
    # The first real uplink (frm_payload DTgAAAAAC8MAABA=): 3.384 V, soil 30.11 °C, 0 % water.
    real = json.loads(UPLINKS.read_text(encoding="utf-8"))
    first = real[0]["result"]["uplink_message"]
    assert first["frm_payload"] == "DTgAAAAAC8MAABA="
    zegg = sorted((r for r in rows if r["device_id"] == "eui-a84041edd184a0c0"), key=lambda r: r["time"])
    assert len(zegg) == 7  # uplinks 0, 6, 12, ... 36 of 41
    assert zegg[0]["temp_SOIL"] == 30.11
    assert zegg[0]["Bat"] == 3.384
    await wait_until(lambda: count_points(influxdb, "klimadaten") == 41, 1, "no extra points")
