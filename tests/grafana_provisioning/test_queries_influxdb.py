"""The strongest check available without Grafana: every panel's query, expanded as Grafana expands it,
run against a real InfluxDB after the flow stored real uplinks, returns exactly that data."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from grafana_provisioning.dashboards import GeneratedDashboard, build_dashboards
from grafana_provisioning.discovery import discover
from grafana_provisioning.macros import expand_influxql
from tests.flowkit import run_flow
from tests.grafana_provisioning.helpers import (
    SITES,
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


async def _store(influxdb: InfluxDB, tmp_path: Path) -> tuple[list[GeneratedDashboard], list[Sent], int, int]:
    """Run the flow on generated uplinks; the dashboards, what was sent and the time range (ms)."""
    now_ns = time.time_ns()
    base_ns = (now_ns // MINUTE_NS - 40) * MINUTE_NS  # three rounds within the last 40 minutes
    messages, sent = make_uplinks(base_ns)
    doc = flow_doc(write_registry(tmp_path), {"url": influxdb.url, "database": "klima"})
    async with run_flow(doc, data_dir=tmp_path / "data") as h:
        for m in messages:
            await h.send("decode", m)
        await h.idle()
        for _ in range(100):
            if influxdb.query('SELECT count("rssi") FROM /.*/', "klima"):
                rows = influxdb.rows('SELECT count("rssi") FROM /.*/', "klima")
                if sum(r["count"] for r in rows) == len(sent):
                    break
            await asyncio.sleep(0.05)
    dashboards = build_dashboards(discover(validated(doc)))
    return dashboards, sent, base_ns // 1_000_000 - 60_000, now_ns // 1_000_000 + 60_000


def _run(
    influxdb: InfluxDB, query: str, from_ms: int, to_ms: int, variables: dict[str, Any]
) -> list[dict[str, Any]]:
    text = expand_influxql(query, from_ms=from_ms, to_ms=to_ms, interval="1m", variables=variables)
    return influxdb.rows(text, "klima")


def _panel_fields(d: GeneratedDashboard) -> list[tuple[dict[str, Any], str, str]]:
    """(panel, kind, field name) for every panel; the field is named in the query's SELECT."""
    out = []
    for p in d.to_json()["panels"]:
        query = p["targets"][0]["query"]
        field = query.split('("', 1)[1].split('")', 1)[0]
        out.append((p, p["type"], field))
    return out


def _expected_series(sent: list[Sent], field: str, devices: set[str]) -> set[tuple[str, int, float]]:
    return {
        (s.device_id, s.time_ns // MINUTE_NS * MINUTE_NS, s.fields[field])
        for s in sent
        if field in s.fields and s.device_id in devices
    }


def _expected_latest(sent: list[Sent], field: str, devices: set[str]) -> dict[str, float]:
    latest: dict[str, tuple[int, float]] = {}
    for s in sent:
        if field in s.fields and s.device_id in devices and s.time_ns > latest.get(s.device_id, (0, 0.0))[0]:
            latest[s.device_id] = (s.time_ns, s.fields[field])
    return {dev: v for dev, (_, v) in latest.items()}


def _check_panels(
    influxdb: InfluxDB,
    dashboards: list[GeneratedDashboard],
    sent: list[Sent],
    window: tuple[int, int],
    variables: dict[str, Any],
    devices: set[str],
) -> int:
    checked = 0
    for d in dashboards:
        for panel, kind, field in _panel_fields(d):
            rows = _run(influxdb, panel["targets"][0]["query"], *window, variables)
            got: set[tuple[Any, ...]]
            expected: set[tuple[Any, ...]]
            if kind == "timeseries":
                got = {(r["device_id"], r["time"], r["mean"]) for r in rows}
                expected = _expected_series(sent, field, devices)
            else:
                assert kind == "stat"
                got_latest = {r["device_id"]: r["last"] for r in rows}
                assert len(got_latest) == len(rows), f"{d.title}/{panel['title']}: one row per device"
                got, expected = set(got_latest.items()), set(_expected_latest(sent, field, devices).items())
            assert got == expected, f"{d.title} / {panel['title']} ({field})"
            if expected:
                checked += 1
    return checked


async def test_every_panel_query_returns_the_stored_data_for_all_devices(
    influxdb: InfluxDB, tmp_path: Path
) -> None:
    dashboards, sent, from_ms, to_ms = await _store(influxdb, tmp_path)
    every = {"device": None, "location": None, "land_use": None, "soil_type": None}
    n_panels = sum(len(d.to_json()["panels"]) for d in dashboards)
    checked = _check_panels(influxdb, dashboards, sent, (from_ms, to_ms), every, set(SITES))
    # Every panel returned data: 5 soil + 9 weather + 2 radio fields, a time series and a stat each.
    assert n_panels == 32
    assert checked == n_panels


async def test_panel_queries_follow_the_chosen_variables(influxdb: InfluxDB, tmp_path: Path) -> None:
    dashboards, sent, from_ms, to_ms = await _store(influxdb, tmp_path)
    # "Wiese/Weide" holds a "/", which must be escaped inside the InfluxQL regex.
    one = {"device": [SOIL_2], "location": ["Bad Belzig"], "land_use": ["Wiese/Weide"], "soil_type": None}
    soil_and_radio = [d for d in dashboards if not d.title.endswith("Wetter")]
    assert _check_panels(influxdb, soil_and_radio, sent, (from_ms, to_ms), one, {SOIL_2}) == 14

    two = {"device": [SOIL_2, WEATHER], "location": None, "land_use": ["Wiese/Weide"], "soil_type": ["Lehm"]}
    radio = [d for d in dashboards if d.title.endswith("Funk")]
    assert _check_panels(influxdb, radio, sent, (from_ms, to_ms), two, {SOIL_2, WEATHER}) == 4


async def test_template_variable_queries_list_the_stored_tag_values(
    influxdb: InfluxDB, tmp_path: Path
) -> None:
    dashboards, _, _, _ = await _store(influxdb, tmp_path)
    variables = {v["name"]: v["query"] for v in dashboards[0].to_json()["templating"]["list"]}
    # One series per measurement repeats values; Grafana lists each option once, so compare sets.
    values = {name: sorted({r["value"] for r in influxdb.rows(q, "klima")}) for name, q in variables.items()}
    assert values == {
        "device": sorted(SITES),
        "location": ["Bad Belzig", "Wiesenburg"],
        "land_use": ["Garten/Acker", "Wiese/Weide"],
        "soil_type": ["Lehm", "Sand"],
    }
