"""Text helpers shared by the open-data parsers: encodings, German numbers and dates, CSV lines.

The Brandenburg open-data exports are typed by hand or by Windows tools: the same portal
delivers UTF-8 one day and Latin-1 the next, LF or CRLF, ``11248,0000`` for numbers and
``25.01.2007`` for dates. These helpers accept exactly those variants and nothing vaguer,
so a value that does not fit is reported instead of guessed.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_NUMBER = re.compile(r"^[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)$")
_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NS = 1_000_000_000


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of a file: UTF-8 (BOM or not) if it is valid UTF-8, else Windows-1252/Latin-1.

    Valid UTF-8 is practically never Latin-1 text with umlauts (``Ã¼`` pairs would be
    needed), so trying UTF-8 first is safe. Windows-1252 is the superset of Latin-1 that
    German Windows exports really use; the five bytes it leaves undefined fall back to
    Latin-1, which decodes anything, so decoding never fails.
    """
    if raw.startswith(codecs.BOM_UTF8):
        try:
            return raw[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def parse_number(text: str) -> float | None:
    """A German or English decimal (``11248,0000``, ``-1.5``, ``660``) as float; None if it is not one.

    Thousands separators are not accepted: ``1.234`` would be ambiguous, and none of the
    documented formats uses them.
    """
    s = text.strip()
    if not _NUMBER.match(s):
        return None
    return float(s.replace(",", "."))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError with a readable reason if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None


def local_ns(when: dt.datetime, tz: ZoneInfo) -> int:
    """Epoch nanoseconds of a naive local time in ``tz`` (exact, no float rounding)."""
    aware = when.replace(tzinfo=tz)
    delta = aware - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


def parse_german_date(text: str, tz: ZoneInfo) -> int:
    """``dd.mm.yyyy`` (optionally ``HH:MM[:SS]``), local time in ``tz``, as epoch ns; ValueError if not."""
    m = _DATE.match(text.strip())
    if m is None:
        raise ValueError(f"{text.strip()!r} is not a date like 25.01.2007")
    day, month, year, hour, minute, second = (int(g) if g else 0 for g in m.groups())
    try:
        when = dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a valid date") from None
    return local_ns(when, tz)


def parse_year(text: str) -> int | None:
    """A four-digit year (``2021``, also ``2021,0`` from spreadsheets); None if it is not one."""
    value = parse_number(text)
    if value is None or value != int(value) or not 1000 <= value <= 9999:
        return None
    return int(value)


def year_ns(year: int, tz: ZoneInfo) -> int:
    """Epoch ns of January 1st, 00:00 local time: where a yearly value is stored."""
    return local_ns(dt.datetime(year, 1, 1), tz)


@dataclass(frozen=True, slots=True)
class Line:
    """One physical line of a CSV file, split into fields (``fields`` is None if unparsable)."""

    number: int
    text: str
    fields: list[str] | None
    problem: str = ""


def csv_lines(text: str, separator: str = ";") -> Iterator[Line]:
    """The non-blank lines of ``text`` with 1-based line numbers, each parsed as one CSV record.

    Records are split per physical line on purpose: the documented formats have no line
    breaks inside quotes, and parsing line by line keeps one unbalanced quote from
    swallowing the rest of the file into a single field. Fields are stripped of blanks.
    """
    for number, raw in enumerate(_LINE_BREAK.split(text.removeprefix("\ufeff")), 1):
        if not raw.strip():
            continue
        try:
            fields = next(
                csv.reader(
                    [raw.strip()], delimiter=separator, quotechar='"', strict=True, skipinitialspace=True
                )
            )
        except csv.Error as exc:
            yield Line(number, raw, None, f"malformed CSV line: {exc}")
            continue
        yield Line(number, raw, [f.strip() for f in fields])


def header_key(name: str) -> str:
    """Header names compared loosely: case, surrounding blanks and inner runs of blanks do not matter."""
    return " ".join(name.split()).casefold()


def header_names(fields: list[str]) -> list[str]:
    """Column names of a header line; a trailing separator (``year;value;``) adds no column."""
    return fields[:-1] if len(fields) > 1 and fields[-1] == "" else fields


def fit_fields(line: Line, columns: int) -> tuple[list[str] | None, str]:
    """The line's fields if it has ``columns`` of them (a trailing empty one may follow), else the reason."""
    if line.fields is None:
        return None, line.problem
    fields = line.fields
    if len(fields) == columns + 1 and fields[-1] == "":
        fields = fields[:-1]
    if len(fields) != columns:
        return None, f"expected {columns} fields, got {len(fields)}"
    return fields, ""


def number_cells(
    fields: list[str], columns: Iterable[tuple[str, int]], headers: list[str]
) -> tuple[dict[str, float], str]:
    """The numbers of the named columns (empty cells left out), or the reason a cell is not one.

    A typo in one number rejects the row instead of silently dropping that value.
    """
    values: dict[str, float] = {}
    for name, i in columns:
        cell = fields[i]
        if not cell:
            continue
        number = parse_number(cell)
        if number is None:
            return values, f"{headers[i]}: {cell[:60]!r} is not a number"
        values[name] = number
    return values, ""
