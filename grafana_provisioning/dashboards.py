"""Dashboards for what the flows store, built with grafana-foundation-sdk (Grafana 11.6 variant).

One dashboard per stored kind of data (flow, ``influxdb-out`` node, series group): for
every field a time-series panel (mean per ``$__interval``, one line per device) and
beside it a stat panel with each device's latest value. Template variables for the
tags (device, location, land use, soil type) let one dashboard serve all sensors.
Uids are derived from flow, node and group, panel ids are explicit (embeds address
panels by id), and positions are set explicitly so no two panels overlap.

The SDK has no InfluxDB query builder: targets are raw query objects (InfluxQL for
1.x connections, Flux for 2.x).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import dashboard as dash_m

from grafana_provisioning.discovery import FieldInfo, SeriesGroup, StoredData

#: Grafana version the SDK variant targets (pinned: grafana-foundation-sdk==1769699379!11.6.0).
GRAFANA_VERSION = "11.6"

#: Tag -> (variable name, German label), in the order the variables appear.
TAG_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("device_id", "device", "Gerät"),
    ("location", "location", "Ort"),
    ("land_use", "land_use", "Landnutzung"),
    ("soil_type", "soil_type", "Bodenart"),
)

PANEL_HEIGHT = 8
SERIES_WIDTH = 16
STAT_WIDTH = 8


@dataclass(frozen=True, slots=True)
class GeneratedDashboard:
    """A built dashboard and where it came from."""

    uid: str
    title: str
    flow_id: str
    model: dash_m.Dashboard
    #: Grafana folder; None: the flow's (its id).
    folder: str | None = None

    @property
    def folder_name(self) -> str:
        """The folder it goes into: declared, else the flow id."""
        return self.folder or self.flow_id

    def to_json(self) -> dict[str, Any]:
        """The dashboard as Grafana's JSON model (plain dicts, lists and scalars)."""
        data: dict[str, Any] = json.loads(json.dumps(self.model, cls=JSONEncoder))
        return data


class RawQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """A target as Grafana stores it: the SDK has no InfluxDB query type."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def build(self) -> cogvariants.Dataquery:
        return UnknownDataquery(self._data)


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by ``-``, as Grafana slugs dashboard titles."""
    table = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "ae", "Ö": "oe", "Ü": "ue"})
    text = text.translate(table).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def stable_uid(*parts: str) -> str:
    """A uid (at most 40 chars) readable from its parts and unique by their hash: survives re-provisioning."""
    digest = hashlib.sha1("/".join(parts).encode()).hexdigest()[:8]
    readable = slugify("-".join(parts))[:28].strip("-")
    return f"{readable}-{digest}"


def datasource_uid(connection: str) -> str:
    """The uid of the datasource provisioned for a connection."""
    return stable_uid("influx", connection)


def _regex_escape(text: str) -> str:
    # Go regexp (InfluxQL, Flux) rejects escapes of letters and spaces: escape punctuation only.
    return re.sub(r"([\\.+*?()|\[\]{}^$/])", r"\\\1", text)


def measurement_regex(measurements: list[str]) -> str:
    """``/^(?:a|b)$/``: the measurements a node writes, for InfluxQL FROM and Flux filters."""
    return "/^(?:" + "|".join(_regex_escape(m) for m in measurements) + ")$/"


def _influxql_from(measurements: list[str]) -> str:
    if len(measurements) == 1:
        return '"' + measurements[0].replace('"', '\\"') + '"'
    return measurement_regex(measurements)


def _variables(stored: StoredData) -> list[tuple[str, str, str]]:
    return [v for v in TAG_VARIABLES if v[0] in stored.tags]


def influxql_queries(stored: StoredData, fld: FieldInfo) -> tuple[str, str]:
    """(time series, latest value per device) InfluxQL for one field, with Grafana's macros."""
    src = _influxql_from(stored.measurements)
    where = "".join(f'"{tag}" =~ /^${var}$/ AND ' for tag, var, _ in _variables(stored))
    group = ', "device_id"' if "device_id" in stored.tags else ""
    series = (
        f'SELECT mean("{fld.name}") FROM {src} WHERE {where}$timeFilter '
        f"GROUP BY time($__interval){group} fill(none)"
    )
    latest = f'SELECT last("{fld.name}") FROM {src} WHERE {where}$timeFilter'
    if group:
        latest += ' GROUP BY "device_id"'
    return series, latest


def flux_queries(stored: StoredData, fld: FieldInfo) -> tuple[str, str]:
    """(time series, latest value per device) Flux for one field, with Grafana's macros."""
    bucket = stored.influx.bucket or ""
    head = (
        f'from(bucket: "{bucket}")\n'
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
        f'  |> filter(fn: (r) => r._measurement =~ {measurement_regex(stored.measurements)} and r._field == "{fld.name}")\n'
    )
    for tag, var, _ in _variables(stored):
        head += f"  |> filter(fn: (r) => r.{tag} =~ /^${{{var}:regex}}$/)\n"
    group = '  |> group(columns: ["device_id"])\n' if "device_id" in stored.tags else ""
    series = head + group + "  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"
    latest = head + group + "  |> last()"
    return series, latest


def _target(stored: StoredData, ds: dash_m.DataSourceRef, query: str, ref: str) -> RawQuery:
    data: dict[str, Any] = {"refId": ref, "datasource": ds.to_json(), "query": query}
    if stored.influx.version == 1:
        data.update(rawQuery=True, resultFormat="time_series")
        if "device_id" in stored.tags:
            data["alias"] = "$tag_device_id"
    return RawQuery(data)


def _variable(stored: StoredData, ds: dash_m.DataSourceRef, tag: str, name: str, label: str) -> Any:
    if stored.influx.version == 1:
        query = f'SHOW TAG VALUES FROM {_influxql_from(stored.measurements)} WITH KEY = "{tag}"'
    else:
        query = (
            'import "influxdata/influxdb/schema"\n'
            f'schema.tagValues(bucket: "{stored.influx.bucket or ""}", tag: "{tag}")'
        )
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .datasource(ds)
        .query(query)
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
    )


def build_dashboard(stored: StoredData, group: SeriesGroup) -> GeneratedDashboard:
    """The dashboard for one kind of data one node stores."""
    uid = stable_uid(stored.flow_id, stored.node_id, group.key)
    title = f"{stored.flow_label}: {group.title}"
    ds = dash_m.DataSourceRef(type_val="influxdb", uid=datasource_uid(stored.connection))
    builder = (
        dash_b.Dashboard(title)
        .uid(uid)
        .tags(["klimaflow", f"flow:{stored.flow_id}", group.key])
        .description(
            f"Generiert von klimaflow aus Flow {stored.flow_id}, Knoten {stored.node_id} "
            f"(Messungen: {', '.join(stored.measurements)}). Änderungen hier gehen beim nächsten Provisioning verloren."
        )
        .time("now-7d", "now")
        .refresh("5m")
        .timezone("browser")
        .editable()
    )
    for tag, name, label in _variables(stored):
        builder = builder.with_variable(_variable(stored, ds, tag, name, label))
    queries = influxql_queries if stored.influx.version == 1 else flux_queries
    panel_id = 0
    for row, fld in enumerate(group.fields):
        series_q, latest_q = queries(stored, fld)
        y = row * PANEL_HEIGHT
        panel_id += 1
        builder = builder.with_panel(
            ts_b.Panel()
            .id(panel_id)
            .title(fld.title)
            .description(f"Feld {fld.name}: Mittelwert je Intervall und Gerät")
            .datasource(ds)
            .with_target(_target(stored, ds, series_q, "A"))
            .unit(fld.unit)
            .grid_pos(dash_m.GridPos(h=PANEL_HEIGHT, w=SERIES_WIDTH, x=0, y=y))
        )
        panel_id += 1
        builder = builder.with_panel(
            stat_b.Panel()
            .id(panel_id)
            .title(f"{fld.title} (aktuell)")
            .description(f"Feld {fld.name}: letzter Wert je Gerät")
            .datasource(ds)
            .with_target(_target(stored, ds, latest_q, "A"))
            .unit(fld.unit)
            .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .grid_pos(dash_m.GridPos(h=PANEL_HEIGHT, w=STAT_WIDTH, x=SERIES_WIDTH, y=y))
        )
    return GeneratedDashboard(uid, title, stored.flow_id, builder.build())


def build_dashboards(stored: list[StoredData]) -> list[GeneratedDashboard]:
    """Every dashboard for a deployment's stored data, in discovery order."""
    return [build_dashboard(s, g) for s in stored for g in s.groups if s.measurements]
