"""groundwater-csv: the real APW station files through a real Engine into a real InfluxDB."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.nodes.opendata.helpers import count, import_files, points
from tests.services.influxdb import InfluxDB
from tests.shared_data import shared_path

PARSER = {"type": "groundwater-csv"}
APW = "klima-dashboard", "Auskunftsplattform Wasser Land Brandenburg"
LATIN1_CRLF = "38413470,52.145030,12.634290.csv"  # ISO-8859-1, CRLF, 1089 rows
UTF8_LF = "38404690,52.157338,12.607846.csv"  # UTF-8, LF, 678 rows
UTF8_CRLF = "38413490,52.157338,12.607846.csv"  # UTF-8, CRLF, same rows as UTF8_LF

# Epoch seconds of local midnight (Europe/Berlin), from `TZ=Europe/Berlin date -d ... +%s`.
S_1997_05_14 = 863560800
S_2023_05_22 = 1684706400
S_2007_01_25 = 1169679600
S_2008_04_01 = 1207000800
S_2022_04_07 = 1649282400
NS = 1_000_000_000


async def test_real_files_exact_counts_and_values(influxdb: InfluxDB) -> None:
    files = [shared_path(*APW, name) for name in (LATIN1_CRLF, UTF8_LF, UTF8_CRLF)]
    result = await import_files(PARSER, files, influxdb)
    assert result.errors == []
    assert result.chunks == [1089, 678, 678]
    assert len(result.readings) == 1089 + 678 + 678
    assert count(influxdb, "groundwater", "depth_below_surface_cm") == 1089 + 678 + 678
    assert count(influxdb, "groundwater", "depth_below_surface_cm", "station = '38413470'") == 1089
    assert count(influxdb, "groundwater", "depth_below_surface_cm", "station = '38404690'") == 678
    assert count(influxdb, "groundwater", "depth_below_surface_cm", "station = '38413490'") == 678
    # Sum of the level column, by awk: awk -F';' 'NR>1{s+=$3} END{print s}'
    rows = influxdb.rows(
        "SELECT sum(depth_below_surface_cm) FROM groundwater WHERE station = '38413470'", "klima"
    )
    assert rows[0]["sum"] == 652629

    latin = points(influxdb, "groundwater", "station = '38413470'")
    # line 2: 14.05.1997;"";596;"Geprüft" (Latin-1 ü)
    assert latin[0] == {
        "time": S_1997_05_14 * NS,
        "station": "38413470",
        "depth_below_surface_cm": 596,
        "latitude": 52.14503,
        "longitude": 12.63429,
        "note": "Geprüft",
    }
    # line 1090: 22.05.2023;"";634;"Ungeprüft"
    assert (latin[-1]["time"], latin[-1]["depth_below_surface_cm"], latin[-1]["note"]) == (
        S_2023_05_22 * NS,
        634,
        "Ungeprüft",
    )
    assert sum(1 for p in latin if p["note"] == "Ungeprüft") == 32

    utf8 = points(influxdb, "groundwater", "station = '38404690'")
    # Irregular sampling: lines 2 and 3 are 25.01.2007 (660) and 01.04.2008 (523).
    assert [(p["time"], p["depth_below_surface_cm"]) for p in utf8[:2]] == [
        (S_2007_01_25 * NS, 660),
        (S_2008_04_01 * NS, 523),
    ]
    # line 565: 07.04.2022;"";655;"Geprüft, Beeinflusst" (comma inside quotes)
    [quoted] = [p for p in utf8 if p["time"] == S_2022_04_07 * NS]
    assert (quoted["depth_below_surface_cm"], quoted["note"]) == (655, "Geprüft, Beeinflusst")
    assert (utf8[0]["latitude"], utf8[0]["longitude"]) == (52.157338, 12.607846)


async def test_reimport_creates_no_duplicates(influxdb: InfluxDB) -> None:
    path = shared_path(*APW, LATIN1_CRLF)
    await import_files(PARSER, [path], influxdb)
    assert count(influxdb, "groundwater", "depth_below_surface_cm") == 1089
    again = await import_files(PARSER, [path], influxdb)
    assert len(again.readings) == 1089
    assert count(influxdb, "groundwater", "depth_below_surface_cm") == 1089


async def test_encodings_and_line_endings_give_identical_points(tmp_path: Path) -> None:
    """UTF-8+LF, UTF-8+CRLF and re-encodings as Latin-1+CRLF / UTF-8 with BOM are the same points."""
    original = shared_path(*APW, UTF8_LF)
    text = original.read_bytes().decode("utf-8")
    assert "\r" not in text
    variants = {
        "latin1-crlf": text.replace("\n", "\r\n").encode("latin-1"),
        "cp1252-lf": text.encode("cp1252"),
        "utf8-bom-crlf": b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"),
    }
    baseline = await import_files(PARSER, [original])
    assert len(baseline.readings) == 678
    for label, data in variants.items():
        folder = tmp_path / label
        folder.mkdir()
        (folder / UTF8_LF).write_bytes(data)
        result = await import_files(PARSER, [folder / UTF8_LF])
        assert result.errors == [], label
        assert result.readings == baseline.readings, label
    # The real UTF-8+CRLF file (other station id, same data) differs only in the station tag.
    crlf = await import_files(PARSER, [shared_path(*APW, UTF8_CRLF)])
    for a, b in zip(crlf.readings, baseline.readings, strict=True):
        assert a["tags"] == {"station": "38413490"}
        assert (a["fields"], a["time"]) == (b["fields"], b["time"])


async def test_zip_of_a_station_csv_gives_the_same_points(tmp_path: Path, influxdb: InfluxDB) -> None:
    csv_path = shared_path(*APW, LATIN1_CRLF)
    baseline = await import_files(PARSER, [csv_path])
    # As the portal delivers it: the archive carries ID,LAT,LON, the member only the id.
    archive = tmp_path / "38413470,52.145030,12.634290.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("38413470.csv", csv_path.read_bytes())
    # A member that carries the full name itself, inside an archive named anyhow.
    other = tmp_path / "download.zip"
    with zipfile.ZipFile(other, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"export/{LATIN1_CRLF}", csv_path.read_bytes())
    result = await import_files(PARSER, [archive, other], influxdb)
    assert result.errors == []
    assert result.readings == baseline.readings + baseline.readings
    assert count(influxdb, "groundwater", "depth_below_surface_cm") == 1089


async def test_every_bad_row_is_reported_with_file_line_and_reason(
    tmp_path: Path, influxdb: InfluxDB
) -> None:
    good = shared_path(*APW, UTF8_LF).read_text(encoding="utf-8").splitlines()
    lines = [
        *good[:3],  # header (1), 25.01.2007 (2), 01.04.2008 (3)
        '31.02.2008;"";530;"Geprüft"',  # 4: no such day
        '2008-04-09;"";530;"Geprüft"',  # 5: ISO date
        '10.04.2008;"";;"Ungeprüft"',  # 6: no value
        '11.04.2008;"";k.A.;"Ungeprüft"',  # 7: not a number
        '12.04.2008;"";531',  # 8: a field missing
        '13.04.2008;"";531;"Geprüft";"x"',  # 9: a field too many
        '25.01.2007;"";661;"Geprüft"',  # 10: date already on line 2
        '14.04.2008;"";532;"Geprüft',  # 11: unbalanced quote
        "",  # 12: blank lines are not rows
        '15.04.2008;"<";533,5;"Geprüft"',  # 13: good: prefix and a decimal comma
        '16.04.2008;"";534;"Geprüft";',  # 14: good: trailing separator
    ]
    path = tmp_path / UTF8_LF
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = await import_files(PARSER, [path], influxdb)
    assert result.errors == [
        f"{path}:4: Datum: '31.02.2008' is not a valid date",
        f"{path}:5: Datum: '2008-04-09' is not a date like 25.01.2007",
        f"{path}:6: Wasserstand: no value",
        f"{path}:7: Wasserstand: 'k.A.' is not a number",
        f"{path}:8: expected 4 fields, got 3",
        f"{path}:9: expected 4 fields, got 5",
        f"{path}:10: duplicate date 25.01.2007 (first on line 2)",
        f"{path}:11: malformed CSV line: unexpected end of data",
    ]
    assert all(c[:2] == ["RecordRejected", "MessageError"] for c in result.error_classes)
    stored = points(influxdb, "groundwater")
    assert [(p["depth_below_surface_cm"], p["prefix"]) for p in stored] == [
        (660, None),
        (523, None),
        (533.5, "<"),
        (534, None),
    ]


async def test_file_name_without_station_is_rejected_whole(tmp_path: Path) -> None:
    data = shared_path(*APW, UTF8_LF).read_bytes()
    plain = tmp_path / "grundwasser.csv"
    plain.write_bytes(data)
    archive = tmp_path / "38413470,52.145030,12.634290.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("38404690.csv", data)  # a different station than the archive names
    header = tmp_path / "38400000,52.1,12.6.csv"
    header.write_text("Datum;Wasserstand(NHN) [m ü. NHN]\n25.01.2007;52,1\n", encoding="utf-8")
    result = await import_files(PARSER, [plain, archive, header])
    assert result.readings == []
    assert result.errors == [
        f"{plain}: file name 'grundwasser.csv' does not name the station as ID,LAT,LON.csv "
        "(e.g. 38413430,52.142172,12.563414.csv)",
        f"{archive}!38404690.csv: ZIP member '38404690.csv' names station 38404690, "
        "but the archive '38413470,52.145030,12.634290.zip' station 38413470",
        f"{header}:1: unexpected header "
        '(expected "Datum";"Präfix";"Wasserstand(GOK) [cm u. GOK]";"Hinweise")',
    ]


async def test_readings_are_sent_in_chunks(influxdb: InfluxDB) -> None:
    result = await import_files({**PARSER, "chunk_size": 500}, [shared_path(*APW, LATIN1_CRLF)], influxdb)
    assert result.chunks == [500, 500, 89]
    assert count(influxdb, "groundwater", "depth_below_surface_cm") == 1089


async def test_header_is_checked_by_position_and_unit(tmp_path: Path) -> None:
    """Präfix/Hinweise may arrive mis-encoded; the unit of the level column must be cm below ground."""
    rows = '25.01.2007;"";660;"Geprüft"\n'
    mojibake = tmp_path / "a" / UTF8_LF
    spaced = tmp_path / "b" / UTF8_LF
    metres = tmp_path / "c" / UTF8_LF
    for path, header in (
        (mojibake, '"Datum";"PrÃ¤fix";"Wasserstand(GOK) [cm u. GOK]";"HinweisÃ©"'),
        (spaced, "Datum ; Präfix ; Wasserstand (GOK) [cm u.GOK] ; Hinweise ;"),
        (metres, '"Datum";"Präfix";"Wasserstand(NHN) [m ü. NHN]";"Hinweise"'),
    ):
        path.parent.mkdir()
        path.write_text(f"{header}\n{rows}", encoding="utf-8")
    result = await import_files(PARSER, [mojibake, spaced, metres])
    assert [(r["time"], r["fields"]["depth_below_surface_cm"]) for r in result.readings] == [
        (S_2007_01_25 * NS, 660.0),
        (S_2007_01_25 * NS, 660.0),
    ]
    assert result.errors == [
        f"{metres}:1: unexpected header "
        '(expected "Datum";"Präfix";"Wasserstand(GOK) [cm u. GOK]";"Hinweise")',
    ]
