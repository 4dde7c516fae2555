"""``statistics-csv``: yearly statistics tables (one row per year) into readings, configured per file name.

The platform's topic pages show yearly series from several publishers whose CSVs share
one shape — ``;``-separated, a header line, a year column, maybe a few describing
columns, then numbers — and differ in everything else:

* Energieagentur Brandenburg (``energiesteckbrief_daten_komplett.csv``, ``…__summe.csv``,
  ``…__zeitreihe_co2__summe….csv``): decimal commas (``11248,0000``), empty cells, long
  quoted source notes, up to 98 columns;
* Forst Brandenburg (``waldzustandsbericht-kronenverlichtung.csv``: ``Jahr;Kronenverlichtung``,
  ``waldzustandsbericht-schadstufen.csv``: ``Jahr;Baumart;Schadstufe 0;…`` one row per year
  and tree species);
* Statistik Berlin-Brandenburg (``landwirtschaftliche_betriebe_brandenburg.csv``:
  ``year;value;`` with a trailing separator on every line).

So one node takes a list of file rules (first matching name wins), and each rule says
which column is the year, which columns become tags and which become fields — in the
flow file, where a reader sees what is stored. Decisions, and why:

* **Time** is January 1st, 00:00 local time (Europe/Berlin) of the year.
* **Every value is a float**: ``6914`` and ``6914,5`` must land in the same InfluxDB field.
* **Empty cells are absent fields**, not zeros. A non-empty cell that is not a number
  rejects its row (naming the column): with ``fields: "*"`` a text column must be listed
  in ``skip`` on purpose, so a typo in a number is never dropped silently.
* **A second row for the same year and tags is rejected**: it would overwrite the first.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nodes.opendata._base import FileInfo, FileParserNode, ParserConfig, Rejection
from nodes.opendata._text import (
    csv_lines,
    fit_fields,
    header_key,
    header_names,
    number_cells,
    parse_year,
    year_ns,
)
from nodes.ttn import FieldValue, Reading


class StatisticsFile(BaseModel):
    """How the files whose name matches `match` become yearly readings."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: str = Field(
        min_length=1,
        description="File name pattern (glob, case-insensitive), e.g. `waldzustandsbericht-schadstufen.csv` or `*__summe*.csv`.",
    )
    measurement: str = Field(min_length=1, description="Measurement of the readings.")
    year: str = Field(min_length=1, description="Column holding the year.")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Tag name → column (e.g. `species: Baumart`); a row with an empty tag column is rejected.",
    )
    fields: dict[str, str] | Literal["*"] = Field(
        default="*",
        description='Field name → column, or `"*"`: every column that is not the year, a tag or in `skip`, named as in the header.',
    )
    skip: list[str] = Field(
        default_factory=list,
        description='With `fields: "*"`: columns (globs, case-insensitive, e.g. `*quelle*`) that are not imported.',
    )
    separator: str = Field(default=";", min_length=1, max_length=1, description="Field separator.")

    @model_validator(mode="after")
    def _check(self) -> StatisticsFile:
        if self.fields != "*" and self.skip:
            raise ValueError('`skip` applies only to `fields: "*"`')
        if self.fields != "*" and not self.fields:
            raise ValueError('`fields` needs at least one entry (or "*")')
        return self

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name.casefold(), self.match.casefold())

    def skipped(self, column: str) -> bool:
        key = column.casefold()
        return any(fnmatch.fnmatchcase(key, s.casefold()) for s in self.skip)


class StatisticsConfig(ParserConfig):
    """Yearly statistics CSVs (Energieagentur, Forst, Statistik Berlin-Brandenburg) into readings.

    `files` is a list of rules; the first whose `match` fits the file name decides the
    measurement, the year column, tags and fields. A file no rule matches is reported as
    rejected. Time: January 1st (local time) of the row's year; all values floats; empty
    cells are left out; a row with a non-numeric value is rejected with the column named.
    """

    files: list[StatisticsFile] = Field(min_length=1, description="File rules, tried top to bottom.")


class StatisticsCsvNode(FileParserNode):
    """Yearly statistics CSVs (one row per year; rules per file name) into readings."""

    type_name = "statistics-csv"
    Config = StatisticsConfig
    config: StatisticsConfig

    def parse(self, file: FileInfo, text: str) -> Iterator[Reading | Rejection]:
        rule = next((r for r in self.config.files if r.matches(file.name)), None)
        if rule is None:
            patterns = ", ".join(r.match for r in self.config.files)
            yield Rejection(None, f"no file rule matches {file.name!r} (patterns: {patterns})")
            return
        lines = csv_lines(text, rule.separator)
        header = next(lines, None)
        if header is None:
            yield Rejection(None, "file is empty (expected a header line)")
            return
        names = header_names(header.fields or [])
        position: dict[str, int] = {}
        for i, n in enumerate(names):
            position.setdefault(header_key(n), i)

        def column(name: str) -> int | None:
            return position.get(header_key(name))

        wanted = [rule.year, *rule.tags.values()]
        if rule.fields != "*":
            wanted += list(rule.fields.values())
        missing = [c for c in wanted if column(c) is None]
        if missing:
            yield Rejection(
                header.number,
                f"header lacks column(s) {', '.join(repr(c) for c in missing)} (rule {rule.match!r})",
                header.text,
            )
            return
        year_at = column(rule.year)
        assert year_at is not None
        tag_at: dict[str, int] = {tag: position[header_key(c)] for tag, c in rule.tags.items()}
        if rule.fields == "*":
            used = {year_at, *tag_at.values()}
            field_at = {n: i for i, n in enumerate(names) if i not in used and n and not rule.skipped(n)}
        else:
            field_at = {f: position[header_key(c)] for f, c in rule.fields.items()}
        seen: dict[tuple[int, tuple[str, ...]], int] = {}
        for line in lines:
            fields, problem = fit_fields(line, len(names))
            if fields is None:
                yield Rejection(line.number, problem, line.text)
                continue
            year = parse_year(fields[year_at])
            if year is None:
                yield Rejection(
                    line.number, f"{names[year_at]}: {fields[year_at]!r} is not a year", line.text
                )
                continue
            tags: dict[str, str] = {}
            for tag, i in tag_at.items():
                if not fields[i]:
                    break
                tags[tag] = fields[i]
            if len(tags) != len(tag_at):
                empty = [names[i] for i in tag_at.values() if not fields[i]]
                yield Rejection(line.number, f"{empty[0]} is empty", line.text)
                continue
            numbers, bad = number_cells(fields, field_at.items(), names)
            values: dict[str, FieldValue] = dict(numbers)
            if bad or not values:
                yield Rejection(line.number, bad or "no values", line.text)
                continue
            key = (year, tuple(tags.values()))
            if key in seen:
                what = f"year {year}" + "".join(f", {t}" for t in key[1])
                yield Rejection(
                    line.number, f"duplicate row for {what} (first on line {seen[key]})", line.text
                )
                continue
            seen[key] = line.number
            yield {
                "measurement": rule.measurement,
                "tags": tags,
                "fields": values,
                "time": year_ns(year, self.tz),
            }
