"""statistics-csv with the shipped rules (flows/statistics.yaml) over the real files, into a real InfluxDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.flowkit import validate_doc
from tests.nodes.opendata.helpers import count, import_files, points
from tests.services.influxdb import InfluxDB
from tests.shared_data import REPO, shared_path

NS = 1_000_000_000
# Epoch seconds of January 1st, 00:00 Europe/Berlin.
S_1991, S_2001, S_2010, S_2020, S_2021, S_2022, S_2023 = (
    662684400,
    978303600,
    1262300400,
    1577833200,
    1609455600,
    1640991600,
    1672527600,
)
ENERGY = ("klima-dashboard", "Energieagentur Brandenburg")
PROFILE = "energiesteckbrief_daten_komplett.csv"
SUMME = "strom-_und_waermeerzeugung_ee_komplett__summe.csv"
CO2 = "strom-_und_waermeerzeugung_ee_komplett__zeitreihe_co2__summe__kommune.csv"
FOREST = ("klima-dashboard", "Forst Brandenburg")
CROWN = "waldzustandsbericht-kronenverlichtung.csv"
CLASSES = "waldzustandsbericht-schadstufen.csv"
FARMS = ("klima-dashboard", "Statistik Berlin-Brandenburg", "landwirtschaftliche_betriebe_brandenburg.csv")


def shipped_parser() -> dict[str, Any]:
    """The statistics-csv node of the shipped flow, so these tests check the shipped rules."""
    flow = YAML(typ="safe").load((REPO / "flows" / "statistics.yaml").read_text(encoding="utf-8"))
    [node] = [n for n in flow["nodes"] if n["type"] == "statistics-csv"]
    return {k: v for k, v in node.items() if k not in ("id", "wires")}


def parser(*files: dict[str, Any]) -> dict[str, Any]:
    return {"type": "statistics-csv", "files": list(files)}


async def test_real_files_exact_counts_and_values(influxdb: InfluxDB) -> None:
    files = [
        shared_path(*ENERGY, PROFILE),
        shared_path(*ENERGY, SUMME),
        shared_path(*ENERGY, CO2),
        shared_path(*FOREST, CROWN),
        shared_path(*FOREST, CLASSES),
        shared_path(*FARMS),
    ]
    result = await import_files(shipped_parser(), files, influxdb)
    assert result.errors == []
    assert len(result.readings) == 11 + 11 + 11 + 32 + 8 + 9
    assert count(influxdb, "energy_profile", "einwohner_gesamt_anzahl") == 11
    assert count(influxdb, "renewable_generation", "einwohner_gesamt_anzahl") == 11
    assert count(influxdb, "renewable_co2_savings", "einwohner_gesamt_anzahl") == 11
    assert count(influxdb, "forest_crown_defoliation", "mean_percent") == 32
    assert count(influxdb, "forest_damage_classes", "class_0_percent") == 8
    assert count(influxdb, "agricultural_holdings", "count") == 9

    profile = points(influxdb, "energy_profile")
    first, last = profile[0], profile[-1]
    # line 2 (2010): einwohner 11248, verbrauch_strom_menge_kwh 37887671,0000, PV 3000,7950 kW, 26,56007471 %
    assert (first["time"], first["ags"], first["municipality"]) == (S_2010 * NS, "12069020", "Bad Belzig")
    assert first["einwohner_gesamt_anzahl"] == 11248
    assert first["strukturdaten_einwohner_dichte_ew_qkm"] == 47.8964
    assert first["verbrauch_strom_menge_kwh"] == 37887671
    assert first["stromerzeugung_photovoltaik_leistung_kw"] == 3000.795
    assert first["stromerzeugung_anteil_stromverbrauch_prozent"] == 26.56007471
    # Empty cells are absent (no e-car count in any year); text columns are not stored.
    assert "strukturdaten_kfz_pkw_elektro_anzahl" not in first
    assert "strukturdaten_einwohner_quelle" not in first
    assert "typ" not in first
    # line 12 (2020): 31151758,0000 kWh, PV 15770,6110 kW, 70,90340778 %
    assert last["time"] == S_2020 * NS
    assert (last["verbrauch_strom_menge_kwh"], last["stromerzeugung_photovoltaik_leistung_kw"]) == (
        31151758,
        15770.611,
    )
    assert last["stromerzeugung_anteil_stromverbrauch_prozent"] == 70.90340778

    generation = points(influxdb, "renewable_generation", f"time = {S_2020 * NS}")
    # 2020: "Biomasse_Anlagenanzahl (Wärme)" 146,00; Solar_elektrische_Leistung_kW 15770,6110
    assert generation[0]["Biomasse_Anlagenanzahl (Wärme)"] == 146
    assert generation[0]["Solar_elektrische_Leistung_kW"] == 15770.611
    co2 = points(influxdb, "renewable_co2_savings", f"time = {S_2020 * NS}")
    # 2020: co2einsparung_stromerzeugung_alle_tco2e 19746,3662578110; leistung_stromerzeugung_photovoltaik_kw 2594,233
    assert co2[0]["co2einsparung_stromerzeugung_alle_tco2e"] == 19746.366257811
    assert co2[0]["leistung_stromerzeugung_photovoltaik_kw"] == 2594.233

    crown = points(influxdb, "forest_crown_defoliation")
    # years descending in the file: 2022;24 first, 1991;23 last
    assert (crown[0]["time"], crown[0]["mean_percent"]) == (S_1991 * NS, 23)
    assert (crown[-1]["time"], crown[-1]["mean_percent"]) == (S_2022 * NS, 24)
    classes = points(influxdb, "forest_damage_classes", "species = 'Eiche'")
    # 2021;Eiche;4;54;42 and 2022;Eiche;5;45;50
    assert [
        (p["time"], p["class_0_percent"], p["class_1_percent"], p["class_2_4_percent"]) for p in classes
    ] == [
        (S_2021 * NS, 4, 54, 42),
        (S_2022 * NS, 5, 45, 50),
    ]
    farms = points(influxdb, "agricultural_holdings")
    # year;value; with a trailing separator: 2001;6914; ... 2023;5370;
    assert [(p["time"], p["count"]) for p in (farms[0], farms[-1])] == [
        (S_2001 * NS, 6914),
        (S_2023 * NS, 5370),
    ]

    again = await import_files(shipped_parser(), files, influxdb)
    assert len(again.readings) == 82
    assert count(influxdb, "energy_profile", "einwohner_gesamt_anzahl") == 11
    assert count(influxdb, "forest_damage_classes", "class_0_percent") == 8


async def test_readme_name_of_the_co2_file_matches_too(tmp_path: Path) -> None:
    """The README names it …__zeitreihe_co2__summe.csv; both names use the same rule."""
    path = tmp_path / "strom-_und_waermeerzeugung_ee_komplett__zeitreihe_co2__summe.csv"
    path.write_bytes(shared_path(*ENERGY, CO2).read_bytes())
    result = await import_files(shipped_parser(), [path])
    assert result.errors == []
    assert {r["measurement"] for r in result.readings} == {"renewable_co2_savings"}
    assert len(result.readings) == 11


async def test_latin1_crlf_variant_gives_identical_points(tmp_path: Path) -> None:
    original = shared_path(*ENERGY, SUMME)
    baseline = await import_files(shipped_parser(), [original])
    variant = tmp_path / SUMME
    variant.write_bytes(original.read_text(encoding="utf-8").replace("\n", "\r\n").encode("latin-1"))
    result = await import_files(shipped_parser(), [variant])
    assert result.errors == []
    assert result.readings == baseline.readings
    assert "Wärmepumpe_Anlagenanzahl" in result.readings[0]["fields"]


async def test_every_bad_row_is_reported(tmp_path: Path, influxdb: InfluxDB) -> None:
    path = tmp_path / "waldzustandsbericht-schadstufen.csv"
    path.write_text(
        "\n".join(
            [
                "Jahr;Baumart;Schadstufe 0;Schadstufe 1;Schadstufe 2-4",
                "2021;Kiefer;10;69;20",  # 2: good
                "2021;Eiche;4,5;;42",  # 3: good, decimal comma, class 1 missing
                "21;Buche;7;53;40",  # 4: not a year
                "2022;;8;72;20",  # 5: no species
                "2022;Buche;8;viele;54",  # 6: not a number
                "2022;Buche;;;",  # 7: no values
                "2021;Kiefer;11;68;21",  # 8: same year and species as line 2
                "2022;Buche;8;38",  # 9: a field missing
                '2022;"Buche;8;38;54',  # 10: unbalanced quote
            ]
        )
        + "\r\n",
        encoding="utf-8",
    )
    other = tmp_path / "unknown.csv"
    other.write_text("Jahr;Wert\n2020;1\n", encoding="utf-8")
    renamed = tmp_path / "waldzustandsbericht-kronenverlichtung.csv"
    renamed.write_text("Jahr;Verlichtung\n2020;1\n", encoding="utf-8")
    result = await import_files(shipped_parser(), [path, other, renamed], influxdb)
    assert result.errors == [
        f"{path}:4: Jahr: '21' is not a year",
        f"{path}:5: Baumart is empty",
        f"{path}:6: Schadstufe 1: 'viele' is not a number",
        f"{path}:7: no values",
        f"{path}:8: duplicate row for year 2021, Kiefer (first on line 2)",
        f"{path}:9: expected 5 fields, got 4",
        f"{path}:10: malformed CSV line: unexpected end of data",
        f"{other}: no file rule matches 'unknown.csv' (patterns: energiesteckbrief_daten_komplett.csv, "
        "strom-_und_waermeerzeugung_ee_komplett__summe.csv, "
        "strom-_und_waermeerzeugung_ee_komplett__zeitreihe_co2__summe*.csv, "
        "waldzustandsbericht-kronenverlichtung.csv, waldzustandsbericht-schadstufen.csv, "
        "landwirtschaftliche_betriebe_brandenburg.csv)",
        f"{renamed}:1: header lacks column(s) 'Kronenverlichtung' (rule 'waldzustandsbericht-kronenverlichtung.csv')",
    ]
    stored = points(influxdb, "forest_damage_classes")
    assert [(p["species"], p["class_0_percent"], p["class_1_percent"]) for p in stored] == [
        ("Eiche", 4.5, None),
        ("Kiefer", 10, 69),
    ]


async def test_text_in_a_value_column_rejects_the_row_unless_skipped(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("jahr;gemeinde;wert;quelle;notiz\n2020;Bad Belzig;1,5;Amt;\n2021;Bad Belzig;2;Amt;x\n")
    strict = await import_files(
        parser(
            {
                "match": "*.csv",
                "measurement": "m",
                "year": "jahr",
                "tags": {"place": "gemeinde"},
                "skip": ["quelle"],
            }
        ),
        [path],
    )
    assert strict.errors == [f"{path}:3: notiz: 'x' is not a number"]
    assert [r["fields"] for r in strict.readings] == [{"wert": 1.5}]
    lenient = await import_files(
        parser(
            {
                "match": "*.csv",
                "measurement": "m",
                "year": "jahr",
                "tags": {"place": "gemeinde"},
                "skip": ["quelle", "NOTIZ"],
            }
        ),
        [path],
    )
    assert lenient.errors == []
    assert [(r["tags"], r["fields"]) for r in lenient.readings] == [
        ({"place": "Bad Belzig"}, {"wert": 1.5}),
        ({"place": "Bad Belzig"}, {"wert": 2.0}),
    ]


def test_rule_config_is_validated() -> None:
    doc = {
        "id": "f",
        "nodes": [
            {
                "id": "p",
                **parser(
                    {"match": "*.csv", "measurement": "m", "year": "y", "fields": {"a": "b"}, "skip": ["x"]}
                ),
            },
            {"id": "q", "type": "statistics-csv", "files": []},
        ],
    }
    validated, issues = validate_doc(doc)
    assert validated is None
    messages = [i.format() for i in issues if i.severity == "error"]
    assert len(messages) == 2
    assert '`skip` applies only to `fields: "*"`' in messages[0]
    assert "files" in messages[1]
