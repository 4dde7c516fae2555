"""What the flows store: every ``influxdb-out`` node, its connection, measurements, fields and tags.

Dashboards are derived from this, so a flow that stores a new kind of data gets its
dashboard without anyone clicking one together. Readings from ``ttn-uplink`` carry
field names fixed by the decoders (LSE01 soil sensors, SenseCAP S2120 weather station)
plus radio fields; ``registry-enrich`` adds the site tags and may replace the
measurement by the registry's ``measurement`` column, so those names are read from
the registry file when it can be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from engine.validation import ValidatedDeployment
from nodes.influxdb import InfluxConfig, InfluxOutConfig
from nodes.registry import RegistryEnrichConfig, load_registry
from nodes.ttn import TtnUplinkConfig


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One stored field: its name, German title and Grafana unit id."""

    name: str
    title: str
    unit: str


@dataclass(frozen=True, slots=True)
class SeriesGroup:
    """One kind of data a node stores (e.g. soil readings): the fields shown on one dashboard."""

    key: str
    title: str
    fields: tuple[FieldInfo, ...]


@dataclass(slots=True)
class StoredData:
    """What one ``influxdb-out`` node writes, and where."""

    flow_id: str
    flow_label: str
    node_id: str
    connection: str
    influx: InfluxConfig
    measurements: list[str]
    tags: list[str]
    groups: list[SeriesGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Stored fields shown on no generated dashboard (coordinates from the registry), for declared panels.
    extra_fields: list[str] = field(default_factory=list)
    #: False when the fields are only known at run time: declared panels' fields are not checked.
    fields_known: bool = True


# Grafana unit ids (Grafana's `valueFormats`); `suffix:` for units Grafana has no id for.
_UNIT_BY_SYMBOL: dict[str, str] = {
    "%": "percent",
    "%RH": "humidity",
    "°C": "celsius",
    "µS/cm": "suffix: µS/cm",
    "mS/cm": "suffix: mS/cm",
    "V": "volt",
    "mV": "mvolt",
    "dBm": "dBm",
    "dB": "dB",
    "hPa": "pressurehpa",
    "Pa": "suffix: Pa",
    "lux": "lux",
    "m/s": "velocityms",
    "°": "degree",
    "mm": "lengthmm",
    "mm/h": "suffix: mm/h",
    "m": "lengthm",
}

#: Units by field-name pattern, for fields whose flow declares none (first match wins).
_UNIT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), _UNIT_BY_SYMBOL[u])
    for p, u in (
        (r"humidity", "%RH"),
        (r"temp", "°C"),
        (r"level|pegel|height|hoehe", "m"),
        (r"water|moisture|feuchte", "%"),
        (r"conduct|_ec$|^ec$", "µS/cm"),
        (r"^bat(v|t|tery_v)?$|volt", "V"),
        (r"rssi", "dBm"),
        (r"snr", "dB"),
        (r"pressure|druck", "hPa"),
        (r"light|lux", "lux"),
        (r"wind_speed", "m/s"),
        (r"direction", "°"),
        (r"rain|precip|niederschlag", "mm"),
    )
)


def unit_for(field_name: str, declared: str | None = None) -> str:
    """Grafana unit id of a field: the declared unit symbol if known, else guessed from the name."""
    if declared:
        return _UNIT_BY_SYMBOL.get(declared, f"suffix: {declared}")
    for pattern, unit in _UNIT_PATTERNS:
        if pattern.search(field_name):
            return unit
    return "none"


def declared_unit(value: str) -> str:
    """A unit from ``influxdb-out``'s ``units``: a Grafana unit id, or a symbol this module knows (``°C``)."""
    return _UNIT_BY_SYMBOL.get(value, value)


def _with_units(group: SeriesGroup, units: dict[str, str]) -> SeriesGroup:
    if not any(f.name in units for f in group.fields):
        return group
    fields = tuple(
        FieldInfo(f.name, f.title, declared_unit(units[f.name])) if f.name in units else f
        for f in group.fields
    )
    return SeriesGroup(group.key, group.title, fields)


def _f(name: str, title: str, symbol: str | None = None) -> FieldInfo:
    return FieldInfo(name, title, unit_for(name, symbol))


#: LSE01 soil sensor fields (TTN Device Repository names, see nodes/decoders/lse01.py).
SOIL = SeriesGroup(
    "boden",
    "Boden",
    (
        _f("water_SOIL", "Bodenfeuchte", "%"),
        _f("temp_SOIL", "Bodentemperatur", "°C"),
        _f("conduct_SOIL", "Leitfähigkeit", "µS/cm"),
        _f("TempC_DS18B20", "Temperatur (DS18B20)", "°C"),
        _f("Bat", "Batterie", "V"),
    ),
)
#: SenseCAP S2120 fields (nodes/decoders/sensecap_s2120.py; pressure in Pa, battery in %).
WEATHER = SeriesGroup(
    "wetter",
    "Wetter",
    (
        _f("air_temperature", "Lufttemperatur", "°C"),
        _f("air_humidity", "Luftfeuchte", "%RH"),
        _f("barometric_pressure", "Luftdruck", "Pa"),
        _f("rain_hourly", "Niederschlag", "mm/h"),
        _f("wind_speed", "Windgeschwindigkeit", "m/s"),
        _f("wind_direction", "Windrichtung", "°"),
        _f("light_intensity", "Helligkeit", "lux"),
        _f("uv_index", "UV-Index"),
        _f("battery", "Batterie", "%"),
    ),
)
#: Radio quality of every uplink (ttn-uplink with `radio: true`).
RADIO = SeriesGroup("funk", "Funk", (_f("rssi", "RSSI", "dBm"), _f("snr", "SNR", "dB")))

_TTN_TAGS = ("device_id", "dev_eui", "application")
_REGISTRY_TAGS = ("location", "soil_type", "land_use")


def _ancestors_of_type(validated: ValidatedDeployment, node_id: str, type_name: str) -> list[str]:
    graph: nx.MultiDiGraph = validated.graph
    found = [n for n in nx.ancestors(graph, node_id) if graph.nodes[n].get("type") == type_name]
    return sorted(found)


def _registry_measurements(path: str, flow_file: str) -> list[str] | None:
    candidates = [Path(path)]
    if flow_file and not Path(path).is_absolute():
        candidates.append(Path(flow_file).parent / path)
    for candidate in candidates:
        if candidate.is_file():
            load = load_registry(candidate)
            return sorted({d.measurement for d in load.devices.values() if d.measurement})
    return None


def discover(validated: ValidatedDeployment) -> list[StoredData]:
    """Every ``influxdb-out`` node of the deployment with what it stores, in flow order."""
    out: list[StoredData] = []
    for flow in validated.deployment.flows:
        for node in flow.nodes:
            if node.type != "influxdb-out" or node.disabled:
                continue
            cfg = validated.node_configs[node.id]
            assert isinstance(cfg, InfluxOutConfig)
            influx = validated.connection_configs[cfg.server]
            assert isinstance(influx, InfluxConfig)
            stored = StoredData(flow.id, flow.label, node.id, cfg.server, influx, [], [])
            if cfg.measurement is not None or cfg.measurement_from is not None:
                _map_mode(cfg, stored)
            else:
                _reading_mode(validated, node.id, flow.file, cfg, stored)
            stored.groups = [_with_units(g, cfg.units) for g in stored.groups]
            shown = {f.name for g in stored.groups for f in g.fields}
            stored.extra_fields += [k for k in cfg.units if k not in shown and k not in stored.extra_fields]
            out.append(stored)
    return out


def _map_mode(cfg: InfluxOutConfig, stored: StoredData) -> None:
    if cfg.measurement is None:
        stored.notes.append("measurement_from: measurement names are only known at run time; no dashboard")
        stored.fields_known = False
        return
    stored.measurements = [cfg.measurement]
    stored.tags = sorted({*cfg.tags, *cfg.static_tags})
    # Without `fields` every numeric payload key is stored; `units` then names the ones to show.
    names = list(cfg.fields) if cfg.fields is not None else list(cfg.units)
    if not names:
        stored.notes.append("fields not declared (every numeric payload key): no panels")
        stored.fields_known = False
        return
    if cfg.fields is None:
        stored.fields_known = False
    fields = tuple(FieldInfo(name, name, unit_for(name)) for name in names)
    stored.groups.append(SeriesGroup(cfg.measurement, cfg.measurement, fields))


def _reading_mode(
    validated: ValidatedDeployment, node_id: str, flow_file: str, cfg: InfluxOutConfig, stored: StoredData
) -> None:
    uplinks = _ancestors_of_type(validated, node_id, "ttn-uplink")
    if not uplinks:
        stored.notes.append("readings from no known source (ttn-uplink): fields unknown, no dashboard")
        stored.fields_known = False
        return
    measurements: set[str] = set()
    radio = False
    for uid in uplinks:
        ucfg = validated.node_configs[uid]
        assert isinstance(ucfg, TtnUplinkConfig)
        measurements.add(ucfg.measurement)
        radio = radio or ucfg.radio
    tags = set(_TTN_TAGS) | set(cfg.static_tags)
    for rid in _ancestors_of_type(validated, node_id, "registry-enrich"):
        rcfg = validated.node_configs[rid]
        assert isinstance(rcfg, RegistryEnrichConfig)
        tags |= set(_REGISTRY_TAGS)
        stored.extra_fields = ["latitude", "longitude"]  # registry coordinates, as fields
        if rcfg.measurement_tag:
            tags.add(rcfg.measurement_tag)
        if rcfg.set_measurement:
            names = _registry_measurements(rcfg.path, flow_file)
            if names is None:
                stored.notes.append(f"registry {rcfg.path} not readable: its measurement names are missing")
            else:
                measurements.update(names)
    stored.measurements = sorted(measurements)
    stored.tags = sorted(tags)
    stored.groups.extend([SOIL, WEATHER] + ([RADIO] if radio else []))
