"""Dashboards declared in a flow's ``dashboards:`` section: built with the SDK, every panel kind,
layout, thresholds, units (also from influxdb-out's ``units``), and validation with exact errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana_provisioning.provision import embeds, generate
from tests.flowkit import validate_doc
from tests.grafana_provisioning.helpers import DECLARED, flow_doc, validated, write_registry

V1 = {"url": "http://influx:8086", "database": "klima"}
V2 = {
    "version": 2,
    "url": "http://influx:8086",
    "org": "stadt",
    "bucket": "klima",
    "token": "${INFLUX_TOKEN}",
}
FROM = "/^(?:Boden Burgwiese|Boden Marktplatz|Wetter Schlosspark|ttn)$/"
VARS = (
    '"device_id" =~ /^$device$/ AND "location" =~ /^$location$/ AND '
    '"land_use" =~ /^$land_use$/ AND "soil_type" =~ /^$soil_type$/ AND $timeFilter'
)


def _declared(
    tmp_path: Path, influx: dict[str, Any] = V1, env: dict[str, str] | None = None
) -> dict[str, Any]:
    doc = flow_doc(write_registry(tmp_path), influx)
    doc["nodes"][2]["units"] = {"barometric_pressure": "pressurepa", "air_humidity": "%"}
    doc["dashboards"] = [DECLARED]
    prov = generate(validated(doc, env))
    assert [d.uid for d in prov.dashboards][-1] == "klima-boden-uebersicht"
    return prov.dashboards[-1].to_json()


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_declared_dashboard_round_trips_through_the_sdk(tmp_path: Path) -> None:
    for influx, env in ((V1, None), (V2, {"INFLUX_TOKEN": "t0k3n"})):
        data = _declared(tmp_path, influx, env)
        assert json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder)) == data


def test_every_panel_kind_with_ids_layout_units_and_thresholds(tmp_path: Path) -> None:
    d = _declared(tmp_path)
    assert (d["uid"], d["title"], d["tags"], d["time"], d["refresh"]) == (
        "klima-boden-uebersicht",
        "Boden: Übersicht",
        ["klimaflow", "flow:klima", "boden"],
        {"from": "now-24h", "to": "now"},
        "1m",
    )
    panels = d["panels"]
    assert [(p["id"], p["type"], p["title"]) for p in panels] == [
        (1, "timeseries", "Bodenfeuchte"),
        (2, "stat", "Temperatur Marktplatz"),
        (3, "gauge", "Batterie"),
        (4, "bargauge", "Leitfähigkeit"),
        (5, "barchart", "Feuchte und Temperatur"),
        (6, "table", "Letzte Werte"),
        (7, "geomap", "Standorte"),
        (8, "table", "Funk (roh)"),
    ]
    # The table placed at the top; the others first-fit below and beside it, never overlapping.
    assert [tuple(p["gridPos"][k] for k in "xywh") for p in panels] == [
        (0, 6, 12, 8),
        (12, 6, 6, 4),
        (18, 6, 6, 6),
        (12, 12, 12, 6),
        (0, 14, 12, 8),
        (0, 0, 24, 6),
        (12, 18, 12, 10),
        (0, 22, 12, 8),
    ]
    for i, a in enumerate(panels):
        assert a["gridPos"]["x"] + a["gridPos"]["w"] <= 24
        for b in panels[i + 1 :]:
            assert not _overlap(a["gridPos"], b["gridPos"]), (a["title"], b["title"])
    defaults = [p.get("fieldConfig", {}).get("defaults", {}) for p in panels]
    assert [x.get("unit") for x in defaults] == [
        "percent",
        "celsius",
        "volt",
        "suffix: µS/cm",
        "percent",
        "percent",
        "percent",  # air_humidity: `%` declared in influxdb-out's units (default would be humidity)
        None,
    ]
    assert (defaults[0]["decimals"], defaults[0]["min"], defaults[0]["max"]) == (1, 0.0, 100.0)
    assert defaults[0]["thresholds"] == {
        "mode": "absolute",
        "steps": [
            {"value": None, "color": "red"},
            {"value": 15.0, "color": "yellow"},
            {"value": 25.0, "color": "green"},
        ],
    }
    assert defaults[0]["custom"]["thresholdsStyle"] == {"mode": "line"}
    assert defaults[2]["thresholds"]["steps"] == [
        {"value": None, "color": "dark-red"},
        {"value": 3.0, "color": "#73BF69"},
    ]
    # Two fields of different units on one bar chart: one override per field.
    assert panels[4]["fieldConfig"]["overrides"] == [
        {
            "matcher": {"id": "byName", "options": "water_SOIL"},
            "properties": [{"id": "unit", "value": "percent"}],
        },
        {
            "matcher": {"id": "byName", "options": "temp_SOIL"},
            "properties": [{"id": "unit", "value": "celsius"}],
        },
    ]
    assert panels[4]["options"]["xField"] == "device_id"
    layer = panels[6]["options"]["layers"][0]
    assert (layer["type"], layer["location"]) == (
        "markers",
        {"mode": "coords", "latitude": "latitude", "longitude": "longitude"},
    )


def test_declared_queries(tmp_path: Path) -> None:
    q = [[t["query"] for t in p["targets"]] for p in _declared(tmp_path)["panels"]]
    assert q[0] == [
        f'SELECT mean("water_SOIL") AS "water_SOIL" FROM {FROM} WHERE {VARS} GROUP BY time($__interval), "device_id" fill(none)'
    ]
    assert q[1] == [
        f'SELECT last("temp_SOIL") AS "temp_SOIL" FROM "Boden Marktplatz" WHERE {VARS} GROUP BY "device_id"'
    ]
    assert q[3] == [
        f'SELECT last("conduct_SOIL") AS "conduct_SOIL" FROM {FROM} WHERE "location" = \'Bad Belzig\' AND {VARS} '
        'GROUP BY "device_id"'
    ]
    assert q[6] == [
        'SELECT last("air_humidity") AS "air_humidity", last("latitude") AS "latitude", last("longitude") AS "longitude" '
        f'FROM {FROM} WHERE {VARS} GROUP BY "device_id"'
    ]
    assert q[7] == ['SELECT last("rssi") AS "rssi" FROM /.*/ WHERE $timeFilter GROUP BY "device_id"']


def test_v2_declared_panels_get_flux(tmp_path: Path) -> None:
    panels = _declared(tmp_path, V2, {"INFLUX_TOKEN": "t0k3n"})["panels"]
    assert panels[3]["targets"][0]["query"].splitlines() == [
        'from(bucket: "klima")',
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f"  |> filter(fn: (r) => r._measurement =~ {FROM} and r._field =~ /^(?:conduct_SOIL)$/)",
        '  |> filter(fn: (r) => r["location"] == "Bad Belzig")',
        "  |> filter(fn: (r) => r.device_id =~ /^${device:regex}$/)",
        "  |> filter(fn: (r) => r.location =~ /^${location:regex}$/)",
        "  |> filter(fn: (r) => r.land_use =~ /^${land_use:regex}$/)",
        "  |> filter(fn: (r) => r.soil_type =~ /^${soil_type:regex}$/)",
        "  |> last()",
    ]
    assert "rawQuery" not in panels[3]["targets"][0]


def test_units_declared_on_influxdb_out_reach_generated_and_declared_panels() -> None:
    doc = {
        "id": "pegel",
        "connections": {"influx": {"type": "influxdb", **V1}},
        "nodes": [
            {
                "id": "store",
                "type": "influxdb-out",
                "server": "influx",
                "measurement": "wasserstand",
                "fields": {"level": "payload.level", "water_temp": "payload.t"},
                "units": {"level": "lengthmm"},
            }
        ],
        "dashboards": [
            {"title": "Pegel", "panels": [{"type": "gauge", "title": "Pegel", "fields": ["level"]}]}
        ],
    }
    generated, declared = generate(validated(doc)).dashboards
    assert [(p["title"], p["fieldConfig"]["defaults"]["unit"]) for p in generated.to_json()["panels"]] == [
        ("level", "lengthmm"),  # declared; the name alone would give lengthm
        ("level (aktuell)", "lengthmm"),
        ("water_temp", "celsius"),  # not declared: from the name
        ("water_temp (aktuell)", "celsius"),
    ]
    assert declared.to_json()["panels"][0]["fieldConfig"]["defaults"]["unit"] == "lengthmm"
    assert declared.uid == "pegel-pegel-fa08d1d4"  # "<flow>-<title>-" + sha1("pegel/Pegel")[:8]
    assert declared.folder_name == "pegel"


HEAD = """id: pegel
label: Pegel
connections:
  influx: {type: influxdb, url: "http://influx:8086", database: pegel}
nodes:
  - id: in
    type: inject
    wires: [store]
  - id: store
    type: influxdb-out
    server: influx
    measurement: wasserstand
    tags: {device_id: payload.dev}
    static_tags: {location: Belzig}
    fields: {level: payload.level, water_temp: payload.t}
dashboards:
  - title: Pegel
"""

CASES = {
    "panel types": (
        """    panels:
      - {type: pie, title: A, fields: [level]}
      - {type: guage, title: B, fields: [level]}
""",
        [
            "flow.yaml:19: dashboards.0.panels.0.type: unknown panel type 'pie' "
            "(known: timeseries, stat, gauge, bargauge, barchart, table, geomap)",
            "flow.yaml:20: dashboards.0.panels.1.type: unknown panel type 'guage'; did you mean 'gauge'? "
            "(known: timeseries, stat, gauge, bargauge, barchart, table, geomap)",
        ],
    ),
    "fields, tags, measurement": (
        """    panels:
      - type: timeseries
        title: A
        fields: [level, levl]
        tags: {location: Belzig, site: Nord}
        measurement: pegel
""",
        [
            "flow.yaml:23: dashboards.0.panels.0.measurement: node store writes no measurement 'pegel' "
            "(it writes: wasserstand)",
            "flow.yaml:21: dashboards.0.panels.0.fields.1: unknown field 'levl'; did you mean 'level'? "
            "(node store stores: level, water_temp)",
            "flow.yaml:22: dashboards.0.panels.0.tags.site: unknown tag 'site' (node store writes: device_id, location)",
        ],
    ),
    "thresholds": (
        """    panels:
      - type: gauge
        title: A
        fields: [level]
        thresholds:
          - {color: green}
          - {value: 80, color: orange}
          - {value: 50, color: red}
      - type: stat
        title: B
        fields: [water_temp]
        thresholds:
          - {value: 0, color: blau}
      - type: stat
        title: C
        fields: [water_temp]
        thresholds: [{color: green}, {color: red}]
""",
        [
            "flow.yaml:25: dashboards.0.panels.0.thresholds.2.value: 50 must be greater than the step before (80)",
            "flow.yaml:30: dashboards.0.panels.1.thresholds.0.color: unknown colour 'blau'; did you mean 'blue'? "
            "(a Grafana colour name, #rrggbb or rgb(r, g, b))",
            "flow.yaml:34: dashboards.0.panels.2.thresholds.1: only the first step may omit value",
        ],
    ),
    "what a panel shows": (
        """    panels:
      - {type: table, title: A, fields: [level], query: SELECT 1}
      - {type: table, title: B}
      - {type: stat, title: C, fields: [level], min: 10, max: 5, colour: red}
""",
        [
            "flow.yaml:19: dashboards.0.panels.0: give either query or fields (with measurement, tags), not both",
            "flow.yaml:20: dashboards.0.panels.1: fields (at least one) or query is required",
            "flow.yaml:21: dashboards.0.panels.2.colour: unknown key",
        ],
    ),
    "grid": (
        """    panels:
      - {type: stat, title: A, fields: [level], grid: {x: 0, y: 0, w: 12, h: 4}}
      - {type: stat, title: B, fields: [level], grid: {x: 6, y: 2, w: 12, h: 4}}
  - title: Breit
    panels:
      - {type: stat, title: C, fields: [level], grid: {x: 20, y: 0, w: 6, h: 4}}
""",
        [
            "flow.yaml:20: dashboards.0.panels.1.grid: overlaps the grid of panel 0",
            "flow.yaml:23: dashboards.1.panels.0.grid: x + w = 26 exceeds the grid's 24 columns",
        ],
    ),
    "source, uid": (
        """    uid: pegel-1
    source: stor
    panels:
      - {type: stat, title: A, fields: [level]}
      - {type: stat, title: B, fields: [level], source: in}
  - title: Zwei
    uid: pegel-1
    panels:
      - {type: geomap, title: Karte, fields: [level]}
  - title: Drei
    uid: pegel 3
    panels: [{type: stat, title: A, fields: [level]}]
""",
        [
            "flow.yaml:28: dashboards.2.uid: uid 'pegel 3': at most 40 letters, digits, '-' and '_' (Grafana's limit)",
        ],
    ),
    "source, uid (once the entries are valid)": (
        """    uid: pegel-1
    source: stor
    panels:
      - {type: stat, title: A, fields: [level]}
      - {type: stat, title: B, fields: [level], source: in}
  - title: Zwei
    uid: pegel-1
    panels:
      - {type: geomap, title: Karte, fields: [level]}
""",
        [
            "flow.yaml:19: dashboards.0.source: 'stor' is not an enabled influxdb-out node; did you mean 'store'?",
            "flow.yaml:22: dashboards.0.panels.1.source: 'in' is not an enabled influxdb-out node "
            "(influxdb-out nodes: store)",
            "flow.yaml:24: dashboards.1.uid: dashboard uid 'pegel-1' already used by the dashboard at flow.yaml:18",
            "flow.yaml:26: dashboards.1.panels.0.latitude: unknown field 'latitude' "
            "(node store stores: level, water_temp; set latitude to the field or tag holding it)",
            "flow.yaml:26: dashboards.1.panels.0.longitude: unknown field 'longitude' "
            "(node store stores: level, water_temp; set longitude to the field or tag holding it)",
        ],
    ),
    "uid of a generated dashboard": (
        """    uid: pegel-store-wasserstand-8df314a4
    panels:
      - {type: stat, title: A, fields: [level]}
""",
        [
            "flow.yaml:18: dashboards.0.uid: dashboard uid 'pegel-store-wasserstand-8df314a4' already used by "
            "the dashboard generated for node store",
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_errors_name_file_line_field(case: str) -> None:
    panels, expected = CASES[case]
    result, issues = validate_doc(HEAD + panels)
    assert result is None
    assert [i.format() for i in issues] == expected


def test_a_valid_section_passes_without_issues() -> None:
    result, issues = validate_doc(HEAD + "    panels:\n      - {type: stat, title: A, fields: [level]}\n")
    assert result is not None, [i.format() for i in issues]
    assert issues == []


def test_declared_panels_have_embed_urls(tmp_path: Path) -> None:
    doc = flow_doc(write_registry(tmp_path), V1)
    doc["dashboards"] = [DECLARED]
    prov = generate(validated(doc))
    urls = [e.url for e in embeds(prov.dashboards) if e.dashboard_uid == "klima-boden-uebersicht"]
    assert (
        urls[0]
        == "/d-solo/klima-boden-uebersicht/boden-uebersicht?orgId=1&panelId=1&from=now-7d&to=now&theme=light"
    )
    assert len(urls) == 8
