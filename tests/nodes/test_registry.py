"""registry-enrich: the real, dirty ttn-sensoren.csv, enrichment through the engine, and reloads."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigError
from nodes.registry import Device, RegistryEnrichNode, load_registry, parse_registry
from tests.flowkit import run_flow
from tests.shared_data import shared_path


def _csv() -> Path:
    return shared_path("klima-dashboard", "The Things Network", "ttn-sensoren.csv")


HEADER = "device_id;location;measurement;soil_type;land_use;latitude;longitude\n"

EXPECTED_PROBLEMS = [
    (10, "inconsistent spelling of land_use 'Weide/Wiese'", "repaired: read as 'Wiese/Weide'"),
    (11, "inconsistent spelling of land_use 'Weide/Wiese'", "repaired: read as 'Wiese/Weide'"),
    (11, "decimal comma in longitude '12,3630350813424'", "repaired: read as 12.3630350813424"),
    (13, "decimal comma in latitude '52,2066684393215'", "repaired: read as 52.2066684393215"),
    (18, "extra empty field 2", "repaired: field dropped"),
    (22, "coordinates 52.45507363065665, 13.3056024 are 68 km from the other 'Arensnest' sensors", "kept"),
    (23, "coordinates 52.45507363065665, 13.3056024 are 68 km from the other 'Arensnest' sensors", "kept"),
    (
        28,
        "comma instead of ';' after the device id",
        "repaired: split into 'eui-8cf9572000064e10' and 'Bad Belzig'",
    ),
    (31, "inconsistent spelling of location 'Bad belzig'", "repaired: read as 'Bad Belzig'"),
    (36, "coordinates 52.45507363065665, 13.3056024 are 68 km from the other 'Arensnest' sensors", "kept"),
    (
        37,
        "duplicate device_id eui-8cf9572000089942 (line 4: Fredersdorf / Maisacker 3-10dm; "
        "this row: Klein Jasedow / Agroforstmonitoring1)",
        "skipped: first row (line 4) kept",
    ),
    (40, "inconsistent spelling of land_use 'Garten/Acke'", "repaired: read as 'Garten/Acker'"),
    (43, "soil_type missing (6 fields; 'Baum/Wald' is a land_use)", "repaired: soil_type left empty"),
    (44, "soil_type missing (6 fields; 'Baum/Wald' is a land_use)", "repaired: soil_type left empty"),
    (45, "soil_type missing (6 fields; 'Baum/Wald' is a land_use)", "repaired: soil_type left empty"),
]


# -- the real file ------------------------------------------------------------------------------


def test_real_registry_devices_and_exact_problem_list() -> None:
    load = load_registry(_csv())
    assert len(load.devices) == 43  # 44 rows, one duplicate skipped
    assert [(p.line, p.reason, p.action) for p in load.problems] == EXPECTED_PROBLEMS
    assert load.report()[4] == {
        "line": 18,
        "reason": "extra empty field 2",
        "action": "repaired: field dropped",
    }


def test_real_registry_repairs() -> None:
    d = load_registry(_csv()).devices
    # decimal commas
    assert d["eui-2cf7f1c044300015"] == Device(
        "eui-2cf7f1c044300015", 11, "Arensnest", "Wetterstation", "lehmiger Sand", "Wiese/Weide",
        52.150582928078855, 12.3630350813424,
    )  # fmt: skip
    assert d["eui-a84041fb9184a0f8"].latitude == 52.2066684393215
    # comma after the device id
    assert d["eui-8cf9572000064e10"] == Device(
        "eui-8cf9572000064e10", 28, "Bad Belzig", "Str.d.Einheit", "Sand", "Baum/Wald",
        52.14113920051047, 12.588103595325974,
    )  # fmt: skip
    # extra empty field
    assert d["eui-a840418c0187c323"] == Device(
        "eui-a840418c0187c323", 18, "Wiesenburg", "alte Buche", "Sand", "Baum/Wald",
        52.11001140259266, 12.451317861729372,
    )  # fmt: skip
    # soil_type missing
    assert d["arensnest-baeume3"] == Device(
        "arensnest-baeume3",
        45,
        "Arensnest",
        "Bewässerung3",
        None,
        "Baum/Wald",
        52.150559953520606,
        12.4395986195572,
    )
    # duplicate: the first row wins
    assert d["eui-8cf9572000089942"].measurement == "Maisacker 3-10dm"
    assert d["eui-8cf9572000089942"].line == 4
    # spellings
    assert d["eui-8cf9572000064de1"].location == "Bad Belzig"
    assert d["eui-a84041f92188d030"].land_use == "Garten/Acker"
    assert d["eui-a840411bf185a78a"].land_use == "Wiese/Weide"
    # non-eui names are ordinary device ids
    assert d["allmendeacker"].location == "Schlamau"


def test_real_registry_vocabularies() -> None:
    d = load_registry(_csv()).devices
    assert {dev.land_use for dev in d.values()} == {"Baum/Wald", "Garten/Acker", "Wiese/Weide"}
    assert {dev.soil_type for dev in d.values()} == {"Sand", "Moor", "lehmiger Sand", None}
    assert {dev.location for dev in d.values()} == {
        "Bad Belzig", "Arensnest", "Fredersdorf", "Lübnitz", "Schlamau", "Klein Glien", "Wiesenburg",
        "Planetal", "Gräben", "Klein Jasedow",
    }  # fmt: skip


# -- parser edge cases -------------------------------------------------------------------------


def test_unclassifiable_short_row_and_bad_rows_are_skipped_and_reported() -> None:
    text = HEADER + (
        "a;X;m1;Sand;Baum/Wald;52.1;12.5\n"
        "b;X;m2;Sand;Baum/Wald;52.1;12.5\n"
        "c;X;m3;Kies;52.1;12.5\n"
        "d;X;m4\n"
        ";X;m5;Sand;Baum/Wald;52.1;12.5\n"
        "E;X;m6;Sand;Baum/Wald;north;12.5\n"
        "f;X;m7;Sand;Baum/Wald;;\n"
        "g;X;m8;Sand;Baum/Wald;95;12.5\n"
        "h;X;m9;Sand;Baum/Wald;52.1;12.5;\n"
    )
    load = parse_registry(text)
    assert sorted(load.devices) == ["a", "b", "e", "f", "g", "h"]
    assert load.devices["e"].latitude is None
    assert load.devices["e"].longitude is None
    assert [(p.line, p.reason, p.action) for p in load.problems] == [
        (4, "6 fields and 'Kies' is not clearly a soil_type or a land_use", "skipped"),
        (5, "3 fields, expected 7", "skipped"),
        (6, "empty device_id", "skipped"),
        (7, "device_id 'E' is not lower-case (TTN ids are)", "repaired: read as 'e'"),
        (7, "latitude 'north' is not a number", "kept without coordinates"),
        (8, "latitude is empty", "kept without coordinates"),
        (8, "longitude is empty", "kept without coordinates"),
        (9, "latitude '95' is out of range", "kept without coordinates"),
        (10, "extra empty field 8", "repaired: field dropped"),
    ]


def test_land_use_missing_is_recognised_too() -> None:
    text = HEADER + "a;X;m;Moor;Wiese/Weide;52.1;12.5\nb;X;m;Moor;52.1;12.5\n"
    load = parse_registry(text)
    assert load.devices["b"].soil_type == "Moor"
    assert load.devices["b"].land_use is None
    assert [p.reason for p in load.problems] == ["land_use missing (6 fields; 'Moor' is a soil_type)"]


def test_header_without_device_id_is_unusable() -> None:
    with pytest.raises(ConfigError, match=r"^line 1: header 'id;location' has no device_id column"):
        parse_registry("id;location\na;b\n")
    with pytest.raises(ConfigError, match=r"^registry file is empty"):
        parse_registry("")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read registry .*nope.csv'"):
        load_registry(tmp_path / "nope.csv")


def test_latin1_file_is_read_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes((HEADER + "a;Lübnitz;m;Sand;Baum/Wald;52.1;12.5\n").encode("latin-1"))
    load = load_registry(path)
    assert load.devices["a"].location == "Lübnitz"
    assert load.report() == [{"line": 0, "reason": "file is not UTF-8", "action": "read as Windows-1252"}]


# -- the node ----------------------------------------------------------------------------------


def _reading(device_id: str, dev_eui: str | None = None) -> dict[str, Any]:
    tags = {"device_id": device_id}
    if dev_eui:
        tags["dev_eui"] = dev_eui
    return {"measurement": "ttn", "tags": tags, "fields": {"Bat": 3.3}, "time": 1}


def _flow(path: Path | str, **config: Any) -> dict[str, Any]:
    return {
        "id": "reg",
        "nodes": [
            {
                "id": "enrich",
                "type": "registry-enrich",
                "path": str(path),
                **config,
                "wires": {"out": ["out"], "error": ["errors"]},
            },
            {"id": "out", "type": "collect"},
            {"id": "errors", "type": "collect"},
        ],
    }


async def test_enrich_registered_unknown_and_by_dev_eui() -> None:
    async with run_flow(_flow(_csv())) as h:
        await h.send("enrich", _reading("eui-2cf7f1c044300015"))
        await h.send("enrich", _reading("unknown-device", "0011223344556677"))
        await h.send("enrich", _reading("renamed-in-ttn", "A84041EDD184A0C0"))
        await h.send("enrich", _reading("arensnest-baeume1"))
        await h.send("enrich", {"not": "a reading"})
        await h.idle()
        out = h.payloads("out")
        errors = h.received("errors")
        node = h.engine.node("enrich")
        status = h.engine.runtimes["enrich"].status
    assert out[0] == {
        "measurement": "Wetterstation",
        "tags": {
            "device_id": "eui-2cf7f1c044300015",
            "registered": "true",
            "location": "Arensnest",
            "soil_type": "lehmiger Sand",
            "land_use": "Wiese/Weide",
        },
        "fields": {"Bat": 3.3, "latitude": 52.150582928078855, "longitude": 12.3630350813424},
        "time": 1,
    }
    assert out[1] == {
        "measurement": "ttn",
        "tags": {"device_id": "unknown-device", "dev_eui": "0011223344556677", "registered": "false"},
        "fields": {"Bat": 3.3},
        "time": 1,
    }
    assert out[2]["measurement"] == "Zegg Neupflanzung"
    assert out[2]["tags"]["location"] == "Bad Belzig"
    assert out[2]["tags"]["device_id"] == "renamed-in-ttn"
    assert out[3]["tags"] == {
        "device_id": "arensnest-baeume1",
        "registered": "true",
        "location": "Arensnest",
        "land_use": "Baum/Wald",
    }
    assert [m.meta["error"]["message"] for m in errors] == [
        "registry-enrich expects a reading payload with a tags object"
    ]
    assert isinstance(node, RegistryEnrichNode)
    assert [(p["line"], p["reason"], p["action"]) for p in node.load_report()] == EXPECTED_PROBLEMS
    assert (status.level, status.text) == ("warning", "43 devices, 15 problems")


async def test_measurement_kept_and_stored_as_tag() -> None:
    async with run_flow(_flow(_csv(), set_measurement=False, measurement_tag="site")) as h:
        await h.send("enrich", _reading("eui-a84041edd184a0c0"))
        await h.idle()
        (r,) = h.payloads("out")
    assert r["measurement"] == "ttn"
    assert r["tags"]["site"] == "Zegg Neupflanzung"


def _rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    # Make the change visible even on file systems with coarse timestamps.
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


async def test_file_change_is_picked_up_and_failed_reload_keeps_old(tmp_path: Path) -> None:
    path = tmp_path / "ttn-sensoren.csv"
    shutil.copyfile(_csv(), path)
    async with run_flow(_flow(path, check_interval=0)) as h:
        rt = h.engine.runtimes["enrich"]
        await h.send("enrich", _reading("new-sensor"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"]["registered"] == "false"

        _rewrite(path, HEADER + "new-sensor;Bad Belzig;Neu;Sand;Baum/Wald;52.1;12.5\n")
        await h.send("enrich", _reading("new-sensor"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"] == {
            "device_id": "new-sensor",
            "registered": "true",
            "location": "Bad Belzig",
            "soil_type": "Sand",
            "land_use": "Baum/Wald",
        }
        assert (rt.status.level, rt.status.text) == ("ok", "1 devices, 0 problems")

        _rewrite(path, "this is not a registry\n")
        await h.send("enrich", _reading("new-sensor"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"]["registered"] == "true"
        assert rt.status.level == "warning"
        assert rt.status.text.startswith("1 devices, 0 problems; reload failed: line 1: header")

        path.unlink()
        await h.send("enrich", _reading("new-sensor"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"]["registered"] == "true"
        assert rt.status.text.startswith("1 devices, 0 problems; reload failed: cannot read")


async def test_reload_is_not_checked_before_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "a;X;m;Sand;Baum/Wald;52.1;12.5\n")
    async with run_flow(_flow(path, check_interval="1h")) as h:
        _rewrite(path, HEADER + "b;X;m;Sand;Baum/Wald;52.1;12.5\n")
        await h.send("enrich", _reading("b"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"]["registered"] == "false"
        node = h.engine.node("enrich")
        assert isinstance(node, RegistryEnrichNode)
        node._next_check = 0.0  # as if the hour had passed
        await h.send("enrich", _reading("b"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"]["registered"] == "true"


async def test_missing_file_at_start_passes_readings_unregistered(tmp_path: Path) -> None:
    path = tmp_path / "later.csv"
    async with run_flow(_flow(path, check_interval=0)) as h:
        rt = h.engine.runtimes["enrich"]
        assert rt.status.level == "error"
        await h.send("enrich", _reading("a"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"]["registered"] == "false"
        path.write_text(HEADER + "a;X;m;Sand;Baum/Wald;52.1;12.5\n")
        await asyncio.sleep(0)
        await h.send("enrich", _reading("a"))
        await h.idle()
        assert h.payloads("out")[-1]["tags"]["registered"] == "true"
        assert (rt.status.level, rt.status.text) == ("ok", "1 devices, 0 problems")
