"""build_line's compiled shapes and float-text cache write exactly what the value-by-value builder wrote.

``reference_build_line`` is a frozen copy of the builder before the shapes were compiled (without its
caches, which only ever saved time), so the comparison fails if the module's slow path drifts too.
"""

from __future__ import annotations

import enum
import math
import random
import re
import struct
from collections.abc import Mapping
from typing import Any

import pytest

import nodes.influx_lineproto as lp
from nodes.influx_lineproto import LineProtocolError, build_line

# -- frozen reference --------------------------------------------------------------------------------

_ESC_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESC_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESC_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})
_AMBIGUOUS_MEASUREMENT = re.compile(r"\\[ ,]")
_AMBIGUOUS_KEY = re.compile(r"\\[ ,=]")
_MIN, _MAX = -(2**63), 2**63 - 1


def _ref_name(name: str, table: dict[int, str], ambiguous: re.Pattern[str], what: str, chars: str) -> str:
    out = name.translate(table)
    if out.endswith("\\") or ambiguous.search(name):
        raise LineProtocolError(
            f"{what} {name!r} ends with a backslash or has one before {chars}, "
            "which line protocol cannot express"
        )
    return out


def _ref_key(key: str) -> str:
    return _ref_name(key, _ESC_KEY, _AMBIGUOUS_KEY, "name", "a space, comma or '='")


def _ref_tag_value(value: str) -> str:
    out = value.translate(_ESC_KEY)
    return out + " " if out.endswith("\\") else out


def _ref_value(value: Any) -> str | None:
    t = type(value)
    if t is float:
        if not math.isfinite(value):
            return None
        s = repr(value)
        return s[:-2] if s.endswith(".0") else s
    if t is int:
        if not _MIN <= value <= _MAX:
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
        return _ref_value(int(value))
    if isinstance(value, float):
        return _ref_value(float(value))
    if isinstance(value, str):
        return _ref_value(str(value))
    raise LineProtocolError(f"unsupported field value type {type(value).__name__}")


def reference_build_line(
    measurement: str, tags: Mapping[Any, Any] | None, fields: Mapping[Any, Any], timestamp: int | None
) -> str:
    if not measurement:
        raise LineProtocolError("measurement is empty")
    m = _ref_name(measurement, _ESC_MEASUREMENT, _AMBIGUOUS_MEASUREMENT, "measurement", "a space or comma")
    if m[0] == "#":
        raise LineProtocolError(f"measurement {measurement!r} starts with '#' (a comment in line protocol)")
    parts = [m]
    if tags:
        for k in sorted(tags):
            v = tags[k]
            if v is None:
                continue
            ek = _ref_key(k if type(k) is str else str(k))
            ev = _ref_tag_value(v if type(v) is str else str(v))
            if ek and ev:
                parts.append(f",{ek}={ev}")
    sk = "".join(parts)
    out: list[str] = []
    for k in sorted(fields) if len(fields) > 1 else fields:
        s = _ref_value(fields[k])
        if s is None:
            continue
        ek = _ref_key(k if type(k) is str else str(k))
        if not ek:
            raise LineProtocolError("a field name is empty")
        out.append(f"{ek}={s}")
    if not out:
        raise LineProtocolError("no field with a value (None, NaN and infinity are skipped)")
    if timestamp is None:
        return f"{sk} {','.join(out)}"
    return f"{sk} {','.join(out)} {timestamp}"


# -- generators --------------------------------------------------------------------------------------


class Level(enum.IntEnum):
    LOW = 1


class Reading(float):
    pass


NAME_CHARS = "abcXYZ_09 ,=\\\"'.%()#{}\n\tüé€-"
SPECIAL_FLOATS = [0.0, -0.0, 1e21, 1e-7, 1e16, 1e15, 9999999999999998.0, 28200.0, 10.0, -97.0, 0.1, 5e-324,
                  1.7976931348623157e308, -1.7976931348623157e308, 123456789.0, 1.5, 24.59]  # fmt: skip
NON_FINITE = [math.nan, math.inf, -math.inf]


def gen_name(r: random.Random) -> str:
    if r.random() < 0.5:
        return "".join(r.choice("abcdefgh_") for _ in range(r.randint(1, 6)))
    return "".join(r.choice(NAME_CHARS) for _ in range(r.randint(0, 7)))


def gen_float(r: random.Random) -> float:
    c = r.random()
    if c < 0.25:
        return r.choice(SPECIAL_FLOATS)
    if c < 0.3:
        return r.choice(NON_FINITE)
    if c < 0.5:
        return float(r.randint(-(10**6), 10**6))
    if c < 0.7:
        return round(r.uniform(-100, 100), r.randint(0, 3))
    if c < 0.85:
        return r.uniform(-1, 1) * 10.0 ** r.randint(-30, 30)
    x: float = struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0]
    return x


def gen_int(r: random.Random) -> int:
    c = r.random()
    if c < 0.1:
        return r.choice([_MIN, _MAX, _MIN - 1, _MAX + 1, 2**70, -(2**70), 0])
    return r.randint(-(10 ** r.randint(0, 18)), 10 ** r.randint(0, 18))


def gen_value(r: random.Random, kind: str) -> Any:
    if kind == "float":
        return gen_float(r)
    if kind == "int":
        return gen_int(r)
    if kind == "bool":
        return r.random() < 0.5
    if kind == "str":
        return "".join(r.choice("ab \"\\\n'é") for _ in range(r.randint(0, 6)))
    if kind == "none":
        return None
    if kind == "intenum":
        return Level.LOW
    return Reading(gen_float(r))


KINDS = ["float"] * 6 + ["int"] * 4 + ["bool", "str", "none", "intenum", "floatsub"]


def outcome(fn: Any, *args: Any) -> tuple[str, str]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # compare the kind and message of any failure
        return type(exc).__name__, str(exc)


def check(measurement: str, tags: dict[Any, Any] | None, fields: dict[Any, Any], ts: int | None) -> None:
    expected = outcome(reference_build_line, measurement, tags, fields, ts)
    # twice: the first call may compile the shape or fill the caches, the second uses them
    assert outcome(build_line, measurement, tags, fields, ts) == expected, (measurement, tags, fields, ts)
    assert outcome(build_line, measurement, tags, fields, ts) == expected, (measurement, tags, fields, ts)


# -- tests -------------------------------------------------------------------------------------------

TTN_TAGS = {
    "device_id": "eui-a84041edd184a0c0",
    "dev_eui": "A84041EDD184A0C0",
    "application": "klimadaten-bad-belzig",
    "location": "Bad Belzig Wiese",
    "soil_type": "Sand",
    "land_use": "Grünland",
    "site": "boden",
}
TTN_FIELDS = {"Bat": 3.625, "TempC_DS18B20": 24.1, "conduct_SOIL": 28200.0, "temp_SOIL": 24.59, "water_SOIL": 10.0,
              "f_port": 2, "f_cnt": 1, "rssi": -97.0, "snr": 6.5, "gateway_count": 1, "spreading_factor": 9,
              "frequency": 867500000, "latitude": 52.1, "longitude": 12.5}  # fmt: skip


def test_ttn_reading() -> None:
    line = build_line("ttn", TTN_TAGS, TTN_FIELDS, 1715678467569498830)
    assert line == (
        "ttn,application=klimadaten-bad-belzig,dev_eui=A84041EDD184A0C0,device_id=eui-a84041edd184a0c0,"
        "land_use=Grünland,location=Bad\\ Belzig\\ Wiese,site=boden,soil_type=Sand "
        "Bat=3.625,TempC_DS18B20=24.1,conduct_SOIL=28200,f_cnt=1i,f_port=2i,frequency=867500000i,"
        "gateway_count=1i,latitude=52.1,longitude=12.5,rssi=-97,snr=6.5,spreading_factor=9i,"
        "temp_SOIL=24.59,water_SOIL=10 1715678467569498830"
    )
    assert line == reference_build_line("ttn", TTN_TAGS, TTN_FIELDS, 1715678467569498830)


@pytest.mark.parametrize("seed", range(4))
def test_random_readings_match_the_reference(seed: int) -> None:
    r = random.Random(seed)
    # a few key sets reused with changing value types: the compiled shape must key on the types
    key_sets = [[gen_name(r) for _ in range(r.randint(1, 8))] for _ in range(40)]
    key_sets.append(["a.0", "b", "c.0,", "%d", "x\\", "e=1.0"])
    key_sets.append(list(TTN_FIELDS))
    for _ in range(1500):
        keys = r.choice(key_sets)
        if r.random() < 0.3:
            kinds = [r.choice(["float", "int"]) for _ in keys]  # shapes the fast path takes
        elif r.random() < 0.5:
            kinds = ["float" if r.random() < 0.7 else "int" for _ in keys]
        else:
            kinds = [r.choice(KINDS) for _ in keys]
        fields = {k: gen_value(r, kind) for k, kind in zip(keys, kinds, strict=False)}
        if r.random() < 0.5:  # same keys, another insertion order
            items = list(fields.items())
            r.shuffle(items)
            fields = dict(items)
        tags = r.choice([None, {}, TTN_TAGS, {gen_name(r): gen_name(r) for _ in range(r.randint(1, 3))}])
        measurement = r.choice(["ttn", "m", gen_name(r)])
        ts = r.choice([None, 0, 1715678467569498830, r.randint(0, 2**62)])
        check(measurement, tags, fields, ts)


def test_float_texts_and_skips() -> None:
    for x in [*SPECIAL_FLOATS, *NON_FINITE]:
        check("m", None, {"v": x}, None)
        check("m", None, {"v": x, "n": 3}, 5)
        check("m", None, {"a": 1.0, "v": x, "w": -x}, 5)
    # the float cache keeps 0.0 and -0.0 apart (equal dict keys, texts "0" and "-0")
    assert build_line("m", None, {"a": 0.0}, None) == "m a=0"
    assert build_line("m", None, {"a": -0.0}, None) == "m a=-0"
    assert build_line("m", None, {"a": 0.0}, None) == "m a=0"
    # ints and floats that are equal keep their own texts
    assert build_line("m", None, {"a": 5.0, "b": 5}, None) == "m a=5,b=5i"
    assert build_line("m", None, {"a": 5, "b": 5.0}, None) == "m a=5i,b=5"
    assert build_line("m", None, {"a": True, "b": 1}, None) == "m a=true,b=1i"


def test_errors_match_the_reference() -> None:
    cases: list[dict[Any, Any]] = [
        {"v": math.nan},
        {"v": math.nan, "w": math.inf},
        {"a": 2**63},
        {"a": -(2**63) - 1, "b": 1.0},
        {"a": 1.0, "b\\": 2.0},
        {"": 1.0},
        {"": 1.0, "b": 2},
        {"a": 2**64, "z\\": 1.0},
        {"a\\": 1.0, "z": 2**64},
        {"a": object()},
        {1: 1.0, "b": 2.0},
    ]
    for fields in cases:
        check("m", None, fields, None)
        check("m", {"t": "x"}, fields, 1)
    check("", None, {"a": 1.0}, None)
    check("#m", None, {"a": 1.0}, None)
    check("m\\", None, {"a": 1.0}, None)


def test_tag_values_that_are_equal_but_written_differently() -> None:
    # 1, 1.0 and True are equal dict keys; the series cache must not answer one for the other
    for value in [1, True, 1.0, "1", 1, True]:
        check("m", {"t": value}, {"a": 1.0}, None)
    for key in [1, True, 1.0, "1"]:
        check("m", None, {key: 2.0}, None)


def test_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lp, "_CACHE_LIMIT", 5)
    r = random.Random(7)
    for i in range(200):
        fields = {f"k{i % 13}": gen_float(r), f"n{i % 3}": i, "x": float(i % 17)}
        check("m", {"t": f"v{i % 11}"}, fields, i)
    assert len(lp._float_text) <= 5
    assert len(lp._plans) <= 5
    assert len(lp._series_cache) <= 5


def test_non_dict_mappings_go_value_by_value() -> None:
    class Fields(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Any:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    assert build_line("m", None, Fields({"b": 2.0, "a": 1}), None) == "m a=1i,b=2"
