"""``csv``: parse CSV text (or bytes) into rows, and rows back into CSV text.

Built on Python's :mod:`csv` module; this module adds what real open-data exports
need on top of it: encoding detection for bytes, decimal commas, date columns,
trailing separators, and per-row error reporting with line numbers so that one
bad line does not lose the whole file.
"""

from __future__ import annotations

import codecs
import copy
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from engine.errors import DecodeError, MessageError
from engine.message import Message
from engine.node import Node
from engine.paths import get_msg, set_msg
from engine.types import NodeConfig

#: Key that holds surplus fields of a bad row kept with ``on_bad_row: keep``.
EXTRA_KEY = "_extra"

_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%X", "%c", "%T", "%R", "%s")


class CsvConfig(NodeConfig):
    """How to read (and write) the CSV text.

    The default separator is ``,`` (RFC 4180); German exports such as the
    Energieagentur and groundwater files use ``;``. Number parsing is on by default;
    a number with a leading zero (``"0815"``) stays text because it is usually a code.
    A row may end with one extra empty field (a trailing separator); it is dropped.
    """

    action: Literal["auto", "parse", "serialize"] = Field(
        default="auto",
        description="`parse` text/bytes into rows, `serialize` rows into text, or `auto`: parse text, serialize lists and dicts.",
    )
    property: str = Field(default="payload", description="Dotted path of the property to read and replace.")
    output: Literal["rows", "messages"] = Field(
        default="rows",
        description="`rows`: one message whose property is the list of row dicts; `messages`: one message per row, with `meta.parts` (id, index, count) like a split.",
    )
    separator: str = Field(
        default=",", min_length=1, max_length=1, description="Field separator, e.g. `,` `;` or a tab."
    )
    quote: str = Field(default='"', min_length=1, max_length=1, description="Quote character.")
    header: bool = Field(
        default=True, description="The first (non-skipped, non-blank) line holds the column names."
    )
    columns: list[str] | None = Field(
        default=None,
        description="Explicit column names; they replace the header row's names (without a header, columns are `col1`, `col2`, ... unless given).",
    )
    skip_lines: int = Field(default=0, ge=0, description="Lines to skip before the header or first row.")
    encoding: str = Field(
        default="auto",
        description="Encoding of bytes input: `auto` tries UTF-8 (with or without BOM; UTF-16 with BOM) and falls back to Latin-1; or any codec name such as `utf-8`, `latin-1`, `cp1252`.",
    )
    decimal: Literal[".", ","] = Field(
        default=".", description='Decimal mark of numbers: `.` or `,` (German: "11248,0000" → 11248.0).'
    )
    thousands: Literal[".", ",", " ", "'"] | None = Field(
        default=None, description="Thousands separator allowed in numbers (`1.234,5`), if any."
    )
    numbers: bool | list[str] = Field(
        default=True,
        description="Turn numeric fields into int/float: `true` for all columns, `false` for none, or a list of column names.",
    )
    dates: dict[str, str] = Field(
        default_factory=dict,
        description="Date columns and their strptime format, e.g. `{Datum: '%d.%m.%Y'}`.",
    )
    date_output: Literal["iso", "epoch", "epoch_ms"] = Field(
        default="iso",
        description="Dates as ISO strings (`2007-01-25`, or with time and offset), epoch seconds or epoch milliseconds.",
    )
    timezone: str = Field(
        default="Europe/Berlin",
        description="Time zone of dates without an offset (used for epoch output and ISO date-times).",
    )
    empty: Literal["null", "string", "omit"] = Field(
        default="null", description='Empty fields become `null`, stay `""`, or are left out of the row.'
    )
    on_bad_row: Literal["error", "skip", "keep"] = Field(
        default="error",
        description=f"Rows with the wrong number of fields or an unparsable date: `error` sends each to the error path as a DecodeError (good rows are still emitted), `skip` drops them, `keep` emits them (missing fields null, surplus in `{EXTRA_KEY}`).",
    )
    line_ending: Literal["lf", "crlf"] = Field(default="lf", description="Line ending when serializing.")

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)") from None
        return value

    @field_validator("dates")
    @classmethod
    def _check_dates(cls, value: dict[str, str]) -> dict[str, str]:
        for column, fmt in value.items():
            if "%" not in fmt:
                raise ValueError(f"date format {fmt!r} of column {column!r} has no % directives")
        return value

    @model_validator(mode="after")
    def _check_marks(self) -> CsvConfig:
        if self.thousands == self.decimal:
            raise ValueError("thousands separator and decimal mark must differ")
        if self.quote == self.separator:
            raise ValueError("quote character and separator must differ")
        return self


def decode_text(data: bytes | bytearray, encoding: str) -> str:
    """Bytes to text; ``auto`` handles BOMs and falls back to Latin-1, which never fails."""
    raw = bytes(data)
    name = encoding
    if encoding == "auto":
        if raw.startswith(codecs.BOM_UTF8):
            encoding = "utf-8-sig"
        elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "utf-16"
        else:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
    elif codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"CSV is not valid {name} at byte {exc.start}: {exc.reason}") from None


@dataclass(slots=True)
class BadRow:
    """A record that does not fit the columns."""

    line: int
    text: str
    fields: list[str]
    reason: str


@dataclass(slots=True)
class ParsedCsv:
    """Rows in file order; ``items`` interleaves good rows and bad rows for per-row output."""

    columns: list[str]
    items: list[tuple[int, dict[str, Any] | BadRow]] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for _, r in self.items if isinstance(r, dict)]

    @property
    def bad_rows(self) -> list[BadRow]:
        return [r for _, r in self.items if isinstance(r, BadRow)]


def _number_pattern(decimal: str, thousands: str | None) -> re.Pattern[str]:
    d = re.escape(decimal)
    intpart = r"(?:0|[1-9]\d*"
    if thousands is not None:
        intpart += rf"|[1-9]\d{{0,2}}(?:{re.escape(thousands)}\d{{3}})+"
    intpart += ")"
    return re.compile(rf"^[+-]?(?:{intpart}(?P<frac>{d}\d*)?|(?P<bare>{d}\d+))(?P<exp>[eE][+-]?\d+)?$")


class CsvCodec:
    """The parsing and writing rules of one ``csv`` node config, usable without the engine."""

    def __init__(self, config: CsvConfig) -> None:
        self.config = config
        self._number = _number_pattern(config.decimal, config.thousands)
        self._tz = ZoneInfo(config.timezone)
        self._date_has_time = {
            col: any(d in fmt for d in _TIME_DIRECTIVES) for col, fmt in config.dates.items()
        }

    # -- parsing -----------------------------------------------------------------------

    def to_number(self, text: str) -> int | float | str:
        """``text`` as int or float if it is a number in the configured notation, else unchanged."""
        s = text.strip()
        m = self._number.match(s)
        if m is None:
            return text
        c = self.config
        if c.thousands is not None:
            s = s.replace(c.thousands, "")
        if m.group("frac") is None and m.group("bare") is None and m.group("exp") is None:
            return int(s)
        return float(s.replace(c.decimal, ".") if c.decimal != "." else s)

    def to_date(self, column: str, text: str) -> str | int | float:
        fmt = self.config.dates[column]
        try:
            parsed = dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            raise ValueError(f"column {column!r}: {text!r} does not match date format {fmt!r}") from None
        out = self.config.date_output
        if out == "iso" and not self._date_has_time[column] and parsed.tzinfo is None:
            return parsed.date().isoformat()
        aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=self._tz)
        if out == "iso":
            return aware.isoformat()
        ts = aware.timestamp()
        if out == "epoch_ms":
            return round(ts * 1000)
        return int(ts) if ts == int(ts) else ts

    def _convert(self, columns: list[str], values: list[str], lenient: bool = False) -> dict[str, Any]:
        """Typed row; an unparsable date raises ValueError unless ``lenient`` keeps the text."""
        c = self.config
        numbers = c.numbers
        row: dict[str, Any] = {}
        for name, value in zip(columns, values, strict=False):
            if value == "":
                if c.empty == "omit":
                    continue
                row[name] = None if c.empty == "null" else ""
            elif name in c.dates:
                try:
                    row[name] = self.to_date(name, value)
                except ValueError:
                    if not lenient:
                        raise
                    row[name] = value
            elif numbers is True or (isinstance(numbers, list) and name in numbers):
                row[name] = self.to_number(value)
            else:
                row[name] = value
        return row

    def _header_names(self, fields: list[str]) -> list[str]:
        if fields and fields[-1] == "" and len(fields) > 1:
            fields = fields[:-1]  # trailing separator on the header line
        names: list[str] = []
        seen: set[str] = set()
        for i, raw in enumerate(fields, 1):
            name = raw or f"col{i}"
            base, n = name, 1
            while name in seen:  # duplicate names would silently drop a column's values
                n += 1
                name = f"{base}_{n}"
            seen.add(name)
            names.append(name)
        return names

    def parse(self, text: str) -> ParsedCsv:
        """Parse CSV text; raises :class:`DecodeError` only if the text as a whole is unreadable."""
        c = self.config
        text = text.removeprefix("\ufeff")
        lines = iter(io.StringIO(text, newline=""))
        for _ in range(c.skip_lines):
            next(lines, None)
        record: list[str] = []

        def feed() -> Iterator[str]:
            for line in lines:
                record.append(line)
                yield line

        reader = csv.reader(feed(), delimiter=c.separator, quotechar=c.quote, strict=False)
        columns: list[str] | None = list(c.columns) if c.columns and not c.header else None
        need_header = c.header
        result = ParsedCsv(columns=[])
        consumed = c.skip_lines
        while True:
            start = consumed + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DecodeError(f"CSV line {start}: {exc}") from None
            raw = "".join(record).rstrip("\r\n")
            record.clear()
            consumed = c.skip_lines + reader.line_num
            if not fields:
                continue  # blank line
            if need_header:
                need_header = False
                columns = list(c.columns) if c.columns else self._header_names(fields)
                continue
            if columns is None:
                n = len(fields) - 1 if len(fields) > 1 and fields[-1] == "" else len(fields)
                columns = [f"col{i}" for i in range(1, n + 1)]
            result.items.append((start, self._row(columns, fields, start, raw)))
        result.columns = columns or []
        return result

    def _row(self, columns: list[str], fields: list[str], line: int, raw: str) -> dict[str, Any] | BadRow:
        n = len(columns)
        if len(fields) == n + 1 and fields[-1] == "":
            fields = fields[:-1]  # trailing separator
        if len(fields) != n:
            bad = BadRow(line, raw, fields, f"expected {n} fields, got {len(fields)}")
            if self.config.on_bad_row != "keep":
                return bad
            row = self._convert(columns, fields[:n] + [""] * (n - len(fields)), lenient=True)
            if len(fields) > n:
                row[EXTRA_KEY] = fields[n:]
            return row
        try:
            return self._convert(columns, fields)
        except ValueError as exc:
            if self.config.on_bad_row == "keep":
                return self._convert(columns, fields, lenient=True)
            return BadRow(line, raw, fields, str(exc))

    # -- writing -----------------------------------------------------------------------

    def _cell(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and self.config.decimal == ",":
            return repr(value).replace(".", ",")
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        return str(value)

    def serialize(self, rows: Any) -> str:
        """Rows (dicts, or lists of values) to CSV text, with a header line if configured."""
        c = self.config
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list):
            raise MessageError(f"cannot write CSV from {type(rows).__name__}; expected a list of rows")
        columns = list(c.columns or [])
        if not columns:
            for row in rows:
                if isinstance(row, dict):
                    columns.extend(k for k in row if k not in columns)
        out = io.StringIO()
        writer = csv.writer(
            out,
            delimiter=c.separator,
            quotechar=c.quote,
            lineterminator="\r\n" if c.line_ending == "crlf" else "\n",
        )
        if c.header and columns:
            writer.writerow(columns)
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                writer.writerow([self._cell(row.get(k)) for k in columns])
            elif isinstance(row, list | tuple):
                writer.writerow([self._cell(v) for v in row])
            else:
                raise MessageError(f"row {i} is a {type(row).__name__}; expected a dict or a list")
        return out.getvalue()


class CsvNode(Node):
    """Parse CSV text into rows (one message or one per row), or write rows as CSV."""

    type_name = "csv"
    category = "parser"
    Config = CsvConfig
    outputs = ("out",)
    color = "#debd5c"
    icon = "parser-csv"
    config: CsvConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.codec = CsvCodec(self.config)

    async def on_message(self, msg: Message) -> None:
        c = self.config
        value = get_msg(msg, c.property)
        if isinstance(value, bytes | bytearray):
            value = decode_text(value, c.encoding)
        if isinstance(value, str) and c.action != "serialize":
            await self._parse(msg, value)
        elif c.action == "parse":
            raise MessageError(f"{c.property} is a {type(value).__name__}, not CSV text")
        elif isinstance(value, str):
            await self.emit(msg)  # serialize: already text
        else:
            set_msg(msg, c.property, self.codec.serialize(value))
            await self.emit(msg)

    async def _parse(self, msg: Message, text: str) -> None:
        c = self.config
        parsed = self.codec.parse(text)
        bad = parsed.bad_rows
        info = {"columns": parsed.columns, "rows": len(parsed.items) - len(bad), "bad_rows": len(bad)}
        self.status("warning" if bad else "ok", f"{info['rows']} rows" + (f", {len(bad)} bad" if bad else ""))
        # The text is consumed: per-row and error copies of the message stay small.
        set_msg(msg, c.property, None)
        if c.output == "rows":
            for b in bad:  # before emitting: once emitted, msg belongs to the receiver
                await self._bad_row(msg, b)
            set_msg(msg, c.property, parsed.rows)
            msg.meta["csv"] = info
            await self.emit(msg)
            return
        count = info["rows"]
        index = 0
        for line, item in parsed.items:
            if isinstance(item, BadRow):
                await self._bad_row(msg, item)
                continue
            out = self._derive(
                msg, item, {"columns": parsed.columns, "line": line, "index": index, "count": count}
            )
            # Node-RED's sequence info, so a join/batch downstream can reassemble the file.
            parts: dict[str, Any] = {"id": msg.id, "index": index, "count": count, "type": "array"}
            if "parts" in msg.meta:
                parts["parts"] = copy.deepcopy(msg.meta["parts"])
            out.meta["parts"] = parts
            index += 1
            await self.send(out)

    def _derive(self, msg: Message, value: Any, info: dict[str, Any]) -> Message:
        path = self.config.property
        out = msg.derive(value if path == "payload" else copy.deepcopy(msg.payload))
        out.meta = copy.deepcopy(out.meta)  # derive copies meta shallowly; rows must not share it
        out.meta["csv"] = info
        if path != "payload":
            set_msg(out, path, value)
        return out

    async def _bad_row(self, msg: Message, bad: BadRow) -> None:
        if self.config.on_bad_row != "error":
            self.log.debug("skipped CSV line %d: %s", bad.line, bad.reason)
            return
        out = self._derive(msg, bad.text, {"line": bad.line, "fields": bad.fields})
        try:
            await self.emit_error(out, DecodeError(f"CSV line {bad.line}: {bad.reason}"))
        finally:
            out.release()
