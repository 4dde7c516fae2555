"""InfluxDB line protocol: a fast builder and the small parser the rejection logic needs.

The builder produces exactly what ``influxdb_client.Point(...).to_line_protocol()``
produces (property-tested in tests/nodes/test_influxdb_out.py) at a fraction of the
cost: escaped names are cached, because measurements, tag keys/values and field keys
repeat on every reading of a sensor, and there is no per-point object.

The parser goes the other way only as far as needed to find which lines of a batch an
InfluxDB error message talks about (``field type conflict: input field "t" on
measurement "m" is type string``), so a rejected point is named without re-sending the
whole batch point by point.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

FieldValue = float | int | bool | str

_ESC_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESC_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESC_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})

_CACHE_LIMIT = 50_000
_measurement_cache: dict[str, str] = {}
_key_cache: dict[str, str] = {}
_tag_value_cache: dict[str, str] = {}

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

PRECISION_DIVISOR = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class LineProtocolError(ValueError):
    """A point cannot be expressed in line protocol (no fields, unsupported value)."""


# InfluxDB 1.x does not unescape "\\\\": a backslash before a character that must itself be
# escaped reads back as something else (measurement "\\ " is stored as " "), so refuse it.
_AMBIGUOUS_MEASUREMENT = re.compile(r"\\[ ,]")
_AMBIGUOUS_KEY = re.compile(r"\\[ ,=]")


def _remember(cache: dict[str, str], raw: str, escaped: str) -> str:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[raw] = escaped
    return escaped


def _escape_name(
    name: str, cache: dict[str, str], table: dict[int, str], ambiguous: re.Pattern[str], what: str, chars: str
) -> str:
    out = cache.get(name)
    if out is not None:
        return out
    out = name.translate(table)
    if out.endswith("\\") or ambiguous.search(name):
        raise LineProtocolError(
            f"{what} {name!r} ends with a backslash or has one before {chars}, "
            "which line protocol cannot express"
        )
    return _remember(cache, name, out)


def escape_measurement(name: str) -> str:
    return _escape_name(
        name, _measurement_cache, _ESC_MEASUREMENT, _AMBIGUOUS_MEASUREMENT, "measurement", "a space or comma"
    )


def escape_key(key: str) -> str:
    return _escape_name(key, _key_cache, _ESC_KEY, _AMBIGUOUS_KEY, "name", "a space, comma or '='")


def escape_tag_value(value: str) -> str:
    out = _tag_value_cache.get(value)
    if out is not None:
        return out
    out = value.translate(_ESC_KEY)
    # Same as Point: a trailing backslash would escape the separator that follows.
    if out.endswith("\\"):
        out += " "
    return _remember(_tag_value_cache, value, out)


def format_field_value(value: Any) -> str | None:
    """Line-protocol text of one field value; None for values Point skips (None, NaN, inf)."""
    t = type(value)
    if t is float:
        if not math.isfinite(value):
            return None
        s = repr(value)
        return s[:-2] if s.endswith(".0") else s
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise LineProtocolError(f"integer {value} is outside the 64-bit range InfluxDB stores")
        return f"{value}i"
    if t is bool:
        return "true" if value else "false"
    if t is str:
        text: str = value
        return '"' + text.translate(_ESC_STRING) + '"'
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return format_field_value(int(value))
    if isinstance(value, float):
        return format_field_value(float(value))
    if isinstance(value, str):
        return format_field_value(str(value))
    raise LineProtocolError(f"unsupported field value type {type(value).__name__}")


_series_cache: dict[Any, str] = {}
_field_key_cache: dict[str, str] = {}


def series_key(measurement: str, tags: Mapping[str, Any] | None) -> str:
    """Escaped ``measurement,tag=value,...`` (tags sorted, None/empty skipped, as Point does)."""
    if not measurement:
        raise LineProtocolError("measurement is empty")
    m = escape_measurement(measurement)
    if m[0] == "#":
        raise LineProtocolError(f"measurement {measurement!r} starts with '#' (a comment in line protocol)")
    parts = [m]
    if tags:
        for k in sorted(tags):
            v = tags[k]
            if v is None:
                continue
            ek = escape_key(k if type(k) is str else str(k))
            ev = escape_tag_value(v if type(v) is str else str(v))
            if ek and ev:
                parts.append(f",{ek}={ev}")
    return "".join(parts)


def _cached_series_key(measurement: str, tags: Mapping[str, Any] | None) -> str:
    """:func:`series_key` through ``_series_cache``, for what :func:`build_line` missed there."""
    try:
        ck: Any = (measurement, *tags, *tags.values()) if tags else measurement
        hash(ck)
    except TypeError:  # unhashable tag value: build without the cache
        return series_key(measurement, tags)
    sk = series_key(measurement, tags)
    # Only names and values that are str go in: 1, 1.0 and True are equal dict keys but
    # give the tags "1", "1.0" and "True", so a cached line must not answer for the others.
    if type(measurement) is str and (
        not tags or all(type(x) is str or x is None for t in tags.items() for x in t)
    ):
        if len(_series_cache) >= _CACHE_LIMIT:
            _series_cache.clear()
        _series_cache[ck] = sk
    return sk


def _general_fields(fields: Mapping[str, Any]) -> str:
    """The fields part of a line, value by value: every shape of ``fields``, every error."""
    out: list[str] = []
    for k in sorted(fields) if len(fields) > 1 else fields:
        v = fields[k]
        t = type(v)
        if t is float:
            if v - v != 0.0:  # NaN or infinity: skipped, as Point does
                continue
            s = repr(v)
            if s[-2:] == ".0":
                s = s[:-2]
        elif t is int:
            if not INT64_MIN <= v <= INT64_MAX:
                raise LineProtocolError(f"integer {v} is outside the 64-bit range InfluxDB stores")
            s = f"{v}i"
        elif t is bool:
            s = "true" if v else "false"
        else:
            fs = format_field_value(v)
            if fs is None:
                continue
            s = fs
        ek = _field_key_cache.get(k)
        if ek is None:
            ek = escape_key(k if type(k) is str else str(k))
            if not ek:
                raise LineProtocolError("a field name is empty")
            if type(k) is str:  # as for tags: 1, 1.0 and True must not share an entry
                if len(_field_key_cache) >= _CACHE_LIMIT:
                    _field_key_cache.clear()
                _field_key_cache[k] = ek
        out.append(f"{ek}={s}")
    if not out:
        raise LineProtocolError("no field with a value (None, NaN and infinity are skipped)")
    return ",".join(out)


# -- compiled field shapes ---------------------------------------------------------------------
#
# A sensor sends the same field names with the same value types in every reading, so for each
# shape (names in insertion order, then the value types) the sorting and the escaped names are
# worked out once, into a %-format such as "Bat=%s,f_cnt=%di,rssi=%s" that writes all fields
# in one C call.  Only shapes whose values are all exactly float or int are compiled; anything
# else (bool, str, None, subclasses such as IntEnum or numpy scalars) goes value by value.
#
# Most of the time of a line was float repr.  Sensor readings are quantised (a battery in mV,
# RSSI in dB, a position that does not move), so the text of each float is kept in a bounded
# dict; a float seen before costs one dict lookup.


class _FloatText(dict[float, str]):
    """Text of a finite float as Point writes it (repr without a trailing ".0"), cached.

    NaN and infinity raise KeyError and are not stored.  0.0 and -0.0 are equal dict keys
    with different texts ("0", "-0"), so zeros are not stored either.
    """

    def __missing__(self, value: float) -> str:
        if value - value != 0.0:
            raise KeyError(value)
        text = repr(value)
        if text[-2:] == ".0":
            text = text[:-2]
        if value:
            if len(self) >= _CACHE_LIMIT:
                self.clear()
            self[value] = text
        return text


_float_text = _FloatText()
_float_text_of = _float_text.__getitem__

# (floats of the fields in sorted order, ints likewise, the tuple of both -> the format's
# argument order, the format); a getter of one name gives the value, not a tuple, so a single
# float or int is named twice and ``arrange`` picks one.
_Getter = Callable[[Any], Any]
_Plan = tuple[_Getter | None, _Getter | None, _Getter | None, str]
_NO_PLAN: Any = object()
_plans: dict[tuple[Any, ...], _Plan | None] = {}


def _compile_plan(shape: tuple[Any, ...]) -> _Plan | None:
    n = len(shape) // 2
    keys, types = shape[:n], shape[n:]
    plan: _Plan | None = None
    if n and all(type(k) is str for k in keys) and all(t is float or t is int for t in types):
        kind = dict(zip(keys, types, strict=True))
        order = sorted(keys)
        try:
            escaped = [escape_key(k) for k in order]
        except LineProtocolError:
            escaped = []  # the value-by-value path raises it, after any earlier error
        if escaped and all(escaped):
            fmt = ",".join(
                e.replace("%", "%%") + ("=%s" if kind[k] is float else "=%di")
                for k, e in zip(order, escaped, strict=True)
            )
            floats = [k for k in order if kind[k] is float]
            ints = [k for k in order if kind[k] is int]
            float_names = floats * 2 if len(floats) == 1 else floats
            int_names = ints * 2 if len(ints) == 1 else ints
            got = float_names + int_names
            index = [got.index(k) for k in order]
            plan = (
                itemgetter(*float_names) if floats else None,
                itemgetter(*int_names) if ints else None,
                None if index == list(range(len(got))) else itemgetter(*index),
                fmt,
            )
    if len(_plans) >= _CACHE_LIMIT:
        _plans.clear()
    _plans[shape] = plan
    return plan


def build_line(
    measurement: str,
    tags: Mapping[str, Any] | None,
    fields: Mapping[str, Any],
    timestamp: int | None,
) -> str:
    """One line of line protocol; tags and fields sorted by key, as Point does.

    Raises :class:`LineProtocolError` when no field is left (after skipping None/NaN),
    a field key is empty, or the measurement is empty or would start a comment line.
    """
    try:
        sk = _series_cache[(measurement, *tags, *tags.values()) if tags else measurement]
    except (KeyError, TypeError):
        sk = _cached_series_key(measurement, tags)
    if type(fields) is dict:
        shape = (*fields, *map(type, fields.values()))
        plan = _plans.get(shape, _NO_PLAN)
        if plan is _NO_PLAN:
            plan = _compile_plan(shape)
        if plan is not None:
            get_floats, get_ints, arrange, fmt = plan
            values: tuple[Any, ...] | None = ()
            if get_floats is not None:
                try:
                    values = tuple(map(_float_text_of, get_floats(fields)))
                except KeyError:  # NaN or infinity: skipped, value by value
                    values = None
            if get_ints is not None and values is not None:
                ints = get_ints(fields)
                if min(ints) >= INT64_MIN and max(ints) <= INT64_MAX:
                    values += ints
                else:  # out of range: the value-by-value path raises it
                    values = None
            if values is not None:
                text = fmt % (values if arrange is None else arrange(values))
                if timestamp is None:
                    return f"{sk} {text}"
                return f"{sk} {text} {timestamp}"
    if timestamp is None:
        return f"{sk} {_general_fields(fields)}"
    return f"{sk} {_general_fields(fields)} {timestamp}"


def convert_ns(ns: int, precision: str) -> int:
    """Nanoseconds since the epoch in ``precision`` units (floor, like InfluxDB's own rounding)."""
    d = PRECISION_DIVISOR[precision]
    return ns if d == 1 else ns // d


# -- parsing, for naming rejected lines ------------------------------------------------------


def _unescape(text: str, chars: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in chars:
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _value_type(raw: str) -> str:
    if raw.startswith('"'):
        return "string"
    if raw in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
        return "boolean"
    if raw.endswith("i"):
        return "integer"
    if raw.endswith("u"):
        return "unsigned"
    return "float"


def parse_fields(line: str) -> tuple[str, dict[str, str]] | None:
    """(measurement, {field: InfluxDB type name}) of one line; None if it does not parse."""
    n = len(line)
    i = 0
    # series key: up to the first unescaped space
    meas_end = -1
    while i < n:
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c == "," and meas_end < 0:
            meas_end = i
        elif c == " ":
            break
        i += 1
    if i >= n:
        return None
    measurement = _unescape(line[: meas_end if meas_end >= 0 else i], ", ")
    i += 1
    types: dict[str, str] = {}
    while i < n:
        start = i
        while i < n and line[i] != "=":
            i += 2 if line[i] == "\\" else 1
        if i >= n:
            return None
        key = _unescape(line[start:i], ",= ")
        i += 1
        vstart = i
        if i < n and line[i] == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        else:
            while i < n and line[i] not in ", ":
                i += 1
        types[key] = _value_type(line[vstart:i])
        if i >= n or line[i] == " ":
            break
        i += 1  # comma
    return measurement, types


_CONFLICT_RE = re.compile(
    r'field type conflict: input field "(?P<field>.*?)" on measurement "(?P<measurement>.*)" '
    r"is type (?P<type>\w+), already exists as type"
)
_PARSE_RE = re.compile(r"unable to parse '(?P<line>.*?)': (?P<reason>[^\n]*?)(?= dropped=\d+$|\n|$)", re.S)
_DROPPED_RE = re.compile(r"dropped=(\d+)\s*$")


def dropped_count(message: str) -> int | None:
    m = _DROPPED_RE.search(message)
    return int(m.group(1)) if m else None


def parse_error_lines(message: str, lines: Iterable[str]) -> dict[int, str]:
    """Indices of ``lines`` that an "unable to parse 'LINE': reason" message names, with reasons."""
    if "unable to parse '" not in message:
        return {}
    out: dict[int, str] = {}
    for i, line in enumerate(lines):
        marker = f"unable to parse '{line}': "
        pos = message.find(marker)
        if pos < 0:
            continue
        rest = message[pos + len(marker) :]
        end = rest.find("\nunable to parse '")
        reason = rest if end < 0 else rest[:end]
        reason = _DROPPED_RE.sub("", reason).rstrip()
        out[i] = f"unable to parse '{line}': {reason}"
    return out


def conflict_lines(message: str, lines: Iterable[str]) -> list[int]:
    """Indices of ``lines`` matching a "field type conflict" message (measurement, field, type)."""
    m = _CONFLICT_RE.search(message)
    if not m:
        return []
    field, measurement, typ = m.group("field"), m.group("measurement"), m.group("type")
    out: list[int] = []
    for i, line in enumerate(lines):
        parsed = parse_fields(line)
        if parsed is not None and parsed[0] == measurement and parsed[1].get(field) == typ:
            out.append(i)
    return out
