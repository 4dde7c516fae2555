"""ttn-uplink: every sample message, the real captures, raw decoding, and the node's ports."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import DecodeError, MessageError
from nodes.ttn import (
    TtnEvent,
    TtnUplinkConfig,
    UplinkParser,
    rfc3339_to_ns,
    to_number,
    uplink_to_reading,
)
from tests.flowkit import run_flow, validate_doc
from tests.shared_data import shared_path

APP = "klimadaten-bad-belzig"


def _raw(name: str) -> bytes:
    return shared_path("ttn", "messages", name).read_bytes()


def _msg(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_raw(name))
    return data


def _real(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(shared_path("ttn", "real", name).read_text())
    return data


def _tags(device_id: str) -> dict[str, str]:
    return {"device_id": device_id, "dev_eui": device_id[4:].upper(), "application": APP}


# -- every sample of shared/data/ttn/messages ------------------------------------------------


def test_manifest_lists_exactly_the_samples_tested_here() -> None:
    manifest = json.loads(shared_path("ttn", "messages", "manifest.json").read_text())
    kinds = {Path(s["file"]).name: s["kind"] for s in manifest["samples"]}
    assert kinds == {
        "up_lse01_device_repo_formatter.json": "uplink",
        "up_lse01_winter_negative.json": "uplink",
        "up_lse01_dragino_v121_formatter.json": "uplink",
        "up_sensecap_s2120_measurement.json": "uplink",
        "up_sensecap_s2120_battery_and_measurement.json": "uplink",
        "up_8cf957_no_decoded_payload.json": "uplink",
        "join_lse01.json": "join",
        "down_ack_s2120.json": "down/ack",
        "malformed_truncated_uplink.json": "malformed",
    }


def test_lse01_device_repository_formatter() -> None:
    assert uplink_to_reading(_raw("up_lse01_device_repo_formatter.json")) == {
        "measurement": "ttn",
        "tags": _tags("eui-a84041edd184a0c0"),
        "fields": {
            "Bat": 3.625,
            "TempC_DS18B20": 24.1,
            "conduct_SOIL": 28200.0,
            "temp_SOIL": 24.59,
            "water_SOIL": 19.57,
            "f_port": 2,
            "f_cnt": 1432,
            "rssi": -97.0,
            "snr": 6.5,
            "gateway_count": 1,
            "spreading_factor": 9,
            "frequency": 867500000,
        },
        "time": 1715678467569498830,
    }


def test_lse01_winter_negative_temperatures() -> None:
    r = uplink_to_reading(_msg("up_lse01_winter_negative.json"))
    assert r == {
        "measurement": "ttn",
        "tags": _tags("eui-a84041f35187c320"),
        "fields": {
            "Bat": 3.31,
            "TempC_DS18B20": -1.5,
            "conduct_SOIL": 57.0,
            "temp_SOIL": -1.49,
            "water_SOIL": 8.23,
            "f_port": 2,
            "f_cnt": 2218,
            "rssi": -108.0,
            "snr": -3.25,
            "gateway_count": 1,
            "spreading_factor": 7,
            "frequency": 868100000,
        },
        "time": 1705473612442018419,
    }


def test_lse01_dragino_names_are_mapped_to_device_repository_names() -> None:
    r = uplink_to_reading(_msg("up_lse01_dragino_v121_formatter.json"))
    assert r == {
        "measurement": "ttn",
        "tags": _tags("eui-a84041b081878ca7"),
        "fields": {
            "Bat": 3.412,
            "Mod": 0.0,
            "Node_type": "LSE01",
            "conduct_SOIL": 42.0,
            "i_flag": 0.0,
            "s_flag": 1.0,
            "TempC_DS18B20": 0.0,
            "temp_SOIL": 18.37,
            "water_SOIL": 6.15,
            "f_port": 2,
            "f_cnt": 377,
            "rssi": -101.0,
            "snr": 2.0,
            "gateway_count": 1,
            "spreading_factor": 9,
            "frequency": 867700000,
        },
        "time": 1718888564434842631,
    }


def test_lse01_dragino_names_kept_when_mapping_is_off() -> None:
    r = uplink_to_reading(_msg("up_lse01_dragino_v121_formatter.json"), TtnUplinkConfig(lse01_names=False))
    assert isinstance(r, dict)
    assert r["fields"]["BatV"] == 3.412
    assert r["fields"]["temp_DS18B20"] == 0.0
    assert "Bat" not in r["fields"]


def test_sensecap_measurement_negative_temperature_string() -> None:
    r = uplink_to_reading(_msg("up_sensecap_s2120_measurement.json"))
    assert r == {
        "measurement": "ttn",
        "tags": _tags("eui-2cf7f1c044300015"),
        "fields": {
            "air_temperature": -3.4,
            "air_humidity": 91.0,
            "light_intensity": 1520.0,
            "uv_index": 0.2,
            "wind_speed": 3.1,
            "wind_direction": 245.0,
            "rain_hourly": 0.254,
            "barometric_pressure": 101320.0,
            "f_port": 3,
            "f_cnt": 5120,
            "rssi": -104.0,
            "snr": 1.75,
            "gateway_count": 1,
            "spreading_factor": 7,
            "frequency": 868300000,
        },
        "time": 1705473903581386712,
    }


def test_sensecap_battery_and_measurement() -> None:
    r = uplink_to_reading(_msg("up_sensecap_s2120_battery_and_measurement.json"))
    assert r == {
        "measurement": "ttn",
        "tags": _tags("eui-2cf7f1c044300015"),
        "fields": {
            "battery": 100.0,
            "firmware_version": "1.3",
            "hardware_version": "1.1",
            "gps_interval": 86400.0,
            "measure_interval": 600.0,
            "air_temperature": 27.2,
            "air_humidity": 67.0,
            "light_intensity": 0.0,
            "uv_index": 0.0,
            "wind_speed": 0.0,
            "wind_direction": 282.0,
            "rain_hourly": 0.0,
            "barometric_pressure": 99860.0,
            "f_port": 3,
            "f_cnt": 5101,
            "rssi": -103.0,
            "snr": 3.5,
            "gateway_count": 1,
            "spreading_factor": 7,
            "frequency": 867100000,
        },
        "time": 1705388401491456958,
    }


def test_sensecap_raw_decoding_equals_ttn_decoding() -> None:
    for name in ("up_sensecap_s2120_measurement.json", "up_sensecap_s2120_battery_and_measurement.json"):
        msg = _msg(name)
        ttn = uplink_to_reading(msg)
        del msg["uplink_message"]["decoded_payload"]
        local = uplink_to_reading(msg, TtnUplinkConfig(decoders={"eui-2cf7f1*": "sensecap-s2120"}))
        assert local == ttn


def test_8cf957_without_decoded_payload_is_an_error_with_reason() -> None:
    with pytest.raises(DecodeError) as err:
        uplink_to_reading(_msg("up_8cf957_no_decoded_payload.json"))
    assert str(err.value) == (
        "uplink has no decoded_payload and no decoder is configured for device eui-8cf9572000064df7"
    )


def test_join_is_an_event() -> None:
    msg = _msg("join_lse01.json")
    assert uplink_to_reading(msg) == TtnEvent("join", "eui-a840413e61878cad", msg)


def test_downlink_ack_is_an_event() -> None:
    msg = _msg("down_ack_s2120.json")
    assert uplink_to_reading(msg) == TtnEvent("down/ack", "eui-2cf7f1c044300015", msg)


def test_truncated_json_is_a_decode_error() -> None:
    with pytest.raises(
        DecodeError,
        match=r"^TTN message is not valid JSON: Unterminated string starting at: line 33 column 9 \(char 950\)$",
    ):
        uplink_to_reading(_raw("malformed_truncated_uplink.json"))


# -- real captures ----------------------------------------------------------------------------


LSE01_FIELDS = {"Bat", "TempC_DS18B20", "conduct_SOIL", "temp_SOIL", "water_SOIL"}
META_FIELDS = {"f_port", "f_cnt", "rssi", "snr", "gateway_count", "spreading_factor", "frequency"}


def test_real_lse01_41_uplinks() -> None:
    records = _real("humidr_lse01_storage_integration_41_uplinks.json")
    readings = [uplink_to_reading(r) for r in records]
    assert len(readings) == 41
    assert all(isinstance(r, dict) for r in readings)
    dicts = [r for r in readings if isinstance(r, dict)]
    for r in dicts:
        assert set(r["fields"]) - META_FIELDS == LSE01_FIELDS
        assert all(type(r["fields"][k]) is float for k in LSE01_FIELDS)
        assert r["tags"] == {
            "device_id": "eui-a8404194a1875ff3",
            "dev_eui": "A8404194A1875FF3",
            "application": "soulmbengue-app-lorawansrv-1",
        }
    # The first record has f_cnt 0, which TTN omits: no invented f_cnt.
    assert "f_cnt" not in dicts[0]["fields"]
    assert [r["fields"].get("f_cnt") for r in dicts[1:4]] == [1, 86, 87]
    assert all("f_cnt" in r["fields"] for r in dicts[1:])
    # Units inside strings ("3.384 V", "0 uS/cm", "30.11 °C") ...
    assert dicts[0]["fields"] == {
        "Bat": 3.384,
        "TempC_DS18B20": 0.0,
        "conduct_SOIL": 0.0,
        "temp_SOIL": 30.11,
        "water_SOIL": 0.0,
        "f_port": 2,
        "rssi": -42.0,
        "snr": 5.8,
        "gateway_count": 1,
        "spreading_factor": 12,
        "frequency": 867500000,
    }
    # ... and after the formatter switch ("3.332 V" with a numeric conduct_SOIL).
    assert {k: dicts[2]["fields"][k] for k in LSE01_FIELDS} == {
        "Bat": 3.332,
        "TempC_DS18B20": 0.0,
        "conduct_SOIL": 161.0,
        "temp_SOIL": 24.52,
        "water_SOIL": 31.73,
    }
    assert dicts[-1]["fields"]["water_SOIL"] == 48.0
    assert dicts[-1]["fields"]["Bat"] == 3.319
    assert dicts[0]["time"] == 1687271672869542824
    # "…30.780307500Z": trailing zeros of the nanoseconds are kept as nanoseconds.
    assert dicts[36]["time"] == 1687415670780307500
    times = [r["time"] for r in dicts]
    assert times == sorted(times)


def test_real_lse01_local_decoder_agrees_with_ttn_formatter() -> None:
    config = TtnUplinkConfig(decoders={"eui-a8404194a1875ff3": "lse01"}, decode_raw="always")
    for record in _real("humidr_lse01_storage_integration_41_uplinks.json"):
        ttn = uplink_to_reading(record)
        local = uplink_to_reading(record, config)
        assert local == ttn


def test_real_lgt92_without_decoded_payload_go_to_error() -> None:
    records = _real("humidr_lgt92_no_decoded_payload_3_uplinks.json")
    assert len(records) == 3
    # Dragino OUI and fPort 2, like an LSE01: still not decoded unless configured.
    config = TtnUplinkConfig(decoders={"eui-a84041*": "lse01"})
    for record in records:
        for cfg in (None, config):
            with pytest.raises(DecodeError) as err:
                uplink_to_reading(record, cfg)
            assert str(err.value) == (
                "uplink has no decoded_payload and no decoder is configured for device "
                "dragino-gps-lgt-92-a840410001819394"
            )


def test_lgt92_misconfigured_as_lse01_is_rejected_by_frame_length() -> None:
    record = _real("humidr_lgt92_no_decoded_payload_3_uplinks.json")[0]
    config = TtnUplinkConfig(default_decoder="lse01")
    with pytest.raises(DecodeError) as err:
        uplink_to_reading(record, config)
    assert str(err.value) == (
        "payload decoder for device dragino-gps-lgt-92-a840410001819394 failed: "
        "LSE01 frame must be 11 bytes, got 12 (f_port 2)"
    )


# -- raw decoding -----------------------------------------------------------------------------


def _without_decoded(name: str) -> dict[str, Any]:
    msg = _msg(name)
    del msg["uplink_message"]["decoded_payload"]
    return msg


@pytest.mark.parametrize(
    "decoders",
    [
        {"eui-a84041edd184a0c0": "lse01"},
        {"eui-a84041*": "lse01"},
        {"eui-2cf7f1*": "sensecap-s2120", "eui-a84041ed?184a0c0": "lse01"},
    ],
)
def test_raw_lse01_decoding_by_id_or_pattern(decoders: dict[str, str]) -> None:
    expected = uplink_to_reading(_msg("up_lse01_device_repo_formatter.json"))
    got = uplink_to_reading(
        _without_decoded("up_lse01_device_repo_formatter.json"), TtnUplinkConfig(decoders=decoders)
    )
    assert got == expected


def test_exact_id_beats_pattern_and_default() -> None:
    parser = UplinkParser(
        TtnUplinkConfig(
            decoders={"eui-a84041*": "lse01", "eui-a84041b081878ca7": "lse01-dragino"},
            default_decoder="sensecap-s2120",
        )
    )
    from nodes.decoders import lse01, sensecap_s2120

    assert parser.decoder_for("eui-a84041b081878ca7") is lse01.decode_dragino_v121
    assert parser.decoder_for("eui-a84041edd184a0c0") is lse01.decode
    assert parser.decoder_for("eui-2cf7f1c044300015") is sensecap_s2120.decode


def test_raw_dragino_decoder_gives_the_same_reading_as_ttn_with_that_formatter() -> None:
    expected = uplink_to_reading(_msg("up_lse01_dragino_v121_formatter.json"))
    got = uplink_to_reading(
        _without_decoded("up_lse01_dragino_v121_formatter.json"),
        TtnUplinkConfig(default_decoder="lse01-dragino"),
    )
    assert got == expected


def test_unknown_fport_goes_to_error() -> None:
    msg = _without_decoded("up_lse01_device_repo_formatter.json")
    msg["uplink_message"]["f_port"] = 42
    with pytest.raises(DecodeError) as err:
        uplink_to_reading(msg, TtnUplinkConfig(default_decoder="lse01"))
    assert (
        str(err.value) == "payload decoder for device eui-a84041edd184a0c0 failed: unknown FPort (f_port 42)"
    )


def test_bad_base64_and_missing_frm_payload() -> None:
    cfg = TtnUplinkConfig(default_decoder="lse01")
    msg = _without_decoded("up_lse01_device_repo_formatter.json")
    msg["uplink_message"]["frm_payload"] = "zik!A8Q"
    with pytest.raises(
        DecodeError, match=r"^frm_payload of device eui-a84041edd184a0c0 is not valid base64: 'zik!A8Q'$"
    ):
        uplink_to_reading(msg, cfg)
    del msg["uplink_message"]["frm_payload"]
    with pytest.raises(
        DecodeError, match=r"^uplink of device eui-a84041edd184a0c0 has no frm_payload to decode$"
    ):
        uplink_to_reading(msg, cfg)


def test_decode_raw_always_without_decoder_uses_ttn_payload() -> None:
    msg = _msg("up_lse01_device_repo_formatter.json")
    assert uplink_to_reading(msg, TtnUplinkConfig(decode_raw="always")) == uplink_to_reading(msg)


# -- normalisation details ------------------------------------------------------------------------


def _uplink(decoded: Any, **up: Any) -> dict[str, Any]:
    return {
        "end_device_ids": {
            "device_id": "dev-1",
            "application_ids": {"application_id": "app"},
            "dev_eui": "a84041aabbccddee",
        },
        "received_at": "2024-05-14T09:21:07.5Z",
        "uplink_message": {"f_port": 2, "decoded_payload": decoded, **up},
    }


def test_nested_values_flattened_and_types_normalised() -> None:
    r = uplink_to_reading(
        _uplink(
            {
                "a": {"b": 1, "c": {"d": "2.5 mm"}},
                "list": [1, "x"],
                "flag": True,
                "name": "probe",
                "pct": "19.57%",
                "hexish": "12ab",
                "none": None,
                "nan": float("nan"),
            }
        )
    )
    assert isinstance(r, dict)
    assert r["fields"] == {
        "a_b": 1.0,
        "a_c_d": 2.5,
        "list_0": 1.0,
        "list_1": "x",
        "flag": True,
        "name": "probe",
        "pct": 19.57,
        "hexish": "12ab",
        "f_port": 2,
    }
    assert r["tags"] == {"device_id": "dev-1", "dev_eui": "A84041AABBCCDDEE", "application": "app"}
    assert r["time"] == 1715678467500000000


def test_strings_can_be_dropped_and_aliases_added() -> None:
    cfg = TtnUplinkConfig(strings="drop", aliases={"Bat": "battery_v"})
    r = uplink_to_reading(_uplink({"BatV": 3.3, "Node_type": "LSE01", "t": "1.5"}), cfg)
    assert isinstance(r, dict)
    assert r["fields"] == {"battery_v": 3.3, "t": 1.5, "f_port": 2}


def test_integral_js_numbers_become_floats() -> None:
    r = uplink_to_reading(_uplink({"Bat": 3}))
    assert isinstance(r, dict)
    assert type(r["fields"]["Bat"]) is float


def test_radio_best_of_several_gateways_and_missing_settings() -> None:
    r = uplink_to_reading(
        _uplink(
            {"x": 1},
            f_cnt=7,
            rx_metadata=[
                {"rssi": -110, "snr": 9.5},
                {"channel_rssi": -90.5, "snr": -2},
                {"rssi": -100},
            ],
        )
    )
    assert isinstance(r, dict)
    assert r["fields"] == {"x": 1.0, "f_port": 2, "f_cnt": 7, "rssi": -90.5, "snr": 9.5, "gateway_count": 3}


def test_radio_can_be_switched_off() -> None:
    r = uplink_to_reading(_msg("up_lse01_device_repo_formatter.json"), TtnUplinkConfig(radio=False))
    assert isinstance(r, dict)
    assert set(r["fields"]) == LSE01_FIELDS | {"f_port", "f_cnt"}


def test_received_at_falls_back_to_uplink_message() -> None:
    msg = _uplink({"x": 1}, received_at="2024-01-01T00:00:00.000000001Z")
    del msg["received_at"]
    r = uplink_to_reading(msg)
    assert isinstance(r, dict)
    assert r["time"] == 1704067200000000001


def test_decoder_errors_in_decoded_payload() -> None:
    with pytest.raises(
        DecodeError, match=r"^payload decoder for device dev-1 failed: unknown FPort \(f_port 2\)$"
    ):
        uplink_to_reading(_uplink({"errors": ["unknown FPort"]}))


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ("[1, 2]", MessageError, "a TTN message must be a JSON object, got list"),
        (b"\xff\xfe", DecodeError, "TTN message is not valid JSON"),
        ({"uplink_message": {}}, MessageError, "not a TTN message: end_device_ids.device_id is missing"),
        (
            {"end_device_ids": {"device_id": ""}},
            MessageError,
            "not a TTN message: end_device_ids.device_id is missing",
        ),
    ],
)
def test_unusable_messages(payload: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        uplink_to_reading(payload)
    assert str(err.value).startswith(message)


def test_decoded_payload_not_an_object() -> None:
    with pytest.raises(DecodeError, match=r"^decoded_payload of device dev-1 is a list, not an object$"):
        uplink_to_reading(_uplink([1, 2]))


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"downlink_nack": {}}, "down/nack"),
        ({"downlink_sent": {}}, "down/sent"),
        ({"downlink_queued": {}}, "down/queued"),
        ({"downlink_failed": {"error": {}}}, "down/failed"),
        ({"location_solved": {}}, "location/solved"),
        ({"service_data": {}}, "service/data"),
        ({"downlink_something_new": {}}, "down/something_new"),
        ({"brand_new_event": {}}, "brand_new_event"),
        ({}, "unknown"),
    ],
)
def test_event_kinds(body: dict[str, Any], kind: str) -> None:
    msg = {
        "end_device_ids": {"device_id": "d"},
        "correlation_ids": [],
        "received_at": "2024-01-01T00:00:00Z",
        **body,
    }
    assert uplink_to_reading(msg) == TtnEvent(kind, "d", msg)


def test_simulated_uplinks_are_events_unless_configured() -> None:
    msg = _msg("up_lse01_device_repo_formatter.json")
    msg["simulated"] = True
    assert uplink_to_reading(msg) == TtnEvent("up/simulated", "eui-a84041edd184a0c0", msg)
    assert isinstance(uplink_to_reading(msg, TtnUplinkConfig(simulated="readings")), dict)


def test_storage_integration_record_is_unwrapped() -> None:
    msg = _msg("up_lse01_device_repo_formatter.json")
    assert uplink_to_reading({"result": msg}) == uplink_to_reading(msg)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-05-14T09:21:07.569498830Z", 1715678467569498830),
        ("2024-05-14T09:21:07Z", 1715678467000000000),
        ("2024-05-14T09:21:07.5Z", 1715678467500000000),
        ("2024-05-14T09:21:07.000000001Z", 1715678467000000001),
        ("2024-05-14T11:21:07.123+02:00", 1715678467123000000),
        ("2024-05-14T08:21:07.123-01:00", 1715678467123000000),
        ("2024-05-14T09:21:07.1234567891234Z", 1715678467123456789),
        ("1969-12-31T23:59:59.9Z", -100000000),
    ],
)
def test_rfc3339_to_ns(text: str, ns: int) -> None:
    assert rfc3339_to_ns(text) == ns


def test_rfc3339_agrees_with_datetime_to_the_microsecond() -> None:
    for text in ("2023-06-20T14:34:32.869542Z", "2000-02-29T23:59:59.999999Z", "2038-01-19T03:14:08.000001Z"):
        expected = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        seconds, micros = divmod(rfc3339_to_ns(text), 1_000_000_000)
        assert dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=micros // 1000) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-30T00:00:00Z",
        "2024-05-14T25:00:00Z",
        "2024-05-14T09:21:61Z",
        "2024-05-14T09:21:07",
        "2024-05-14T09:21:07.Z",
        "2024-05-14T09:21:07.5ZZ",
        "2024-05-14",
        "",
        "2024-05-14T09:21:07.5+0200",
    ],
)
def test_rfc3339_rejects(text: str) -> None:
    with pytest.raises(DecodeError, match=r"^invalid RFC 3339 timestamp "):
        rfc3339_to_ns(text)


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("24.1", 24.1),
        ("3.384 V", 3.384),
        ("19.57%", 19.57),
        ("0.00 °C", 0.0),
        ("0 uS/cm", 0.0),
        ("-1.49", -1.49),
        (" 7 ", 7.0),
        (3, 3.0),
        (2.5, 2.5),
        ("12ab", None),
        ("LSE01", None),
        ("1.5 parsecs", None),
        ("nan", None),
        ("inf", None),
        (float("inf"), None),
        (None, None),
        (True, None),
        ([], None),
    ],
)
def test_to_number(value: Any, number: float | None) -> None:
    assert to_number(value) == number


# -- config and node ----------------------------------------------------------------------------


def test_unknown_decoder_name_is_a_validation_error() -> None:
    v, issues = validate_doc(
        {"id": "f", "nodes": [{"id": "t", "type": "ttn-uplink", "decoders": {"eui-a84041*": "lse1"}}]}
    )
    assert v is None
    errors = [i for i in issues if i.severity == "error"]
    assert [(e.node, e.field, e.message) for e in errors] == [
        ("t", "decoders", "eui-a84041*: unknown decoder 'lse1' (known: lse01, lse01-dragino, sensecap-s2120)")
    ]


FLOW = {
    "id": "ttn",
    "nodes": [
        {
            "id": "ttn",
            "type": "ttn-uplink",
            "measurement": "soil",
            "wires": {"out": ["readings"], "events": ["events"], "error": ["errors"]},
        },
        {"id": "readings", "type": "collect"},
        {"id": "events", "type": "collect"},
        {"id": "errors", "type": "collect"},
    ],
}


async def test_node_routes_every_sample_to_its_port() -> None:
    names = [
        "up_lse01_device_repo_formatter.json",
        "join_lse01.json",
        "malformed_truncated_uplink.json",
        "down_ack_s2120.json",
        "up_8cf957_no_decoded_payload.json",
        "up_sensecap_s2120_measurement.json",
    ]
    async with run_flow(FLOW) as h:
        for name in names:
            raw = _raw(name)
            # bytes, str and dict payloads are all accepted
            payload: Any = raw if "lse01" in name else raw.decode() if "join" in name else raw
            if name.startswith("up_sensecap"):
                payload = json.loads(raw)
            await h.send("ttn", payload, topic=f"v3/{APP}@ttn/devices/x/up")
        await h.idle()
        readings = h.received("readings")
        events = h.received("events")
        errors = h.received("errors")
    assert [m.payload["tags"]["device_id"] for m in readings] == [
        "eui-a84041edd184a0c0",
        "eui-2cf7f1c044300015",
    ]
    assert [m.payload["measurement"] for m in readings] == ["soil", "soil"]
    assert [m.meta["device_id"] for m in readings] == ["eui-a84041edd184a0c0", "eui-2cf7f1c044300015"]
    assert readings[0].payload["fields"]["water_SOIL"] == 19.57
    assert readings[0].topic == f"v3/{APP}@ttn/devices/x/up"
    assert [(m.meta["ttn_event"], m.meta["device_id"]) for m in events] == [
        ("join", "eui-a840413e61878cad"),
        ("down/ack", "eui-2cf7f1c044300015"),
    ]
    assert events[0].payload == _msg("join_lse01.json")
    assert [(m.meta["error"]["class"], m.meta["error"]["message"]) for m in errors] == [
        (
            "DecodeError",
            "TTN message is not valid JSON: Unterminated string starting at: line 33 column 9 (char 950)",
        ),
        (
            "DecodeError",
            "uplink has no decoded_payload and no decoder is configured for device eui-8cf9572000064df7",
        ),
    ]


async def test_node_with_decoder_config_decodes_raw_uplinks() -> None:
    flow = copy.deepcopy(FLOW)
    flow["nodes"][0]["decoders"] = {"eui-a84041*": "lse01"}  # type: ignore[index]
    msg = _without_decoded("up_lse01_winter_negative.json")
    async with run_flow(flow) as h:
        await h.send("ttn", json.dumps(msg))
        await h.idle()
        assert [m.payload["fields"]["temp_SOIL"] for m in h.received("readings")] == [-1.49]
        assert h.received("errors") == []
