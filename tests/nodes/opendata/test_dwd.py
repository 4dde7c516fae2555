"""dwd-climate-means: the documented mittelwerte_historisch.csv format through a real Engine and InfluxDB.

The real file is not in the shared data, so tests/data/dwd/mittelwerte_historisch.csv is a
sample written from the README's format (values are synthetic; see its README.md).
"""

from __future__ import annotations

from pathlib import Path

from tests.nodes.opendata.helpers import count, import_files, points
from tests.services.influxdb import InfluxDB

PARSER = {"type": "dwd-climate-means"}
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "dwd" / "mittelwerte_historisch.csv"
HEADER = "Bezeichnung;Stations_id;Bezugszeitraum;Datenquelle;Jan.;Feb.;März;Apr.;Mai;Jun.;Jul.;Aug.;Sept.;Okt.;Nov.;Dez.;Jahr"
NS = 1_000_000_000
S_1961 = -284000400  # 1961-01-01 00:00 Europe/Berlin
S_1991 = 662684400  # 1991-01-01 00:00 Europe/Berlin
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "year"]


async def test_sample_file_exact_points(influxdb: InfluxDB) -> None:
    result = await import_files(PARSER, [SAMPLE], influxdb)
    assert result.errors == []
    assert len(result.readings) == 4
    assert count(influxdb, "climate_means", "year") == 4
    stored = points(influxdb, "climate_means", "quantity = 'temperature'")
    assert [(p["time"], p["period"], p["label"], p["station_id"]) for p in stored] == [
        (S_1961 * NS, "1961-1990", "MITTEL_TEMP_1961_1990", "99999"),
        (S_1991 * NS, "1991-2020", "MITTEL_TEMP_1991_2020", "99999"),
    ]
    # MITTEL_TEMP_1961_1990: -0.9;0.1;3.6;8.1;13.3;16.6;17.9;17.4;13.8;9.3;4.3;0.9;8.7
    assert [stored[0][m] for m in MONTHS] == [
        -0.9,
        0.1,
        3.6,
        8.1,
        13.3,
        16.6,
        17.9,
        17.4,
        13.8,
        9.3,
        4.3,
        0.9,
        8.7,
    ]
    assert stored[0]["source"] == "SYNTHETIC sample, not DWD data"
    rain = points(influxdb, "climate_means", "quantity = 'precipitation' AND period = '1991-2020'")
    # MITTEL_1991_2020: 45.2;36.8;...;47.1;579.6
    assert (rain[0]["jan"], rain[0]["dec"], rain[0]["year"], rain[0]["label"]) == (
        45.2,
        47.1,
        579.6,
        "MITTEL_1991_2020",
    )
    again = await import_files(PARSER, [SAMPLE], influxdb)
    assert len(again.readings) == 4
    assert count(influxdb, "climate_means", "year") == 4


async def test_variants_latin1_crlf_commas_padding_give_the_same_points(tmp_path: Path) -> None:
    """DWD's own exports pad columns, end lines with `;`, may write Mrz; German tools write 8,7."""
    baseline = await import_files(PARSER, [SAMPLE])
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    header = lines[0].replace("März", "Mrz.") + ";"
    rows = []
    for line in lines[1:]:
        cells = line.split(";")
        cells[1] = "99999"
        cells[4:] = [f"  {c.replace('.', ',')}" for c in cells[4:]]
        rows.append(";".join(cells) + ";")
    variant = tmp_path / "mittelwerte_historisch.csv"
    variant.write_bytes("\r\n".join([header, *rows, ""]).encode("latin-1"))
    result = await import_files(PARSER, [variant])
    assert result.errors == []
    assert result.readings == baseline.readings


async def test_every_bad_row_is_reported(tmp_path: Path, influxdb: InfluxDB) -> None:
    values = ";".join(["1,0"] * 13)
    path = tmp_path / "mittelwerte_historisch.csv"
    path.write_text(
        "\n".join(
            [
                HEADER,
                f"MITTEL_1961_1990;5546;1961-1990;DWD;{values}",  # 2: good, station 05546
                f"MITTEL_TEMP_1991_2020;5546;;DWD;{values}",  # 3: good, period from the label
                f"NIEDERSCHLAG_1961_1990;5546;1961-1990;DWD;{values}",  # 4: unknown label
                f"MITTEL_1991_2020;;1991-2020;DWD;{values}",  # 5: no station
                f"MITTEL_TEMP;5546;;DWD;{values}",  # 6: no period anywhere
                "MITTEL_1991_2020;5546;1991-2020;DWD;1,0;x;" + ";".join(["1,0"] * 11),  # 7: not a number
                "MITTEL_1991_2020;5546;1991-2020;DWD;" + ";" * 12,  # 8: no values at all
                f"MITTEL_1961_1990;05546;1961-1990;DWD;{values}",  # 9: same as line 2
                f"MITTEL_1961_1990;5546;1961-1990;{values}",  # 10: a column missing
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = await import_files(PARSER, [path], influxdb)
    assert result.errors == [
        f"{path}:4: Bezeichnung 'NIEDERSCHLAG_1961_1990' is neither MITTEL_TEMP_… (temperature) "
        "nor MITTEL_… (precipitation)",
        f"{path}:5: Stations_id is empty",
        f"{path}:6: no reference period like 1961-1990 in Bezugszeitraum '' or Bezeichnung 'MITTEL_TEMP'",
        f"{path}:7: Feb.: 'x' is not a number",
        f"{path}:8: no values",
        f"{path}:9: duplicate precipitation means of station 05546 for 1961-1990 (first on line 2)",
        f"{path}:10: expected 17 fields, got 16",
    ]
    stored = points(influxdb, "climate_means")
    assert [(p["time"], p["quantity"], p["station_id"], p["period"], p["may"]) for p in stored] == [
        (S_1961 * NS, "precipitation", "05546", "1961-1990", 1.0),
        (S_1991 * NS, "temperature", "05546", "1991-2020", 1.0),
    ]


async def test_header_not_as_documented_rejects_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mittelwerte_historisch.csv"
    path.write_text("Stations_id;Jan.;Jahr\n5546;1,0;2,0\n", encoding="utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"\r\n\r\n")
    result = await import_files(PARSER, [path, empty])
    assert result.readings == []
    assert result.errors == [
        f"{path}:1: header lacks column(s) Bezeichnung, Bezugszeitraum, Datenquelle, Feb., März, Apr., Mai, "
        f"Jun., Jul., Aug., Sept., Okt., Nov., Dez. (expected {HEADER})",
        f"{empty}: file is empty (expected the header {HEADER})",
    ]
