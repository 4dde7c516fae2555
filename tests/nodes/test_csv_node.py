from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.errors import DecodeError, MessageError
from engine.message import Delivery, Message
from nodes.csv_node import CsvCodec, CsvConfig, decode_text
from tests.flowkit import run_flow, validate_doc

REPO = Path(__file__).resolve().parents[2]
GROUNDWATER = "Auskunftsplattform Wasser Land Brandenburg"
LEVEL = "Wasserstand(GOK) [cm u. GOK]"


@pytest.fixture
def dashboard() -> Path:
    """The Klima-Dashboard data files, checked out as ``shared/`` beside the repository."""
    path = REPO.parent / "shared" / "data" / "klima-dashboard"
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (clone the shared data beside the repository)")
    return path


def flow(**cfg: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "p", "type": "csv", **cfg, "wires": ["out"]},
            {"id": "out", "type": "collect"},
            {"id": "c", "type": "catch", "wires": ["errs"]},
            {"id": "errs", "type": "collect"},
        ],
    }


def codec(**cfg: Any) -> CsvCodec:
    return CsvCodec(CsvConfig(**cfg))


GROUNDWATER_CFG: dict[str, Any] = {"separator": ";", "dates": {"Datum": "%d.%m.%Y"}}


# -- real files ----------------------------------------------------------------------------


async def test_latin1_crlf_groundwater_file_decodes_with_auto(dashboard: Path) -> None:
    data = (dashboard / GROUNDWATER / "38413470,52.145030,12.634290.csv").read_bytes()
    assert b"Pr\xe4fix" in data  # the file really is ISO-8859-1 ...
    assert b"\r\n" in data  # ... with CRLF
    async with run_flow(flow(**GROUNDWATER_CFG)) as h:
        await h.send("p", data)
        await h.idle()
        [msg] = h.received("out")
        assert h.received("errs") == []
    rows = msg.payload
    assert msg.meta["csv"] == {"columns": ["Datum", "Präfix", LEVEL, "Hinweise"], "rows": 1089, "bad_rows": 0}
    assert len(rows) == 1089
    assert rows[0] == {"Datum": "1997-05-14", "Präfix": None, LEVEL: 596, "Hinweise": "Geprüft"}
    assert rows[-1] == {"Datum": "2023-05-22", "Präfix": None, LEVEL: 634, "Hinweise": "Ungeprüft"}
    assert sum(r["Hinweise"] == "Ungeprüft" for r in rows) == 32


async def test_same_series_in_lf_and_crlf_files_parses_identically(dashboard: Path) -> None:
    lf = (dashboard / GROUNDWATER / "38404690,52.157338,12.607846.csv").read_bytes()
    crlf = (dashboard / GROUNDWATER / "38413490,52.157338,12.607846.csv").read_bytes()
    assert b"\r\n" not in lf
    assert b"\r\n" in crlf
    async with run_flow(flow(**GROUNDWATER_CFG)) as h:
        await h.send("p", lf)
        await h.send("p", crlf)
        await h.idle()
        first, second = h.payloads("out")
    assert len(first) == 678
    assert first == second
    assert first[0] == {"Datum": "2007-01-25", "Präfix": None, LEVEL: 660, "Hinweise": "Geprüft"}
    assert first[1]["Datum"] == "2008-04-01"  # irregular sampling is kept as it is
    # line 565 of the file: 07.04.2022;"";655;"Geprüft, Beeinflusst"
    assert first[563] == {
        "Datum": "2022-04-07",
        "Präfix": None,
        LEVEL: 655,
        "Hinweise": "Geprüft, Beeinflusst",
    }
    assert [r["Hinweise"] for r in first].count("Geprüft, Beeinflusst") == 1


def test_latin1_file_read_as_utf8_is_a_decode_error(dashboard: Path) -> None:
    data = (dashboard / GROUNDWATER / "38413470,52.145030,12.634290.csv").read_bytes()
    with pytest.raises(DecodeError, match=r"^CSV is not valid utf-8 at byte 11: invalid continuation byte$"):
        decode_text(data, "utf-8")
    assert decode_text(data, "latin-1").startswith('"Datum";"Präfix";')


async def test_energieagentur_decimal_commas_become_floats(dashboard: Path) -> None:
    folder = dashboard / "Energieagentur Brandenburg"
    async with run_flow(flow(separator=";", decimal=",")) as h:
        for name in (
            "energiesteckbrief_daten_komplett.csv",
            "strom-_und_waermeerzeugung_ee_komplett__summe.csv",
            "strom-_und_waermeerzeugung_ee_komplett__zeitreihe_co2__summe__kommune.csv",
        ):
            await h.send("p", (folder / name).read_bytes())
        await h.idle()
        steckbrief, summe, co2 = h.received("out")
    assert [len(m.meta["csv"]["columns"]) for m in (steckbrief, summe, co2)] == [98, 52, 39]
    for m in (steckbrief, summe, co2):
        assert [r["jahr"] for r in m.payload] == list(range(2010, 2021))
    first = steckbrief.payload[0]
    assert first["einwohner_gesamt_anzahl"] == 11248
    assert first["strukturdaten_einwohner_ew"] == 11248.0  # "11248,0000"
    assert isinstance(first["strukturdaten_einwohner_ew"], float)
    assert first["strukturdaten_einwohner_dichte_ew_qkm"] == 47.8964  # "47,8964"
    assert first["amt_id"] is None  # ";;"
    assert first["gemeinde"] == "Bad Belzig"
    assert first["region"] == "Havelland-Fläming"
    assert first["strukturdaten_einwohner_quelle"] == (
        "Statistische Ämter des Bundes und der Länder - Regionaldatenbank Deutschland - "
        "Fortschreibung des Bevölkerungsstandes (Stand: 01.09.2016)"
    )
    assert summe.payload[0]["Biomasse_thermische_Arbeit_kWh"] == 1407780.0  # "1407780,00"
    assert co2.payload[0]["co2einsparung_stromerzeugung_alle_tco2e"] == 9358.584161367  # "9358,5841613670"


async def test_statistik_trailing_separator_drops_the_empty_column(dashboard: Path) -> None:
    data = (
        dashboard / "Statistik Berlin-Brandenburg" / "landwirtschaftliche_betriebe_brandenburg.csv"
    ).read_bytes()
    assert data.startswith(b"year;value;\n")
    async with run_flow(flow(separator=";")) as h:
        await h.send("p", data)
        await h.idle()
        [msg] = h.received("out")
    assert msg.meta["csv"]["columns"] == ["year", "value"]
    assert msg.payload == [
        {"year": 2001, "value": 6914},
        {"year": 2003, "value": 6709},
        {"year": 2005, "value": 6668},
        {"year": 2007, "value": 6704},
        {"year": 2010, "value": 5566},
        {"year": 2013, "value": 5400},
        {"year": 2016, "value": 5318},
        {"year": 2020, "value": 5413},
        {"year": 2023, "value": 5370},
    ]


async def test_ttn_sensor_list_bad_rows_go_to_catch_and_good_rows_still_flow(dashboard: Path) -> None:
    data = (dashboard / "The Things Network" / "ttn-sensoren.csv").read_bytes()
    async with run_flow(flow(separator=";", decimal=",")) as h:
        await h.send("p", data, topic="import/ttn")
        await h.idle()
        [msg] = h.received("out")
        errors = h.received("errs")
    assert len(msg.payload) == 39
    assert msg.meta["csv"]["bad_rows"] == 5
    # line 11: longitude written with a decimal comma
    assert msg.payload[9]["device_id"] == "eui-2cf7f1c044300015"
    assert msg.payload[9]["longitude"] == 12.3630350813424
    assert msg.payload[9]["latitude"] == "52.150582928078855"  # a decimal point is text when decimal is ","
    assert [e.meta["error"]["class"] for e in errors] == ["DecodeError"] * 5
    assert [e.meta["error"]["message"] for e in errors] == [
        "CSV line 18: expected 7 fields, got 8",
        "CSV line 28: expected 7 fields, got 6",
        "CSV line 43: expected 7 fields, got 6",
        "CSV line 44: expected 7 fields, got 6",
        "CSV line 45: expected 7 fields, got 6",
    ]
    assert errors[1].payload == (
        "eui-8cf9572000064e10,Bad Belzig;Str.d.Einheit;Sand;Baum/Wald;52.14113920051047;12.588103595325974"
    )
    assert errors[1].meta["csv"]["line"] == 28
    assert errors[1].topic == "import/ttn"
    assert all(e.meta["error"]["node"] == "p" for e in errors)


async def test_ttn_sensor_list_keep_and_skip(dashboard: Path) -> None:
    data = (dashboard / "The Things Network" / "ttn-sensoren.csv").read_bytes()
    async with run_flow(flow(separator=";", numbers=False, on_bad_row="keep")) as h:
        await h.send("p", data)
        await h.idle()
        [kept] = h.payloads("out")
        assert h.received("errs") == []
    assert len(kept) == 44
    assert kept[16] == {
        "device_id": "eui-a840418c0187c323",
        "location": None,
        "measurement": "Wiesenburg",
        "soil_type": "alte Buche",
        "land_use": "Sand",
        "latitude": "Baum/Wald",
        "longitude": "52.11001140259266",
        "_extra": ["12.451317861729372"],
    }
    assert kept[41]["device_id"] == "arensnest-baeume1"
    assert kept[41]["longitude"] is None
    async with run_flow(flow(separator=";", on_bad_row="skip")) as h:
        await h.send("p", data)
        await h.idle()
        [skipped] = h.payloads("out")
        assert h.received("errs") == []
    assert len(skipped) == 39


async def test_forst_file_as_one_message_per_row(dashboard: Path) -> None:
    data = (dashboard / "Forst Brandenburg" / "waldzustandsbericht-kronenverlichtung.csv").read_text()
    async with run_flow(flow(separator=";", output="messages")) as h:
        await h.send("p", data, topic="forst")
        await h.idle()
        msgs = h.received("out")
    assert len(msgs) == 32
    assert msgs[0].payload == {"Jahr": 2022, "Kronenverlichtung": 24}
    assert msgs[-1].payload == {"Jahr": 1991, "Kronenverlichtung": 23}
    assert msgs[-1].topic == "forst"
    assert msgs[-1].meta["csv"] == {
        "columns": ["Jahr", "Kronenverlichtung"],
        "line": 33,
        "index": 31,
        "count": 32,
    }


# -- behaviour on small inputs ---------------------------------------------------------------


async def test_messages_mode_interleaves_bad_rows_and_keeps_messages_independent() -> None:
    text = "a,b\n1,2\n3\n4,5\n"
    async with run_flow(flow(output="messages")) as h:
        await h.send("p", text, info={"source": "x"})
        await h.idle()
        msgs = h.received("out")
        [err] = h.received("errs")
    assert [m.payload for m in msgs] == [{"a": 1, "b": 2}, {"a": 4, "b": 5}]
    assert [m.meta["csv"]["index"] for m in msgs] == [0, 1]
    assert [m.meta["parts"] for m in msgs] == [
        {"id": msgs[0].id, "index": 0, "count": 2, "type": "array"},
        {"id": msgs[0].id, "index": 1, "count": 2, "type": "array"},
    ]
    msgs[0].meta["info"]["source"] = "changed"
    assert msgs[1].meta["info"] == {"source": "x"}
    assert err.payload == "3"
    assert err.meta["error"]["message"] == "CSV line 3: expected 2 fields, got 1"
    assert err.meta["csv"] == {"line": 3, "fields": ["3"]}


async def test_error_port_receives_bad_rows_when_wired() -> None:
    doc = flow()
    doc["nodes"][0]["wires"] = {"out": ["out"], "error": ["bad"]}
    doc["nodes"].append({"id": "bad", "type": "collect"})
    async with run_flow(doc) as h:
        await h.send("p", "a,b\n1,2,3\n")
        await h.idle()
        assert h.payloads("out") == [[]]
        assert [m.meta["error"]["message"] for m in h.received("bad")] == [
            "CSV line 2: expected 2 fields, got 3"
        ]
        assert h.received("errs") == []


async def test_nested_property_and_non_text_input() -> None:
    async with run_flow(flow(property="payload.csv", action="parse")) as h:
        await h.send("p", {"csv": "x\n1\n2,3\n", "name": "n"})
        await h.send("p", {"csv": 5})
        await h.idle()
        assert h.payloads("out") == [{"csv": [{"x": 1}], "name": "n"}]
        bad_row, not_text = h.received("errs")
        assert bad_row.payload == {"csv": "2,3", "name": "n"}
        assert bad_row.meta["error"]["message"] == "CSV line 3: expected 1 fields, got 2"
        assert not_text.meta["error"]["class"] == "MessageError"
        assert not_text.meta["error"]["message"] == "payload.csv is a int, not CSV text"


def test_quoted_separators_newlines_blank_lines_and_crlf() -> None:
    text = 'name,note\r\n\r\n"Wiese, nass","zwei\r\nZeilen"\r\n\r\nAcker,""\r\n'
    parsed = codec().parse(text)
    assert parsed.rows == [{"name": "Wiese, nass", "note": "zwei\r\nZeilen"}, {"name": "Acker", "note": None}]
    assert [line for line, _ in parsed.items] == [3, 6]


def test_bad_row_line_numbers_count_skipped_and_multiline_records() -> None:
    text = '# export 2024\nStation;Wert\n"a\nb";1\nc;2;3\n'
    parsed = codec(separator=";", skip_lines=1).parse(text)
    assert parsed.rows == [{"Station": "a\nb", "Wert": 1}]
    [bad] = parsed.bad_rows
    assert (bad.line, bad.text, bad.reason) == (5, "c;2;3", "expected 2 fields, got 3")


def test_header_options() -> None:
    assert codec(header=False).parse("1,2,\n3,4\n").rows == [{"col1": 1, "col2": 2}, {"col1": 3, "col2": 4}]
    assert codec(header=False, columns=["t", "v"]).parse("1,2\n").rows == [{"t": 1, "v": 2}]
    assert codec(columns=["t", "v"]).parse("time,value\n1,2\n").rows == [{"t": 1, "v": 2}]
    assert codec().parse("a,a,,b\n1,2,3,4\n").rows == [{"a": 1, "a_2": 2, "col3": 3, "b": 4}]


def test_empty_field_modes() -> None:
    assert codec(empty="string").parse("a,b\n,1\n").rows == [{"a": "", "b": 1}]
    assert codec(empty="omit").parse("a,b\n,1\n").rows == [{"b": 1}]


@pytest.mark.parametrize(
    ("cfg", "text", "expected"),
    [
        ({}, "12", 12),
        ({}, "-12.5", -12.5),
        ({}, "1e3", 1000.0),
        ({}, " 7 ", 7),
        ({}, "0815", "0815"),
        ({}, "12,5", "12,5"),
        ({}, "nan", "nan"),
        ({"decimal": ","}, "11248,0000", 11248.0),
        ({"decimal": ","}, "-0,5", -0.5),
        ({"decimal": ","}, "1.5", "1.5"),
        ({"decimal": ",", "thousands": "."}, "1.234.567,89", 1234567.89),
        ({"decimal": ",", "thousands": "."}, "1.234", 1234),
        ({"decimal": ",", "thousands": "."}, "12.34", "12.34"),
        ({"decimal": ",", "thousands": "."}, "01.09.2016", "01.09.2016"),
    ],
)
def test_number_notation(cfg: dict[str, Any], text: str, expected: Any) -> None:
    assert codec(**cfg).to_number(text) == expected
    assert type(codec(**cfg).to_number(text)) is type(expected)


def test_numbers_per_column() -> None:
    parsed = codec(numbers=["v"]).parse("id,v\n007,3\n12,4\n")
    assert parsed.rows == [{"id": "007", "v": 3}, {"id": "12", "v": 4}]
    assert codec(numbers=False).parse("id,v\n12,4\n").rows == [{"id": "12", "v": "4"}]


def test_date_outputs_and_time_zone() -> None:
    text = "Datum;t\n25.01.2007;1\n15.07.2024 14:30;2\n"
    dates = {"Datum": "%d.%m.%Y"}
    assert codec(separator=";", dates=dates).parse(text).bad_rows[0].reason == (
        "column 'Datum': '15.07.2024 14:30' does not match date format '%d.%m.%Y'"
    )
    assert codec(separator=";", dates=dates, date_output="epoch").parse(text).rows == [
        {"Datum": 1169679600, "t": 1}  # 2007-01-24T23:00:00Z = midnight in Berlin (CET)
    ]
    assert codec(separator=";", dates=dates, date_output="epoch_ms", timezone="UTC").parse(text).rows == [
        {"Datum": 1169683200000, "t": 1}
    ]
    with_time = {"Datum": "%d.%m.%Y %H:%M"}
    assert codec(separator=";", dates=with_time, on_bad_row="skip").parse(text).rows == [
        {"Datum": "2024-07-15T14:30:00+02:00", "t": 2}  # summer time
    ]
    assert codec(separator=";", dates=with_time, on_bad_row="keep").parse(text).rows == [
        {"Datum": "25.01.2007", "t": 1},
        {"Datum": "2024-07-15T14:30:00+02:00", "t": 2},
    ]
    offset = codec(dates={"ts": "%Y-%m-%dT%H:%M%z"}).parse("ts\n2024-07-15T14:30+0000\n").rows
    assert offset == [{"ts": "2024-07-15T14:30:00+00:00"}]


def test_decode_text_auto() -> None:
    assert decode_text("Präfix".encode(), "auto") == "Präfix"
    assert decode_text("Präfix".encode("latin-1"), "auto") == "Präfix"
    assert decode_text(b"\xef\xbb\xbfa;b", "auto") == "a;b"
    assert decode_text("ä;b".encode("utf-16"), "auto") == "ä;b"
    assert decode_text(b"\xef\xbb\xbfa;b", "utf-8") == "a;b"
    assert codec().parse("\ufeffa\n1\n").columns == ["a"]


def test_serialize_rows() -> None:
    c = codec(separator=";", decimal=",", line_ending="crlf")
    rows = [
        {"Datum": "2024-08-15", "Wert": 63.5, "Hinweis": "Geprüft; Beeinflusst"},
        {"Wert": None, "ok": True},
    ]
    assert c.serialize(rows) == (
        'Datum;Wert;Hinweis;ok\r\n2024-08-15;63,5;"Geprüft; Beeinflusst";\r\n;;;true\r\n'
    )
    assert codec(header=False).serialize([[1, "a"], [2, "b,c"]]) == '1,a\n2,"b,c"\n'
    with pytest.raises(MessageError, match="row 0 is a int; expected a dict or a list"):
        codec().serialize([1])


def test_serialize_then_parse_round_trips() -> None:
    rows = [{"station": "Bad Belzig, Nord", "level": 637, "temp": 12.25, "note": 'sagt "hallo"'}]
    c = codec(separator=";", decimal=",")
    assert c.parse(c.serialize(rows)).rows == rows


async def test_auto_serializes_lists_in_the_engine() -> None:
    async with run_flow(flow()) as h:
        await h.send("p", [{"a": 1, "b": "x"}])
        await h.idle()
        assert h.payloads("out") == ["a,b\n1,x\n"]


def test_config_validation() -> None:
    bad = [
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
        (
            {"timezone": "Europe/Belzig"},
            "unknown time zone 'Europe/Belzig' (use an IANA name like Europe/Berlin)",
        ),
        ({"decimal": ",", "thousands": ","}, "thousands separator and decimal mark must differ"),
        ({"separator": ";;"}, "String should have at most 1 character"),
        (
            {"dates": {"Datum": "dd.mm.yyyy"}},
            "date format 'dd.mm.yyyy' of column 'Datum' has no % directives",
        ),
    ]
    for cfg, message in bad:
        v, issues = validate_doc(flow(**cfg))
        assert v is None
        assert [i.message for i in issues if i.severity == "error"] == [message]


async def test_source_delivery_settles_once_every_row_and_bad_row_is_handled() -> None:
    settled: list[bool] = []
    async with run_flow(flow(output="messages")) as h:
        msg = Message("a,b\n1,2\n3\n4,5\n", deliveries=(Delivery(settled.append),))
        await h.engine.runtimes["p"].put(msg)
        await h.idle()
        assert len(h.received("out")) == 2
        assert len(h.received("errs")) == 1
        assert settled == [True]
