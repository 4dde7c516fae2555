"""Dashboards declared in a flow file's top-level ``dashboards:`` section: the model and its checks.

The section is checked in two steps. :class:`DashboardDecl` (pydantic, no engine
imports) checks each entry on its own: panel kinds, thresholds, colours, grid
placement; :mod:`engine.validation` runs it on every load, so ``klimaflow validate``,
``run``, reload and the editor API report ``FILE:LINE: dashboards.0.panels.1.type: ...``.
:func:`check_declared` then checks entries against what the flows store (the source
node, its measurements, fields and tags), which needs the validated deployment.
Values are not ``${VAR}``-substituted: raw queries use Grafana's own ``$var`` syntax.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from engine.model import FlowSpec
    from engine.validation import Issue, ValidatedDeployment
    from grafana_provisioning.discovery import StoredData

PANEL_KINDS = ("timeseries", "stat", "gauge", "bargauge", "barchart", "table", "geomap")
PanelKind = Literal["timeseries", "stat", "gauge", "bargauge", "barchart", "table", "geomap"]
GRID_COLUMNS = 24

#: Grafana's named colours (its palette, with the shades it offers for the six hues).
_HUES = ("red", "orange", "yellow", "green", "blue", "purple")
NAMED_COLORS = frozenset(
    [*_HUES, "transparent", "text"]
    + [f"{shade}-{hue}" for hue in _HUES for shade in ("dark", "semi-dark", "light", "super-light")]
)
_CSS_COLOR = re.compile(
    r"^(#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6}|#[0-9a-fA-F]{8}|rgba?\(\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*(,\s*[0-9.]+\s*)?\))$"
)
UID_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"


class LocatedValueError(ValueError):
    """A problem with part of the validated value: validation appends ``loc`` to the field's location."""

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ThresholdStep(_Strict):
    """One step: from ``value`` on (the first step has none: from -infinity), the colour."""

    value: float | None = Field(
        default=None, description="Lower bound; omitted only on the first (base) step."
    )
    color: str = Field(description="Grafana colour name (green, dark-red, ...) or #rrggbb / rgb(...).")

    @field_validator("color")
    @classmethod
    def _color(cls, v: str) -> str:
        if v in NAMED_COLORS or _CSS_COLOR.match(v):
            return v
        hint = difflib.get_close_matches(v, sorted(NAMED_COLORS), n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown colour {v!r}{did} (a Grafana colour name, #rrggbb or rgb(r, g, b))")


class GridDecl(_Strict):
    """Placement on Grafana's 24-column grid (units: columns and rows of 30 px)."""

    x: int = Field(ge=0, lt=GRID_COLUMNS)
    y: int = Field(ge=0)
    w: int = Field(ge=1, le=GRID_COLUMNS)
    h: int = Field(ge=1)

    @model_validator(mode="after")
    def _fits(self) -> GridDecl:
        if self.x + self.w > GRID_COLUMNS:
            raise ValueError(f"x + w = {self.x + self.w} exceeds the grid's {GRID_COLUMNS} columns")
        return self


class PanelDecl(_Strict):
    """One panel: what it shows (fields of the stored data, or a raw query) and how."""

    type: str = Field(description="timeseries, stat, gauge, bargauge, barchart, table or geomap.")
    title: str
    description: str | None = None
    source: str | None = Field(
        default=None, description="The `influxdb-out` node whose data it shows (default: the dashboard's)."
    )
    measurement: str | None = Field(
        default=None, description="One of the node's measurements (default: all it writes)."
    )
    fields: list[str] = Field(default_factory=list, description="Stored fields shown (not with `query`).")
    tags: dict[str, str] = Field(default_factory=dict, description="Tag filter: tag -> exact value.")
    query: str | None = Field(
        default=None, description="Raw InfluxQL (1.x) or Flux (2.x) instead of fields, with Grafana's macros."
    )
    unit: str | None = Field(default=None, description="Grafana unit id; default: the field's declared unit.")
    decimals: int | None = Field(default=None, ge=0, le=10)
    min: float | None = None
    max: float | None = None
    thresholds: list[ThresholdStep] | None = None
    latitude: str = Field(default="latitude", description="geomap: field or tag holding the latitude.")
    longitude: str = Field(default="longitude", description="geomap: field or tag holding the longitude.")
    grid: GridDecl | None = Field(default=None, description="Placement; default: first free place.")

    @field_validator("type")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v in PANEL_KINDS:
            return v
        hint = difflib.get_close_matches(v, PANEL_KINDS, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown panel type {v!r}{did} (known: {', '.join(PANEL_KINDS)})")

    @field_validator("thresholds")
    @classmethod
    def _steps(cls, steps: list[ThresholdStep] | None) -> list[ThresholdStep] | None:
        if not steps:
            return steps
        previous: float | None = None
        for i, step in enumerate(steps):
            if step.value is None and i > 0:
                raise LocatedValueError("only the first step may omit value", (i,))
            if step.value is not None and previous is not None and step.value <= previous:
                raise LocatedValueError(
                    f"{step.value:g} must be greater than the step before ({previous:g})", (i, "value")
                )
            if step.value is not None:
                previous = step.value
        return steps

    @model_validator(mode="after")
    def _what(self) -> PanelDecl:
        if self.query is not None and (self.fields or self.measurement or self.tags):
            raise ValueError("give either query or fields (with measurement, tags), not both")
        if self.query is None and not self.fields:
            raise ValueError("fields (at least one) or query is required")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be less than max ({self.max:g})")
        return self


class DashboardDecl(_Strict):
    """A dashboard declared in a flow file (top-level ``dashboards:`` list)."""

    uid: str | None = Field(
        default=None, description="Stable uid (URLs and embeds); default derived from flow id and title."
    )
    title: str
    folder: str | None = Field(
        default=None, pattern=r"^[^/\\.][^/\\]*$", description="Grafana folder; default: the flow id."
    )
    source: str | None = Field(
        default=None, description="The `influxdb-out` node shown; default: the flow's only one."
    )
    time_from: str = Field(default="now-7d", alias="from", description="Start of the time range.")
    time_to: str = Field(default="now", alias="to", description="End of the time range.")
    refresh: str = Field(default="5m", pattern=r"^(\d+(s|m|h|d))?$", description="Auto refresh; '' = off.")
    tags: list[str] = Field(default_factory=list)
    panels: list[PanelDecl] = Field(min_length=1)

    @field_validator("uid")
    @classmethod
    def _uid(cls, v: str | None) -> str | None:
        if v is not None and not re.match(UID_PATTERN, v):
            raise ValueError(f"uid {v!r}: at most 40 letters, digits, '-' and '_' (Grafana's limit)")
        return v

    @model_validator(mode="after")
    def _no_overlap(self) -> DashboardDecl:
        placed = [(i, p.grid) for i, p in enumerate(self.panels) if p.grid is not None]
        for n, (i, a) in enumerate(placed):
            for j, b in placed[n + 1 :]:
                if overlaps(a, b):
                    raise LocatedValueError(f"overlaps the grid of panel {i}", ("panels", j, "grid"))
        return self


def overlaps(a: GridDecl, b: GridDecl) -> bool:
    """Whether two grid rectangles share a cell."""
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def dashboard_entries(flow: FlowSpec) -> Iterator[tuple[int, DashboardDecl]]:
    """(index, model) of every valid entry of a flow's ``dashboards`` section."""
    for i, item in enumerate(flow.dashboards):
        try:
            yield i, DashboardDecl.model_validate(item)
        except ValueError:
            continue


def _influx_out_nodes(validated: ValidatedDeployment, flow: FlowSpec) -> list[str]:
    return [n.id for n in flow.nodes if n.type == "influxdb-out" and n.id in validated.node_configs]


def resolve_source(
    validated: ValidatedDeployment, flow: FlowSpec, decl: DashboardDecl, index: int
) -> tuple[str | None, str | None, tuple[Any, ...]]:
    """(node id, error, offending key's path within the dashboard) of the node panel ``index`` shows."""
    panel = decl.panels[index]
    path: tuple[Any, ...]
    if panel.source is not None:
        name, path = panel.source, ("panels", index, "source")
    elif decl.source is not None:
        name, path = decl.source, ("source",)
    else:
        own = _influx_out_nodes(validated, flow)
        if len(own) == 1:
            return own[0], None, ()
        found = "none" if not own else ", ".join(own)
        return (
            None,
            f"source not set and the flow has no single influxdb-out node ({found})",
            ("panels", index),
        )
    spec = validated.deployment.nodes().get(name)
    if spec is None or spec.type != "influxdb-out" or name not in validated.node_configs:
        known = [n for n, s in validated.deployment.nodes().items() if s.type == "influxdb-out"]
        hint = difflib.get_close_matches(name, known, n=1)
        did = (
            f"; did you mean {hint[0]!r}?" if hint else f" (influxdb-out nodes: {', '.join(known) or 'none'})"
        )
        return None, f"{name!r} is not an enabled influxdb-out node{did}", path
    return name, None, ()


def known_fields(stored: StoredData) -> set[str]:
    """Every field name the node is known to store."""
    return {f.name for g in stored.groups for f in g.fields} | set(stored.extra_fields)


def check_declared(validated: ValidatedDeployment) -> list[Issue]:
    """Declared dashboards against what the flows store: source node, measurement, fields, tags, uids."""
    from engine.validation import Issue
    from grafana_provisioning.discovery import discover

    flows = [f for f in validated.deployment.flows if f.dashboards]
    if not flows:
        return []
    from grafana_provisioning.dashboards import stable_uid

    stored = {s.node_id: s for s in discover(validated)}
    issues: list[Issue] = []
    # Generated dashboards' uids first: a declared one must not take theirs.
    uids: dict[str, str] = {
        stable_uid(s.flow_id, s.node_id, g.key): f"the dashboard generated for node {s.node_id}"
        for s in stored.values()
        if s.measurements
        for g in s.groups
    }
    seen: set[tuple[str, tuple[Any, ...], str]] = set()

    def add(flow: FlowSpec, path: tuple[Any, ...], message: str) -> None:
        if (flow.id, path, message) in seen:  # a dashboard-level source error, once
            return
        seen.add((flow.id, path, message))
        issues.append(
            Issue(
                "error",
                message,
                "dashboard",
                file=flow.file,
                line=flow.source.line(path),
                flow=flow.id,
                field=".".join(map(str, path)),
            )
        )

    for flow in flows:
        for i, decl in dashboard_entries(flow):
            base = ("dashboards", i)
            uid = dashboard_uid(flow.id, decl)
            where = (
                f"the dashboard at {flow.file}:{flow.source.line((*base, 'uid' if decl.uid else 'title'))}"
            )
            if uid in uids:
                add(
                    flow,
                    (*base, "uid" if decl.uid else "title"),
                    f"dashboard uid {uid!r} already used by {uids[uid]}",
                )
            uids.setdefault(uid, where)
            for j, panel in enumerate(decl.panels):
                ppath = (*base, "panels", j)
                node_id, err, rel = resolve_source(validated, flow, decl, j)
                if err is not None:
                    add(flow, (*base, *rel), err)
                    continue
                assert node_id is not None
                s = stored.get(node_id)
                if s is None or panel.query is not None:
                    continue
                for msg_path, msg in _panel_problems(s, panel):
                    add(flow, (*ppath, *msg_path), msg)
    return issues


def _panel_problems(s: StoredData, panel: PanelDecl) -> Iterator[tuple[tuple[Any, ...], str]]:
    if panel.measurement is not None and s.measurements and panel.measurement not in s.measurements:
        yield (
            ("measurement",),
            (
                f"node {s.node_id} writes no measurement {panel.measurement!r} (it writes: {', '.join(s.measurements)})"
            ),
        )
    if not s.fields_known:
        return
    known = known_fields(s)
    wanted: list[tuple[tuple[Any, ...], str]] = [(("fields", k), f) for k, f in enumerate(panel.fields)]
    if panel.type == "geomap":
        for key in ("latitude", "longitude"):
            name = getattr(panel, key)
            if name not in s.tags:
                wanted.append(((key,), name))
    for path, name in wanted:
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=1)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            where = f"node {s.node_id} stores: {', '.join(sorted(known))}"
            if path[0] != "fields":
                where += f"; set {path[0]} to the field or tag holding it"
            yield path, f"unknown field {name!r}{did} ({where})"
    for tag in panel.tags:
        if tag not in s.tags:
            yield (
                ("tags", tag),
                f"unknown tag {tag!r} (node {s.node_id} writes: {', '.join(s.tags) or 'none'})",
            )


def dashboard_uid(flow_id: str, decl: DashboardDecl) -> str:
    """The declared uid, else one derived from flow id and title (stable while the title stays)."""
    from grafana_provisioning.dashboards import stable_uid

    return decl.uid or stable_uid(flow_id, decl.title)


def dashboard_schema() -> dict[str, Any]:
    """JSON Schema of one ``dashboards`` entry (for the published flow-file schema)."""
    return DashboardDecl.model_json_schema(by_alias=True)
