"""Build the dashboards a flow declares (``dashboards:`` section) with grafana-foundation-sdk builders.

Queries follow the generated dashboards' conventions (tag template variables, ``$timeFilter``,
one series per device) so the same macro expansion proves them against InfluxDB:

* ``timeseries``: ``mean`` per ``$__interval`` and device, one target per field;
* ``stat``, ``gauge``, ``bargauge``: each device's ``last`` value, one target per field;
* ``barchart``, ``table``: one table query, ``last`` of every field per device (x axis: the device);
* ``geomap``: the same with the coordinates (fields, or tags converted to numbers), markers per device.

Panels without ``grid`` are placed first-fit on the 24-column grid around the placed ones,
so nothing overlaps; panel ids are 1..N in declaration order.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import barchart as barchart_b
from grafana_foundation_sdk.builders import bargauge as bargauge_b
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import gauge as gauge_b
from grafana_foundation_sdk.builders import geomap as geomap_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

from engine.model import FlowSpec
from engine.validation import ValidatedDeployment
from grafana_provisioning.dashboards import (
    GeneratedDashboard,
    RawQuery,
    _influxql_from,
    _variable,
    _variables,
    datasource_uid,
    measurement_regex,
)
from grafana_provisioning.declared import (
    GRID_COLUMNS,
    DashboardDecl,
    GridDecl,
    PanelDecl,
    dashboard_entries,
    dashboard_uid,
    overlaps,
    resolve_source,
)
from grafana_provisioning.discovery import StoredData

#: Size (w, h) of a panel placed automatically, by kind.
DEFAULT_SIZE: dict[str, tuple[int, int]] = {
    "timeseries": (12, 8),
    "stat": (6, 4),
    "gauge": (6, 6),
    "bargauge": (12, 6),
    "barchart": (12, 8),
    "table": (12, 8),
    "geomap": (12, 10),
}
_TABLE_KINDS = ("barchart", "table", "geomap")
_LATEST_KINDS = ("stat", "gauge", "bargauge")


def layout(panels: list[PanelDecl]) -> list[GridDecl]:
    """Every panel's place: its own ``grid``, else the first free place (top to bottom, left to right)."""
    placed: list[GridDecl | None] = [p.grid for p in panels]
    taken = [g for g in placed if g is not None]
    for i, p in enumerate(panels):
        if placed[i] is not None:
            continue
        w, h = DEFAULT_SIZE[p.type]
        y = 0
        spot: GridDecl | None = None
        while spot is None:
            for x in range(GRID_COLUMNS - w + 1):
                candidate = GridDecl(x=x, y=y, w=w, h=h)
                if not any(overlaps(candidate, t) for t in taken):
                    spot = candidate
                    break
            y += 1
        placed[i] = spot
        taken.append(spot)
    return [g for g in placed if g is not None]


def _q(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_targets(s: StoredData, p: PanelDecl) -> list[tuple[str, str]]:
    """(query, result format) per target of a field panel, with Grafana's macros."""
    src = _q(p.measurement) if p.measurement else _influxql_from(s.measurements)
    conds = [f"{_q(t)} = {_literal(v)}" for t, v in p.tags.items()]
    conds += [f'"{tag}" =~ /^${var}$/' for tag, var, _ in _variables(s)]
    where = " AND ".join([*conds, "$timeFilter"])
    dev = "device_id" in s.tags
    if p.type == "timeseries":
        group = ', "device_id"' if dev else ""
        return [
            (
                f"SELECT mean({_q(f)}) AS {_q(f)} FROM {src} WHERE {where} GROUP BY time($__interval){group} fill(none)",
                "time_series",
            )
            for f in p.fields
        ]
    if p.type in _LATEST_KINDS:
        group = ' GROUP BY "device_id"' if dev else ""
        return [
            (f"SELECT last({_q(f)}) AS {_q(f)} FROM {src} WHERE {where}{group}", "time_series")
            for f in p.fields
        ]
    fields = list(p.fields)
    by = ['"device_id"'] if dev else []
    if p.type == "geomap":
        for coord in (p.latitude, p.longitude):
            if coord in s.tags:
                by.append(_q(coord))
            elif coord not in fields:
                fields.append(coord)
    select = ", ".join(f"last({_q(f)}) AS {_q(f)}" for f in fields)
    group = f" GROUP BY {', '.join(by)}" if by else ""
    return [(f"SELECT {select} FROM {src} WHERE {where}{group}", "table")]


def flux_targets(s: StoredData, p: PanelDecl) -> list[tuple[str, str]]:
    """The Flux counterparts (InfluxDB 2.x), checked structurally only."""
    measurements = [p.measurement] if p.measurement else s.measurements
    fields = list(p.fields)
    if p.type == "geomap":
        fields += [c for c in (p.latitude, p.longitude) if c not in s.tags and c not in fields]
    field_re = measurement_regex(fields)
    head = (
        f'from(bucket: "{s.influx.bucket or ""}")\n'
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
        f"  |> filter(fn: (r) => r._measurement =~ {measurement_regex(measurements)} and r._field =~ {field_re})\n"
    )
    for tag, value in p.tags.items():
        head += f'  |> filter(fn: (r) => r["{tag}"] == "{value}")\n'
    for tag, var, _ in _variables(s):
        head += f"  |> filter(fn: (r) => r.{tag} =~ /^${{{var}:regex}}$/)\n"
    if p.type == "timeseries":
        return [
            (
                head + "  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)",
                "time_series",
            )
        ]
    if p.type in _LATEST_KINDS:
        return [(head + "  |> last()", "time_series")]
    return [
        (
            head
            + '  |> last()\n  |> pivot(rowKey: ["device_id"], columnKey: ["_field"], valueColumn: "_value")\n'
            "  |> group()",
            "table",
        )
    ]


def _target(
    s: StoredData, ds: dash_m.DataSourceRef, query: str, fmt: str, ref: str, several: bool
) -> RawQuery:
    data: dict[str, Any] = {"refId": ref, "datasource": ds.to_json(), "query": query}
    if s.influx.version == 1:
        data.update(rawQuery=True, resultFormat=fmt)
        if fmt == "time_series" and "device_id" in s.tags:
            data["alias"] = "$tag_device_id $col" if several else "$tag_device_id"
    return RawQuery(data)


def _panel_builder(p: PanelDecl, fields: list[str]) -> Any:
    if p.type == "timeseries":
        return ts_b.Panel()
    if p.type == "stat":
        return stat_b.Panel().reduce_options(
            common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
    if p.type == "gauge":
        return gauge_b.Panel().reduce_options(
            common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
    if p.type == "bargauge":
        return bargauge_b.Panel().reduce_options(
            common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
    if p.type == "barchart":
        return barchart_b.Panel().x_field("device_id").show_value(common_m.VisibilityMode.AUTO)
    if p.type == "table":
        return table_b.Panel()
    layer = (
        common_b.MapLayerOptions()
        .type("markers")
        .name("Sensoren")
        .location(
            common_b.FrameGeometrySource()
            .mode(common_m.FrameGeometrySourceMode.COORDS)
            .latitude(p.latitude)
            .longitude(p.longitude)
        )
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": fields[0], "fixed": "dark-green"}
                    if fields
                    else {"fixed": "dark-green"},
                    "size": {"fixed": 8},
                    "text": {"field": "device_id", "mode": "field"},
                },
            }
        )
    )
    return geomap_b.Panel().view(geomap_b.MapViewConfig().id("fit")).layers([layer])


def _unit_of(s: StoredData, name: str) -> str | None:
    return next((f.unit for g in s.groups for f in g.fields if f.name == name), None)


def build_panel(p: PanelDecl, panel_id: int, grid: GridDecl, s: StoredData) -> Any:
    """One declared panel as an SDK builder."""
    ds = dash_m.DataSourceRef(type_val="influxdb", uid=datasource_uid(s.connection))
    b = _panel_builder(p, p.fields).id(panel_id).title(p.title).datasource(ds)
    b = b.grid_pos(dash_m.GridPos(h=grid.h, w=grid.w, x=grid.x, y=grid.y))
    if p.description:
        b = b.description(p.description)
    v1 = s.influx.version == 1
    if p.query is not None:
        fmt = "table" if p.type in _TABLE_KINDS else "time_series"
        data: dict[str, Any] = {"refId": "A", "datasource": ds.to_json(), "query": p.query}
        if v1:
            data.update(rawQuery=True, resultFormat=fmt)
        b = b.with_target(RawQuery(data))
    else:
        targets = influxql_targets(s, p) if v1 else flux_targets(s, p)
        several = len(targets) > 1
        for k, (query, fmt) in enumerate(targets):
            b = b.with_target(_target(s, ds, query, fmt, chr(ord("A") + k), several))
        if p.type == "geomap":
            as_tags = [c for c in (p.latitude, p.longitude) if c in s.tags]
            if as_tags:  # tag values are strings; the marker layer needs numbers
                conversions = [{"targetField": c, "destinationType": "number"} for c in as_tags]
                b = b.with_transformation(
                    dash_m.DataTransformerConfig(
                        id_val="convertFieldType", options={"conversions": conversions}
                    )
                )
    units = {f: _unit_of(s, f) for f in p.fields}
    unit = p.unit or next((u for u in units.values() if u), None)
    if unit:
        b = b.unit(unit)
    if p.unit is None and len(set(units.values())) > 1:
        for f, u in units.items():  # fields of different units on one panel
            if u:
                b = b.override_by_name(f, [dash_m.DynamicConfigValue(id_val="unit", value=u)])
    if p.decimals is not None:
        b = b.decimals(p.decimals)
    if p.min is not None:
        b = b.min(p.min)
    if p.max is not None:
        b = b.max(p.max)
    if p.thresholds:
        steps = [dash_m.Threshold(value=t.value, color=t.color) for t in p.thresholds]
        if steps[0].value is not None:  # Grafana's first step is the base (-infinity)
            steps.insert(0, dash_m.Threshold(value=None, color="transparent"))
        b = b.thresholds(dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(steps))
        if p.type == "timeseries":
            b = b.thresholds_style(
                common_b.GraphThresholdsStyleConfig().mode(common_m.GraphThresholdsStyleMode.LINE)
            )
    return b


def build_declared_dashboard(
    validated: ValidatedDeployment, flow: FlowSpec, decl: DashboardDecl, stored: dict[str, StoredData]
) -> GeneratedDashboard:
    """One declared dashboard (validation has checked sources, fields and tags)."""
    uid = dashboard_uid(flow.id, decl)
    sources: list[StoredData | None] = []
    for j in range(len(decl.panels)):
        node_id, _, _ = resolve_source(validated, flow, decl, j)
        sources.append(stored.get(node_id) if node_id else None)
    builder = (
        dash_b.Dashboard(decl.title)
        .uid(uid)
        .tags(list(dict.fromkeys(["klimaflow", f"flow:{flow.id}", *decl.tags])))
        .description(
            f"Deklariert in Flow {flow.id} ({flow.file}). Änderungen hier gehen beim nächsten Provisioning verloren."
        )
        .time(decl.time_from, decl.time_to)
        .timezone("browser")
        .editable()
    )
    if decl.refresh:
        builder = builder.refresh(decl.refresh)
    main = next((s for s in sources if s is not None), None)
    if main is not None:
        ds = dash_m.DataSourceRef(type_val="influxdb", uid=datasource_uid(main.connection))
        for tag, name, label in _variables(main):
            builder = builder.with_variable(_variable(main, ds, tag, name, label))
    grids = layout(decl.panels)
    for j, (p, grid) in enumerate(zip(decl.panels, grids, strict=True)):
        s = sources[j]
        assert s is not None, "validation resolves every panel's source"
        builder = builder.with_panel(build_panel(p, j + 1, grid, s))
    model = builder.build()
    # The SDK's with_panel moves a panel placed at x=0, y=0 (other than the first) to its own
    # cursor, which breaks explicit placements: set every position again.
    for panel, grid in zip(model.panels or [], grids, strict=True):
        panel.grid_pos = dash_m.GridPos(h=grid.h, w=grid.w, x=grid.x, y=grid.y)
    return GeneratedDashboard(uid, decl.title, flow.id, model, folder=decl.folder)


def build_declared(validated: ValidatedDeployment, stored: list[StoredData]) -> list[GeneratedDashboard]:
    """Every dashboard the deployment's flows declare, in file order."""
    by_node = {s.node_id: s for s in stored}
    return [
        build_declared_dashboard(validated, flow, decl, by_node)
        for flow in validated.deployment.flows
        for _, decl in dashboard_entries(flow)
    ]
