"""SenseCAP S2120: raw decoder against the test vectors, and flattening into reading fields."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from engine.errors import DecodeError
from nodes.decoders import sensecap_s2120
from nodes.ttn import to_number
from tests.shared_data import shared_path


def _vectors() -> dict[str, dict[str, Any]]:
    data = json.loads(shared_path("ttn", "test_vectors", "sensecap_s2120_test_vectors.json").read_text())
    return {v["name"]: v for v in data["vectors"]}


@pytest.mark.parametrize("name", ["user_guide_combined_packet", "winter_measurement_negative_temp"])
def test_vector_decodes_exactly(name: str) -> None:
    vec = _vectors()[name]
    got = sensecap_s2120.decode(base64.b64decode(vec["frm_payload_base64"]), vec["f_port"])
    # JSON text comparison: also checks 0 vs 0.0 and "-3.4" (string) vs -3.4.
    assert json.dumps(got, sort_keys=True) == json.dumps(vec["expected"], sort_keys=True)


def test_unsupported_and_truncated_frames_are_errors() -> None:
    assert sensecap_s2120.decode(bytes.fromhex("0364"), 3) == {
        "errors": ["unsupported SenseCAP S2120 frame id 0x03 at byte 0"]
    }
    assert sensecap_s2120.decode(bytes.fromhex("01FFDE5B00"), 3) == {
        "errors": ["SenseCAP S2120 frame 0x01 at byte 0 is truncated"]
    }


def test_flatten_names_by_measurement_id_and_keeps_versions_as_strings() -> None:
    vec = _vectors()["user_guide_combined_packet"]
    fields: dict[str, Any] = {}
    sensecap_s2120.flatten(vec["expected"], fields, to_number, keep_strings=True)
    assert fields == {
        "battery": 100.0,
        "hardware_version": "1.1",
        "firmware_version": "1.3",
        "measure_interval": 600.0,
        "gps_interval": 86400.0,
        "air_temperature": 27.2,
        "air_humidity": 67.0,
        "light_intensity": 0.0,
        "uv_index": 0.0,
        "wind_speed": 0.0,
        "wind_direction": 282.0,
        "rain_hourly": 0.0,
        "barometric_pressure": 99860.0,
    }
    assert all(type(v) is float for k, v in fields.items() if not k.endswith("_version"))


def test_flatten_invalid_frame_raises() -> None:
    with pytest.raises(DecodeError, match=r"SenseCAP decoder reported an invalid frame \(err=-1\)"):
        sensecap_s2120.flatten({"err": -1, "valid": False, "messages": []}, {}, to_number, True)
