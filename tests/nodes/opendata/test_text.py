"""The shared text helpers: encodings, German numbers and dates, per-line CSV records."""

from __future__ import annotations

import pytest

from nodes.opendata._text import (
    csv_lines,
    decode_bytes,
    parse_german_date,
    parse_number,
    parse_year,
    year_ns,
    zone,
)

BERLIN = zone("Europe/Berlin")


def test_decode_detects_utf8_bom_cp1252_and_latin1() -> None:
    assert decode_bytes("Geprüft".encode()) == ("Geprüft", "utf-8")
    assert decode_bytes(b"\xef\xbb\xbfJahr") == ("Jahr", "utf-8-sig")
    assert decode_bytes("Geprüft".encode("latin-1")) == ("Geprüft", "cp1252")
    assert decode_bytes("„Wärme“ 5 €".encode("cp1252")) == ("„Wärme“ 5 €", "cp1252")
    # 0x81 is undefined in Windows-1252: Latin-1 decodes anything.
    assert decode_bytes(b"a\x81\xfc") == ("a\x81ü", "latin-1")


@pytest.mark.parametrize(
    ("text", "value"),
    [("11248,0000", 11248.0), ("660", 660.0), ("-0.9", -0.9), (" 53,5 ", 53.5), (",5", 0.5), ("+3", 3.0)],
)
def test_numbers(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "k.A.", "1.234,5", "1e3", "12 cm", "nan", "-"])
def test_not_numbers(text: str) -> None:
    assert parse_number(text) is None


def test_dates_are_local_midnight_across_dst() -> None:
    # 25.01.2007 is CET (UTC+1), 07.04.2022 CEST (UTC+2): `TZ=Europe/Berlin date -d ... +%s`
    assert parse_german_date("25.01.2007", BERLIN) == 1169679600 * 10**9
    assert parse_german_date("07.04.2022", BERLIN) == 1649282400 * 10**9
    assert parse_german_date("7.4.2022 12:30", BERLIN) == (1649282400 + 45000) * 10**9
    assert year_ns(1961, BERLIN) == -284000400 * 10**9
    with pytest.raises(ValueError, match="is not a valid date"):
        parse_german_date("29.02.2023", BERLIN)
    with pytest.raises(ValueError, match=r"is not a date like 25\.01\.2007"):
        parse_german_date("2023-02-01", BERLIN)


def test_years() -> None:
    assert [parse_year(t) for t in ("2021", "2021,0", "21", "2021,5", "")] == [2021, 2021, None, None, None]


def test_csv_lines_number_physical_lines_and_isolate_broken_quotes() -> None:
    text = 'a;b\r\n\r\n1;"x, y"\n2;"open\n3;  "padded" \n'
    lines = list(csv_lines(text))
    assert [(line.number, line.fields) for line in lines] == [
        (1, ["a", "b"]),
        (3, ["1", "x, y"]),
        (4, None),
        (5, ["3", "padded"]),
    ]
    assert lines[2].problem == "malformed CSV line: unexpected end of data"
