"""Generated dashboards: SDK round trip, ids, layout, uids, units, queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana_provisioning.dashboards import build_dashboards
from grafana_provisioning.discovery import discover
from tests.grafana_provisioning.helpers import flow_doc, validated, write_registry

V1 = {"url": "http://influx:8086", "database": "klima"}
V2 = {
    "version": 2,
    "url": "http://influx:8086",
    "org": "stadt",
    "bucket": "klima",
    "token": "${INFLUX_TOKEN}",
}


def _dashboards(
    tmp_path: Path, influx: dict[str, Any] = V1, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    doc = flow_doc(write_registry(tmp_path), influx)
    return [d.to_json() for d in build_dashboards(discover(validated(doc, env)))]


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_every_dashboard_round_trips_through_the_sdk_unchanged(tmp_path: Path) -> None:
    for env, influx in (({}, V1), ({"INFLUX_TOKEN": "t0k3n"}, V2)):
        for data in _dashboards(tmp_path, influx, env):
            again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
            assert again == data


def test_titles_uids_and_stable_across_runs(tmp_path: Path) -> None:
    first = _dashboards(tmp_path)
    # "<flow>-<node>-<group>-" + sha1("<flow>/<node>/<group>")[:8]: the same on every run and machine.
    assert [(d["title"], d["uid"]) for d in first] == [
        ("Klimasensoren: Boden", "klima-store-boden-8d4a6aaf"),
        ("Klimasensoren: Wetter", "klima-store-wetter-d4f9d8d6"),
        ("Klimasensoren: Funk", "klima-store-funk-d34293ae"),
    ]
    assert _dashboards(tmp_path) == first
    assert all(len(d["uid"]) <= 40 for d in first)


def test_panel_ids_unique_and_layout_without_overlap(tmp_path: Path) -> None:
    for d in _dashboards(tmp_path):
        panels = d["panels"]
        ids = [p["id"] for p in panels]
        assert ids == list(range(1, len(panels) + 1))
        for i, a in enumerate(panels):
            pos = a["gridPos"]
            assert pos["x"] + pos["w"] <= 24
            for b in panels[i + 1 :]:
                assert not _overlap(pos, b["gridPos"]), (a["title"], b["title"])


def test_soil_dashboard_panels_units_and_queries(tmp_path: Path) -> None:
    soil = _dashboards(tmp_path)[0]
    summary = [(p["type"], p["title"], p["fieldConfig"]["defaults"]["unit"]) for p in soil["panels"]]
    assert summary[:4] == [
        ("timeseries", "Bodenfeuchte", "percent"),
        ("stat", "Bodenfeuchte (aktuell)", "percent"),
        ("timeseries", "Bodentemperatur", "celsius"),
        ("stat", "Bodentemperatur (aktuell)", "celsius"),
    ]
    frm = "/^(?:Boden Burgwiese|Boden Marktplatz|Wetter Schlosspark|ttn)$/"
    where = (
        '"device_id" =~ /^$device$/ AND "location" =~ /^$location$/ AND '
        '"land_use" =~ /^$land_use$/ AND "soil_type" =~ /^$soil_type$/ AND $timeFilter'
    )
    assert soil["panels"][0]["targets"] == [
        {
            "refId": "A",
            "datasource": {"type": "influxdb", "uid": "influx-influx-8622a406"},
            "query": f'SELECT mean("water_SOIL") FROM {frm} WHERE {where} GROUP BY time($__interval), "device_id" fill(none)',
            "rawQuery": True,
            "resultFormat": "time_series",
            "alias": "$tag_device_id",
        }
    ]
    assert (
        soil["panels"][1]["targets"][0]["query"]
        == f'SELECT last("water_SOIL") FROM {frm} WHERE {where} GROUP BY "device_id"'
    )
    assert soil["panels"][1]["options"]["reduceOptions"]["calcs"] == ["lastNotNull"]
    assert [
        (v["name"], v["label"], v["allValue"], v["multi"], v["includeAll"])
        for v in soil["templating"]["list"]
    ] == [
        ("device", "Gerät", ".*", True, True),
        ("location", "Ort", ".*", True, True),
        ("land_use", "Landnutzung", ".*", True, True),
        ("soil_type", "Bodenart", ".*", True, True),
    ]


def test_v2_connection_gets_flux_queries(tmp_path: Path) -> None:
    soil = _dashboards(tmp_path, V2, {"INFLUX_TOKEN": "t0k3n"})[0]
    query = soil["panels"][0]["targets"][0]["query"]
    assert query.splitlines() == [
        'from(bucket: "klima")',
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        '  |> filter(fn: (r) => r._measurement =~ /^(?:Boden Burgwiese|Boden Marktplatz|Wetter Schlosspark|ttn)$/ and r._field == "water_SOIL")',
        "  |> filter(fn: (r) => r.device_id =~ /^${device:regex}$/)",
        "  |> filter(fn: (r) => r.location =~ /^${location:regex}$/)",
        "  |> filter(fn: (r) => r.land_use =~ /^${land_use:regex}$/)",
        "  |> filter(fn: (r) => r.soil_type =~ /^${soil_type:regex}$/)",
        '  |> group(columns: ["device_id"])',
        "  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)",
    ]
    assert soil["templating"]["list"][0]["query"] == (
        'import "influxdata/influxdb/schema"\nschema.tagValues(bucket: "klima", tag: "device_id")'
    )
