"""``groundwater-csv``: groundwater levels of the Auskunftsplattform Wasser Brandenburg (APW).

Documented format (``Auskunftsplattform Wasser Land Brandenburg/README.md``): one file per
station named ``ID,Latitude,Longitude.csv`` — the coordinates exist only in the file name —
``;``-separated with the header ``"Datum";"Präfix";"Wasserstand(GOK) [cm u. GOK]";"Hinweise"``.
The portal delivers a station as CSV or as ZIP; for a ZIP member whose own name does not
carry the coordinates, the archive's name (``ID,LAT,LON.zip``) does.

Decisions, and why:

* **One point per row** at local midnight of ``Datum`` (Europe/Berlin), tag ``station``; the
  sampling is irregular (years apart early on, weekly later), so nothing is resampled.
* **The level is a float** (``depth_below_surface_cm``): the files hold whole centimetres
  today, but one ``596,5`` later would otherwise be an InfluxDB field type conflict.
* **The header is checked**, including the unit: a file in metres above sea level (the
  portal offers that too) would silently mix with centimetres below ground otherwise.
* **The quality note is kept** as string fields: ``note`` (``Hinweise``: ``Geprüft``,
  ``Ungeprüft``, ``Geprüft, Beeinflusst``) and ``prefix`` (``Präfix``, e.g. ``<``), each only
  when not empty.
* **Coordinates are fields** (``latitude``/``longitude``), not tags: two station ids share
  the same coordinates in the real data, and a corrected coordinate must not split a series.
* **A second row for the same date is rejected**: it would overwrite the first in InfluxDB,
  and the printed point count would no longer match what is stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import Field

from nodes.opendata._base import FileInfo, FileParserNode, ParserConfig, Rejection
from nodes.opendata._text import (
    csv_lines,
    fit_fields,
    header_key,
    header_names,
    parse_german_date,
    parse_number,
)
from nodes.ttn import FieldValue, Reading

_STATION_FILE = re.compile(
    r"^\s*(?P<id>\d+)\s*,\s*(?P<lat>[+-]?\d+(?:\.\d+)?)\s*,\s*(?P<lon>[+-]?\d+(?:\.\d+)?)\s*\.(?:csv|zip)$",
    re.IGNORECASE,
)
_LEADING_ID = re.compile(r"^(\d+)(?=[,._\s-]|$)")
HEADER = ("Datum", "Präfix", "Wasserstand(GOK) [cm u. GOK]", "Hinweise")
_LEVEL_HEADER = re.compile(r"^wasserstand\s*\(gok\)\s*\[\s*cm\s+u\.?\s*gok\s*\]$")


class GroundwaterConfig(ParserConfig):
    """Groundwater level files (CSV, or ZIP members via `zip`) of the Auskunftsplattform Wasser Brandenburg.

    Station id and coordinates come from the file name `ID,LAT,LON.csv` (for a ZIP member
    whose name lacks them: the archive's name `ID,LAT,LON.zip`). Each row becomes one
    reading: tag `station`; fields `depth_below_surface_cm` (float), `latitude`,
    `longitude`, and the quality notes `note` (Hinweise) and `prefix` (Präfix) when not
    empty; time = the row's date at local midnight.
    """

    measurement: str = Field(default="groundwater", min_length=1, description="Measurement name.")


@dataclass(frozen=True, slots=True)
class Station:
    id: str
    latitude: float
    longitude: float


def station_of(file: FileInfo) -> Station | Rejection:
    """Station id and coordinates from the file name, else from the ZIP archive's name."""
    stem = file.name.rsplit("/", 1)[-1]
    m = _STATION_FILE.match(stem)
    if m is None and file.archive_name is not None:
        m = _STATION_FILE.match(file.archive_name)
        own = _LEADING_ID.match(stem)
        if m is not None and own is not None and own.group(1) != m.group("id"):
            return Rejection(
                None,
                f"ZIP member {stem!r} names station {own.group(1)}, "
                f"but the archive {file.archive_name!r} station {m.group('id')}",
            )
    if m is None:
        names = repr(file.name) + (f" (archive {file.archive_name!r})" if file.archive_name else "")
        return Rejection(
            None,
            f"file name {names} does not name the station as ID,LAT,LON.csv "
            "(e.g. 38413430,52.142172,12.563414.csv)",
        )
    lat, lon = float(m.group("lat")), float(m.group("lon"))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return Rejection(None, f"coordinates {lat}, {lon} in the file name are out of range")
    return Station(m.group("id"), lat, lon)


def header_fits(names: list[str]) -> bool:
    """Four columns, ``Datum`` first and the level in cm below ground third.

    ``Präfix`` and ``Hinweise`` are not compared: their spelling depends on the encoding
    (and on the portal's mood), their position is what matters.
    """
    keys = [header_key(n) for n in names]
    return len(keys) == 4 and keys[0] == "datum" and _LEVEL_HEADER.match(keys[2]) is not None


class GroundwaterCsvNode(FileParserNode):
    """Groundwater levels (APW Brandenburg) from a station's CSV file into readings."""

    type_name = "groundwater-csv"
    Config = GroundwaterConfig
    config: GroundwaterConfig

    def parse(self, file: FileInfo, text: str) -> Iterator[Reading | Rejection]:
        station = station_of(file)
        if isinstance(station, Rejection):
            yield station
            return
        lines = csv_lines(text)
        header = next(lines, None)
        expected = ";".join(f'"{h}"' for h in HEADER)
        if header is None:
            yield Rejection(None, f"file is empty (expected the header {expected})")
            return
        names = header_names(header.fields or [])
        if not header_fits(names):
            yield Rejection(header.number, f"unexpected header (expected {expected})", header.text)
            return
        base_tags = {"station": station.id}
        seen: dict[int, int] = {}
        for line in lines:
            fields, problem = fit_fields(line, len(HEADER))
            if fields is None:
                yield Rejection(line.number, problem, line.text)
                continue
            date, prefix, level_text, note = fields
            try:
                time = parse_german_date(date, self.tz)
            except ValueError as exc:
                yield Rejection(line.number, f"Datum: {exc}", line.text)
                continue
            level = parse_number(level_text)
            if level is None:
                reason = "no value" if not level_text else f"{level_text!r} is not a number"
                yield Rejection(line.number, f"Wasserstand: {reason}", line.text)
                continue
            if time in seen:
                yield Rejection(line.number, f"duplicate date {date} (first on line {seen[time]})", line.text)
                continue
            seen[time] = line.number
            values: dict[str, FieldValue] = {
                "depth_below_surface_cm": level,
                "latitude": station.latitude,
                "longitude": station.longitude,
            }
            if note:
                values["note"] = note
            if prefix:
                values["prefix"] = prefix
            yield {
                "measurement": self.config.measurement,
                "tags": dict(base_tags),
                "fields": values,
                "time": time,
            }
