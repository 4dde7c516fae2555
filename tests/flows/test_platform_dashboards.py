"""The dashboards the shipped importer flows declare show the data those flows store.

The shipped open-data files (data/) go through `klimaflow import` into a real InfluxDB;
then every target of every panel of the declared "Klima" dashboards, with Grafana's macros
expanded as Grafana would send them, is run against it and must return the stored values.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.validation import load_and_validate
from grafana_provisioning.macros import expand_influxql
from grafana_provisioning.provision import generate
from tests.services.influxdb import InfluxDB

REPO = Path(__file__).resolve().parents[2]
KLIMAFLOW = Path(sys.executable).with_name("klimaflow")
DB = "klimadaten"
IMPORTS = {
    "groundwater": sorted(str(p) for p in (REPO / "data" / "groundwater").glob("*.csv")),
    "dwd-climate-means": [str(REPO / "data" / "dwd" / "mittelwerte_historisch.csv")],
    "statistics": sorted(str(p) for p in (REPO / "data" / "statistics").glob("*/*.csv")),
}
YEAR_MS = 365 * 24 * 3600 * 1000


@pytest.fixture(scope="module")
def platform_influx(tmp_path_factory: pytest.TempPathFactory) -> Any:
    influx = InfluxDB(tmp_path_factory.mktemp("influx")).start()
    try:
        influx.create_database(DB)
        influx.query(f'ALTER RETENTION POLICY "autogen" ON "{DB}" SHARD DURATION 520w')
        env = {**os.environ, "INFLUX_URL": influx.url, "INFLUX_DB": DB}
        for flow, files in IMPORTS.items():
            done = subprocess.run(
                [str(KLIMAFLOW), "import", f"flows/{flow}.yaml", *files],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        yield influx
    finally:
        influx.cleanup()


def _dashboards(influx: InfluxDB) -> dict[str, dict[str, Any]]:
    env = {"INFLUX_URL": influx.url, "INFLUX_DB": DB}
    validated = load_and_validate([REPO / "flows"], environ=env)
    return {d.uid: d.to_json() for d in generate(validated).dashboards}


def _run_panels(influx: InfluxDB, dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every panel's rows (all its targets), by panel title, over the last 70 years."""
    now_ms = int(time.time() * 1000)
    out: dict[str, list[dict[str, Any]]] = {}
    for panel in dashboard["panels"]:
        rows: list[dict[str, Any]] = []
        for target in panel.get("targets", []):
            q = expand_influxql(target["query"], from_ms=now_ms - 70 * YEAR_MS, to_ms=now_ms, interval="30d")
            rows += influx.rows(q, DB)
        out[panel["title"]] = rows
    return out


def test_groundwater_dashboard_shows_every_station(platform_influx: InfluxDB) -> None:
    panels = _run_panels(platform_influx, _dashboards(platform_influx)["klima-grundwasser"])
    latest = {r["station"]: r["cm u. GOK"] for r in panels["Letzte Messung je Messstelle"]}
    assert sorted(latest) == ["38404690", "38413470", "38413490"]
    assert all(isinstance(v, int | float) for v in latest.values())
    stations = {r["station"]: (r["latitude"], r["longitude"]) for r in panels["Messstellen"]}
    assert stations["38413470"] == (52.14503, 12.63429)
    assert stations["38413490"] == (52.157338, 12.607846)
    series = panels["Grundwasserflurabstand (cm unter Gelände)"]
    assert {r["station"] for r in series} == set(latest)
    # 25.01.2007 is the first reading of station 38413490 (660 cm); its 30-day bucket holds only it.
    first = min((r for r in series if r["station"] == "38413490"), key=lambda r: r["time"])
    assert first["cm u. GOK"] == 660


def test_dwd_dashboard_lists_the_means_per_period(platform_influx: InfluxDB) -> None:
    panels = _run_panels(platform_influx, _dashboards(platform_influx)["klima-dwd-mittelwerte"])
    rows = panels["Monatsmittel je Bezugszeitraum"]
    by_key = {(r["quantity"], r["period"]): r for r in rows}
    assert sorted(by_key) == [
        ("precipitation", "1961-1990"),
        ("precipitation", "1991-2020"),
        ("temperature", "1961-1990"),
        ("temperature", "1991-2020"),
    ]
    # The sample file's values (data/dwd/mittelwerte_historisch.csv).
    assert by_key[("precipitation", "1991-2020")]["year"] == 579.6
    assert by_key[("temperature", "1961-1990")]["jan"] == -0.9


def test_statistics_dashboard_panels_return_the_yearly_values(platform_influx: InfluxDB) -> None:
    panels = _run_panels(platform_influx, _dashboards(platform_influx)["klima-energie-statistik"])
    assert [title for title, rows in panels.items() if not rows] == []
    generation = panels["Stromerzeugung aus erneuerbaren Quellen in Bad Belzig (kWh)"]
    # 2010 in strom-_und_waermeerzeugung_ee_komplett__summe.csv: 10,062,993.7219 kWh in total.
    assert 10062993.7219 in [r.get("Gesamt_elektrische_Arbeit_kWh") for r in generation]
    assert len(panels["Landwirtschaftliche Betriebe im Land Brandenburg"]) >= 5
