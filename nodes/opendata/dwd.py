"""``dwd-climate-means``: historical monthly means of the Deutscher Wetterdienst (``mittelwerte_historisch.csv``).

Documented format (``Deutscher Wetterdienst/README.md``): ``;``-separated with the header
``Bezeichnung;Stations_id;Bezugszeitraum;Datenquelle;Jan.;Feb.;März;Apr.;Mai;Jun.;Jul.;Aug.;Sept.;Okt.;Nov.;Dez.;Jahr``;
the label (``Bezeichnung``) tells what a row holds and varies only in its years:
``MITTEL_…`` precipitation heights, ``MITTEL_TEMP_…`` temperatures.

Decisions, and why:

* **One point per row**, measurement ``climate_means``, tags ``quantity``
  (``precipitation`` in mm / ``temperature`` in °C), ``station_id``, ``period``
  (``1961-1990``) and ``label``; fields ``jan`` … ``dec`` and ``year`` (floats), and the
  ``Datenquelle`` as string field ``source``. A mean has no time of its own: it is stored
  at January 1st (local time) of the period's first year, so re-imports overwrite it and
  a dashboard selects a period by its tag.
* **Columns are found by header name**, not position (the DWD's own exports abbreviate
  ``März`` as ``Mrz`` in some files, and Latin-1 files may decode it either way).
* **Numbers** with a decimal comma or point, blanks around them allowed (DWD pads
  columns); an empty month is left out of the point, anything else not numeric rejects
  the row.
* **Station ids** are compared as numbers and written with the DWD's five digits
  (``5546`` → ``05546``), so the same station never becomes two series.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydantic import Field

from nodes.opendata._base import FileInfo, FileParserNode, ParserConfig, Rejection
from nodes.opendata._text import (
    csv_lines,
    fit_fields,
    header_key,
    header_names,
    number_cells,
    year_ns,
)
from nodes.ttn import FieldValue, Reading

#: Field name -> accepted header names (compared with :func:`header_key`).
MONTHS: dict[str, tuple[str, ...]] = {
    "jan": ("jan.", "jan", "januar"),
    "feb": ("feb.", "feb", "februar"),
    "mar": ("märz", "mrz.", "mrz", "maerz", "mär.", "mär"),
    "apr": ("apr.", "apr", "april"),
    "may": ("mai",),
    "jun": ("jun.", "jun", "juni"),
    "jul": ("jul.", "jul", "juli"),
    "aug": ("aug.", "aug", "august"),
    "sep": ("sept.", "sept", "sep.", "sep", "september"),
    "oct": ("okt.", "okt", "oktober"),
    "nov": ("nov.", "nov", "november"),
    "dec": ("dez.", "dez", "dezember"),
    "year": ("jahr",),
}
COLUMNS: dict[str, tuple[str, ...]] = {
    "label": ("bezeichnung",),
    "station": ("stations_id", "stationsid", "stations-id"),
    "period": ("bezugszeitraum",),
    "source": ("datenquelle",),
    **MONTHS,
}
HEADER = (
    "Bezeichnung;Stations_id;Bezugszeitraum;Datenquelle;"
    "Jan.;Feb.;März;Apr.;Mai;Jun.;Jul.;Aug.;Sept.;Okt.;Nov.;Dez.;Jahr"
)
#: Column -> its name in the documented header, for messages.
DISPLAY: dict[str, str] = dict(zip(COLUMNS, HEADER.split(";"), strict=True))
_PERIOD = re.compile(r"(\d{4})\D{1,3}(\d{4})")


class DwdClimateMeansConfig(ParserConfig):
    """DWD historical means (`mittelwerte_historisch.csv`): one reading per row.

    Rows labelled `MITTEL_TEMP_…` are temperatures (°C), other `MITTEL_…` rows precipitation
    heights (mm). Tags `quantity` (`temperature`/`precipitation`), `station_id`, `period`
    (from `Bezugszeitraum`, else the label's years), `label`; fields `jan` … `dec`, `year`
    and `source` (Datenquelle). Time: January 1st of the period's first year.
    """

    measurement: str = Field(default="climate_means", min_length=1, description="Measurement name.")


def quantity_of(label: str) -> str | None:
    upper = label.upper()
    if upper.startswith("MITTEL_TEMP_"):
        return "temperature"
    if upper.startswith("MITTEL_"):
        return "precipitation"
    return None


def station_key(text: str) -> str:
    return text.zfill(5) if text.isdigit() else text


class DwdClimateMeansNode(FileParserNode):
    """Historical precipitation and temperature means of the DWD (mittelwerte_historisch.csv) into readings."""

    type_name = "dwd-climate-means"
    Config = DwdClimateMeansConfig
    config: DwdClimateMeansConfig

    def parse(self, file: FileInfo, text: str) -> Iterator[Reading | Rejection]:
        lines = csv_lines(text)
        header = next(lines, None)
        if header is None:
            yield Rejection(None, f"file is empty (expected the header {HEADER})")
            return
        names = header_names(header.fields or [])
        keys = [header_key(n) for n in names]
        index: dict[str, int] = {}
        for column, accepted in COLUMNS.items():
            found = [i for i, k in enumerate(keys) if k in accepted]
            if found:
                index[column] = found[0]
        missing = [DISPLAY[column] for column in COLUMNS if column not in index]
        if missing:
            yield Rejection(
                header.number,
                f"header lacks column(s) {', '.join(missing)} (expected {HEADER})",
                header.text,
            )
            return
        seen: dict[tuple[str, str, str], int] = {}
        for line in lines:
            fields, problem = fit_fields(line, len(names))
            if fields is None:
                yield Rejection(line.number, problem, line.text)
                continue
            label = fields[index["label"]]
            quantity = quantity_of(label)
            if quantity is None:
                yield Rejection(
                    line.number,
                    f"Bezeichnung {label!r} is neither MITTEL_TEMP_… (temperature) nor MITTEL_… (precipitation)",
                    line.text,
                )
                continue
            station = station_key(fields[index["station"]])
            if not station:
                yield Rejection(line.number, "Stations_id is empty", line.text)
                continue
            m = _PERIOD.search(fields[index["period"]]) or _PERIOD.search(label)
            if m is None:
                yield Rejection(
                    line.number,
                    f"no reference period like 1961-1990 in Bezugszeitraum {fields[index['period']]!r} "
                    f"or Bezeichnung {label!r}",
                    line.text,
                )
                continue
            period = f"{m.group(1)}-{m.group(2)}"
            numbers, bad = number_cells(fields, ((m, index[m]) for m in MONTHS), names)
            values: dict[str, FieldValue] = dict(numbers)
            if bad or not values:
                yield Rejection(line.number, bad or "no values", line.text)
                continue
            key = (quantity, station, period)
            if key in seen:
                yield Rejection(
                    line.number,
                    f"duplicate {quantity} means of station {station} for {period} (first on line {seen[key]})",
                    line.text,
                )
                continue
            seen[key] = line.number
            if fields[index["source"]]:
                values["source"] = fields[index["source"]]
            yield {
                "measurement": self.config.measurement,
                "tags": {"quantity": quantity, "station_id": station, "period": period, "label": label},
                "fields": values,
                "time": year_ns(int(m.group(1)), self.tz),
            }
