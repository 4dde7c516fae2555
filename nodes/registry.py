"""``registry-enrich``: join readings with the sensor registry CSV (``ttn-sensoren.csv``).

The registry is a hand-edited file (``device_id;location;measurement;soil_type;land_use;
latitude;longitude``) and it is dirty in ways that are documented in shared/data/SOURCES.md.
Every row is either understood — repaired, with a note — or reported and skipped; nothing
raises. The load report (a list of ``{line, reason, action}``) is what the CLI and editor show.

Repairs, and why they are safe:

* comma instead of ``;`` after the device id (row one field short, first field contains a
  comma): split at that comma — device ids never contain commas.
* decimal comma in a coordinate (``12,3630350813424``): read as a decimal point.
* an extra *empty* field (row one field long): dropped, which realigns the columns.
* ``soil_type`` or ``land_use`` missing (row one field short): the value present is assigned
  to the column whose vocabulary (built from the complete rows of the same file) contains it.
* inconsistent spellings of location / soil_type / land_use (``Bad belzig``, ``Weide/Wiese``,
  typo ``Garten/Acke``): replaced by the file's most common spelling of the same value
  (same words ignoring case and ``/`` order, or one-off spellings at least 90 % similar).
* duplicate device id: the **first row wins** and the later one is reported and skipped. A
  device id identifies exactly one radio, so two rows are two claims for one data stream; the
  earlier one is the established registration, and "first wins" means appending a row can
  never silently move an existing sensor's history to another site.
* coordinates far (``max_distance_km``) from the other sensors of the same location are
  reported but kept: they may be wrong, but there is nothing better to put there.

Readings of devices that are not in the registry are passed on with ``registered="false"``,
never dropped. Lookup is by ``tags.device_id`` (case-insensitive), then by
``"eui-" + tags.dev_eui`` for devices renamed in TTN but registered under their EUI name.
"""

from __future__ import annotations

import difflib
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from engine.errors import ConfigError, MessageError
from engine.message import Message
from engine.node import Node
from engine.types import Duration, NodeConfig

COLUMNS = ("device_id", "location", "measurement", "soil_type", "land_use", "latitude", "longitude")
_VOCAB_COLUMNS = ("location", "soil_type", "land_use")


@dataclass(frozen=True, slots=True)
class Problem:
    """One irregularity of the registry file and what was done about it."""

    line: int
    reason: str
    action: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Device:
    """One registered sensor, with the tags and fields it contributes to readings."""

    device_id: str
    line: int
    location: str | None
    measurement: str | None
    soil_type: str | None
    land_use: str | None
    latitude: float | None
    longitude: float | None

    def tags(self) -> dict[str, str]:
        out = {"registered": "true"}
        for name in ("location", "soil_type", "land_use"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    def fields(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.latitude is not None and self.longitude is not None:
            out["latitude"] = self.latitude
            out["longitude"] = self.longitude
        return out


@dataclass
class RegistryLoad:
    """Result of reading a registry file: the devices understood and the load report."""

    devices: dict[str, Device] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def report(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.problems]


# -- parsing ------------------------------------------------------------------------------


def _key(value: str) -> str:
    """Spelling-insensitive identity of a category value: case and ``/`` order ignored."""
    return "/".join(sorted(p.strip().casefold() for p in value.split("/")))


def _coordinate(raw: str, name: str, line: int, problems: list[Problem]) -> float | None:
    text = raw.strip()
    if not text:
        problems.append(Problem(line, f"{name} is empty", "kept without coordinates"))
        return None
    if text.count(",") == 1 and "." not in text:
        fixed = text.replace(",", ".")
        try:
            value = float(fixed)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            problems.append(Problem(line, f"decimal comma in {name} {text!r}", f"repaired: read as {fixed}"))
            text = fixed
    try:
        value = float(text)
    except ValueError:
        problems.append(Problem(line, f"{name} {text!r} is not a number", "kept without coordinates"))
        return None
    limit = 90.0 if name == "latitude" else 180.0
    if not math.isfinite(value) or abs(value) > limit:
        problems.append(Problem(line, f"{name} {text!r} is out of range", "kept without coordinates"))
        return None
    return value


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def parse_registry(text: str, *, max_distance_km: float = 10.0) -> RegistryLoad:
    """Understand or report every row of a registry text; raises ConfigError only for a wrong header."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or not lines[0].strip():
        raise ConfigError("registry file is empty (expected a header line)")
    header = [h.strip().casefold() for h in lines[0].split(";")]
    if "device_id" not in header:
        raise ConfigError(
            f"line 1: header {lines[0]!r} has no device_id column (expected {';'.join(COLUMNS)})"
        )
    ncols = len(header)
    col = {name: i for i, name in enumerate(header)}
    problems: list[Problem] = []

    complete: list[tuple[int, list[str]]] = []
    short: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # blank lines (the file ends with several) carry nothing to lose
        parts = [p.strip() for p in line.split(";")]
        if len(parts) == ncols - 1 and "," in parts[0]:
            first, rest = parts[0].split(",", 1)
            parts[0:1] = [first.strip(), rest.strip()]
            problems.append(
                Problem(
                    lineno,
                    "comma instead of ';' after the device id",
                    f"repaired: split into {first.strip()!r} and {rest.strip()!r}",
                )
            )
        while len(parts) > ncols and "" in parts[1:]:
            # Prefer a trailing empty field (a stray ';' at the end), else the first empty one.
            idx = len(parts) - 1 if parts[-1] == "" else parts.index("", 1)
            del parts[idx]
            problems.append(Problem(lineno, f"extra empty field {idx + 1}", "repaired: field dropped"))
        if len(parts) == ncols:
            complete.append((lineno, parts))
        elif len(parts) == ncols - 1 and "soil_type" in col and "land_use" in col:
            short.append((lineno, parts))
        else:
            problems.append(Problem(lineno, f"{len(parts)} fields, expected {ncols}", "skipped"))

    # Vocabularies of the complete rows decide what a lone soil_type/land_use value is.
    soil_keys = {_key(p[col["soil_type"]]) for _, p in complete if p[col["soil_type"]]}
    land_keys = {_key(p[col["land_use"]]) for _, p in complete if p[col["land_use"]]}
    rows = list(complete)
    if short:
        pos = min(col["soil_type"], col["land_use"])
        if abs(col["soil_type"] - col["land_use"]) != 1:
            for lineno, parts in short:
                problems.append(Problem(lineno, f"{len(parts)} fields, expected {ncols}", "skipped"))
        else:
            for lineno, parts in short:
                value = parts[pos]
                k = _key(value)
                is_land, is_soil = k in land_keys, k in soil_keys
                if is_land == is_soil:
                    problems.append(
                        Problem(
                            lineno,
                            f"{len(parts)} fields and {value!r} is not clearly a soil_type or a land_use",
                            "skipped",
                        )
                    )
                    continue
                missing = "soil_type" if is_land else "land_use"
                fixed = list(parts)
                fixed.insert(col[missing], "")
                problems.append(
                    Problem(
                        lineno,
                        f"{missing} missing ({len(parts)} fields; {value!r} is a {'land_use' if is_land else 'soil_type'})",
                        f"repaired: {missing} left empty",
                    )
                )
                rows.append((lineno, fixed))
        rows.sort(key=lambda r: r[0])

    # Canonical spellings: the most common raw spelling of each key; rare one-off typos
    # join an established key if they are very similar.
    canon: dict[str, dict[str, str]] = {}
    for name in _VOCAB_COLUMNS:
        if name not in col:
            continue
        i = col[name]
        counts = Counter(p[i] for _, p in rows if p[i])
        by_key: dict[str, Counter[str]] = {}
        for raw, n in counts.items():
            by_key.setdefault(_key(raw), Counter())[raw] += n
        best = {k: c.most_common(1)[0][0] for k, c in by_key.items()}
        established = [k for k, c in by_key.items() if sum(c.values()) >= 2]
        mapping: dict[str, str] = {}
        for k, c in by_key.items():
            target = best[k]
            if sum(c.values()) == 1:
                close = difflib.get_close_matches(k, [e for e in established if e != k], n=1, cutoff=0.9)
                if close:
                    target = best[close[0]]
            for raw in c:
                mapping[raw] = target
        canon[name] = mapping

    result = RegistryLoad()
    for lineno, parts in rows:

        def get(name: str, parts: list[str] = parts) -> str:
            return parts[col[name]] if name in col else ""

        device_id = get("device_id")
        if not device_id:
            problems.append(Problem(lineno, "empty device_id", "skipped"))
            continue
        key = device_id.lower()
        if key != device_id:
            problems.append(
                Problem(
                    lineno,
                    f"device_id {device_id!r} is not lower-case (TTN ids are)",
                    f"repaired: read as {key!r}",
                )
            )
        earlier = result.devices.get(key)
        if earlier is not None:
            problems.append(
                Problem(
                    lineno,
                    f"duplicate device_id {key} (line {earlier.line}: {earlier.location} / {earlier.measurement}; "
                    f"this row: {get('location')} / {get('measurement')})",
                    f"skipped: first row (line {earlier.line}) kept",
                )
            )
            continue
        values: dict[str, str | None] = {}
        for name in _VOCAB_COLUMNS:
            raw = get(name)
            spelled = canon.get(name, {}).get(raw, raw) if raw else raw
            if raw and spelled != raw:
                problems.append(
                    Problem(
                        lineno, f"inconsistent spelling of {name} {raw!r}", f"repaired: read as {spelled!r}"
                    )
                )
            values[name] = spelled or None
        lat = _coordinate(get("latitude"), "latitude", lineno, problems) if "latitude" in col else None
        lon = _coordinate(get("longitude"), "longitude", lineno, problems) if "longitude" in col else None
        if lat is None or lon is None:
            lat = lon = None
        result.devices[key] = Device(
            device_id=key,
            line=lineno,
            location=values.get("location"),
            measurement=get("measurement") or None,
            soil_type=values.get("soil_type"),
            land_use=values.get("land_use"),
            latitude=lat,
            longitude=lon,
        )

    # Plausibility: far from the median position of the same location's sensors.
    groups: dict[str, list[Device]] = {}
    for dev in result.devices.values():
        if dev.location and dev.latitude is not None and dev.longitude is not None:
            groups.setdefault(dev.location, []).append(dev)
    for location, devs in groups.items():
        if len(devs) < 3:
            continue
        mlat = statistics.median(d.latitude for d in devs if d.latitude is not None)
        mlon = statistics.median(d.longitude for d in devs if d.longitude is not None)
        for d in devs:
            assert d.latitude is not None
            assert d.longitude is not None
            km = _distance_km(d.latitude, d.longitude, mlat, mlon)
            if km > max_distance_km:
                problems.append(
                    Problem(
                        d.line,
                        f"coordinates {d.latitude}, {d.longitude} are {km:.0f} km from the other {location!r} sensors",
                        "kept",
                    )
                )

    problems.sort(key=lambda p: p.line)
    result.problems = problems
    return result


def load_registry(path: str | os.PathLike[str], *, max_distance_km: float = 10.0) -> RegistryLoad:
    """Read and parse a registry file; raises ConfigError if it cannot be used at all."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read registry {os.fspath(path)!r}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        load = parse_registry(data.decode("cp1252", errors="replace"), max_distance_km=max_distance_km)
        load.problems.insert(0, Problem(0, "file is not UTF-8", "read as Windows-1252"))
        return load
    return parse_registry(text, max_distance_km=max_distance_km)


# -- the node ------------------------------------------------------------------------------


class RegistryEnrichConfig(NodeConfig):
    """Where the registry is and what it contributes to a reading."""

    path: str = Field(description="Path of the registry CSV (`ttn-sensoren.csv`); reloaded when it changes.")
    check_interval: Duration = Field(
        default=5.0,
        description="Look at the file's modification time and size at most this often (0: every message).",
    )
    set_measurement: bool = Field(
        default=True,
        description="Replace the reading's measurement by the registry's `measurement` column when present.",
    )
    measurement_tag: str | None = Field(
        default=None,
        description="Also store the registry's `measurement` value in this tag (e.g. `site`); empty: no tag.",
    )
    max_distance_km: float = Field(
        default=10.0,
        gt=0,
        description="Report rows whose coordinates are farther than this from the median of their location (3+ rows).",
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    tags: dict[str, str]
    fields: dict[str, float]
    measurement: str | None


class RegistryEnrichNode(Node):
    """Add location, soil type, land use and coordinates from the sensor registry to readings."""

    type_name = "registry-enrich"
    category = "function"
    Config = RegistryEnrichConfig
    outputs = ("out",)
    color = "#c7e9c0"
    icon = "registry"
    config: RegistryEnrichConfig

    _clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._load = RegistryLoad()
        self._entries: dict[str, _Entry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._reload_error: str | None = None
        self._unregistered: dict[str, str] = {"registered": "false"}

    # -- registry state ------------------------------------------------------------------

    def load_report(self) -> list[dict[str, Any]]:
        """Problems of the currently loaded registry: ``[{line, reason, action}, ...]``."""
        return self._load.report()

    @property
    def devices(self) -> dict[str, Device]:
        return self._load.devices

    def _signature_of(self) -> tuple[int, int, int]:
        st = os.stat(self.config.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _install(self, load: RegistryLoad) -> None:
        c = self.config
        entries: dict[str, _Entry] = {}
        for key, dev in load.devices.items():
            tags = dev.tags()
            if c.measurement_tag and dev.measurement:
                tags[c.measurement_tag] = dev.measurement
            entries[key] = _Entry(tags, dev.fields(), dev.measurement if c.set_measurement else None)
        self._load = load
        self._entries = entries

    def _show_status(self) -> None:
        n, m = len(self._load.devices), len(self._load.problems)
        text = f"{n} devices, {m} problems"
        if self._reload_error:
            self.status("warning" if n else "error", f"{text}; {self._reload_error}"[:160])
        else:
            self.status("warning" if m else "ok", text)

    def reload(self, force: bool = False) -> bool:
        """Reload if the file changed (or ``force``); a failed reload keeps the previous registry."""
        try:
            sig = self._signature_of()
        except OSError as exc:
            self._reload_error = f"reload failed: cannot read {self.config.path}: {exc.strerror or exc}"
            self._signature = None
            self._show_status()
            return False
        if sig == self._signature and not force:
            return False
        self._signature = sig
        try:
            load = load_registry(self.config.path, max_distance_km=self.config.max_distance_km)
        except Exception as exc:  # a broken file must never take the flow down
            self._reload_error = f"reload failed: {exc}"
            self.log.warning("registry %s: %s; keeping the previous registry", self.config.path, exc)
            self._show_status()
            return False
        self._reload_error = None
        self._install(load)
        self.log.info(
            "registry %s: %d devices, %d problems", self.config.path, len(load.devices), len(load.problems)
        )
        self._show_status()
        return True

    async def start(self) -> None:
        self._next_check = self._clock() + self.config.check_interval
        self.reload(force=True)

    # -- messages ------------------------------------------------------------------------

    async def on_message(self, msg: Message) -> None:
        self._check_reload()
        self._enrich(msg)
        await self.emit(msg)

    async def on_batch(self, msgs: list[Message]) -> None:
        self._check_reload()
        out: list[Message] = []
        for msg in msgs:
            try:
                self._enrich(msg)
            except MessageError as exc:
                await self.emit_many(out)
                out = []
                await self.emit_error(msg, exc)
                continue
            out.append(msg)
        await self.emit_many(out)

    def _check_reload(self) -> None:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.config.check_interval
            self.reload()

    def _enrich(self, msg: Message) -> None:
        reading = msg.payload
        tags = reading.get("tags") if type(reading) is dict else None
        if type(tags) is not dict:
            raise MessageError("registry-enrich expects a reading payload with a tags object")
        device_id = tags.get("device_id") or msg.meta.get("device_id")
        if type(device_id) is not str or not device_id:
            raise MessageError("reading has no tags.device_id")
        entries = self._entries
        entry = entries.get(device_id) or entries.get(device_id.lower())
        if entry is None:
            eui = tags.get("dev_eui")
            if type(eui) is str and eui:
                entry = entries.get("eui-" + eui.lower())
        if entry is None:
            tags.update(self._unregistered)
        else:
            tags.update(entry.tags)
            if entry.fields:
                fields = reading.get("fields")
                if type(fields) is dict:
                    fields.update(entry.fields)
                else:
                    reading["fields"] = dict(entry.fields)
            if entry.measurement:
                reading["measurement"] = entry.measurement
