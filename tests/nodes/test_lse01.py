"""The LSE01 decoder against every published/computed test vector, for both vendor formatters."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from nodes.decoders import DECODERS, get_decoder, lse01
from tests.shared_data import shared_path

VECTOR_FILE = ("ttn", "test_vectors", "lse01_test_vectors.json")
FORMATTERS = {"device_repository_formatter": "device_repository", "dragino_v121_formatter": "dragino_v121"}


def _cases() -> list[Any]:
    # Collected at import time so each vector is its own test; the names are fixed here
    # so that a missing data directory still yields (skipped) tests, not zero tests.
    names = [
        ("vendor_example_moisture_ec", "device_repository_formatter"),
        ("vendor_example_moisture_ec", "dragino_v121_formatter"),
        ("vendor_example_unknown_fport", "device_repository_formatter"),
        ("winter_negative_temperatures", "device_repository_formatter"),
        ("winter_negative_temperatures", "dragino_v121_formatter"),
        ("summer_sand_no_ds18b20", "device_repository_formatter"),
        ("summer_sand_no_ds18b20", "dragino_v121_formatter"),
        ("real_captured_sensor_in_air", "device_repository_formatter"),
        ("real_captured_sensor_in_air", "dragino_v121_formatter"),
        ("real_captured_in_soil", "device_repository_formatter"),
        ("real_captured_in_soil", "dragino_v121_formatter"),
    ]
    return [pytest.param(v, f, id=f"{v}-{f}") for v, f in names]


def _vectors() -> dict[str, dict[str, Any]]:
    data = json.loads(shared_path(*VECTOR_FILE).read_text())
    return {v["name"]: v for v in data["vectors"]}


def _typed(d: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    return {k: (type(v).__name__, v) for k, v in d.items()}


@pytest.mark.parametrize(("name", "formatter"), _cases())
def test_vector(name: str, formatter: str) -> None:
    vec = _vectors()[name]
    payload = base64.b64decode(vec["frm_payload_base64"])
    assert payload.hex().upper() == vec["bytes_hex"]
    got = lse01.decode(payload, vec["f_port"], FORMATTERS[formatter])  # type: ignore[arg-type]
    assert _typed(got) == _typed(vec["expected"][formatter])


def test_every_vector_and_formatter_in_the_file_is_covered() -> None:
    covered = {(c.values[0], c.values[1]) for c in _cases()}
    in_file = {(name, f) for name, v in _vectors().items() for f in v["expected"] if f in FORMATTERS}
    assert in_file == covered


def test_negative_soil_temperature_keeps_vendor_off_by_one() -> None:
    # 0xFF6A is -150 in two's complement; both vendor formulas say -1.49.
    frame = bytes.fromhex("0CEEFFF10337FF6A003910")
    assert lse01.decode(frame, 2)["temp_SOIL"] == "-1.49"
    assert lse01.decode(frame, 2)["TempC_DS18B20"] == "-1.5"


def test_soil_temperature_minus_one_lsb_is_not_negative_zero() -> None:
    frame = bytes.fromhex("0CEE00000337FFFF003910")  # soil 0xFFFF -> (0xFFFF-0xFFFF)/100 = 0
    assert lse01.decode(frame, 2)["temp_SOIL"] == "0.00"


def test_battery_top_two_bits_are_masked() -> None:
    assert lse01.decode(bytes.fromhex("CE2900F107A5099B6E2890"), 2)["Bat"] == 3.625
    assert lse01.decode(bytes.fromhex("0E2900F107A5099B6E2890"), 2)["Bat"] == 3.625


@pytest.mark.parametrize("length", [0, 10, 12])
def test_wrong_frame_length_is_an_error_not_garbage(length: int) -> None:
    assert lse01.decode(bytes(length), 2) == {"errors": [f"LSE01 frame must be 11 bytes, got {length}"]}


def test_dragino_formatter_on_other_port_is_an_error() -> None:
    assert lse01.decode_dragino_v121(bytes(11), 42) == {"errors": ["unknown FPort"]}


def test_decoder_registry() -> None:
    assert get_decoder("lse01") is lse01.decode
    assert get_decoder("lse01-dragino") is lse01.decode_dragino_v121
    assert sorted(DECODERS) == ["lse01", "lse01-dragino", "sensecap-s2120"]
    with pytest.raises(
        KeyError, match="unknown decoder 'lse02' \\(known: lse01, lse01-dragino, sensecap-s2120\\)"
    ):
        get_decoder("lse02")
