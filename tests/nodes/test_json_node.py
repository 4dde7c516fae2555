from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from engine.errors import DecodeError, MessageError
from nodes.json_node import parse_json, serialize_json
from tests.flowkit import run_flow, validate_doc


def flow(**cfg: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "j", "type": "json", **cfg, "wires": ["out"]},
            {"id": "out", "type": "collect"},
            {"id": "c", "type": "catch", "wires": ["errs"]},
            {"id": "errs", "type": "collect"},
        ],
    }


async def test_auto_parses_text_and_bytes_and_serializes_objects() -> None:
    async with run_flow(flow()) as h:
        await h.send("j", '{"temp": 21.5, "ort": "Bad Belzig"}')
        await h.send("j", b'\xef\xbb\xbf{"moisture": [19.57, 20]}')
        await h.send("j", {"ort": "Lübnitz", "n": 3})
        await h.send("j", [1, None, True])
        await h.idle()
        assert h.payloads("out") == [
            {"temp": 21.5, "ort": "Bad Belzig"},
            {"moisture": [19.57, 20]},
            '{"ort": "Lübnitz", "n": 3}',
            "[1, null, true]",
        ]
        assert h.payloads("errs") == []


async def test_pretty_and_nested_property() -> None:
    async with run_flow(flow(property="payload.data", pretty=True)) as h:
        await h.send("j", {"data": {"a": [1, 2]}, "keep": 1})
        await h.idle()
        assert h.payloads("out") == [{"data": '{\n  "a": [\n    1,\n    2\n  ]\n}', "keep": 1}]


async def test_explicit_actions_pass_the_other_kind_through() -> None:
    async with run_flow(flow(action="parse")) as h:
        await h.send("j", {"already": "object"})
        await h.send("j", "42")
        await h.idle()
        assert h.payloads("out") == [{"already": "object"}, 42]
    async with run_flow(flow(action="serialize")) as h:
        await h.send("j", "already text")
        await h.send("j", 42)
        await h.idle()
        assert h.payloads("out") == ["already text", "42"]


async def test_malformed_json_goes_to_catch_with_position() -> None:
    async with run_flow(flow()) as h:
        await h.send("j", '{"temp": 21.5,\n "hum": }', topic="sensor/1")
        await h.send("j", "[1]")
        await h.idle()
        assert h.payloads("out") == [[1]]
        [err] = h.received("errs")
        assert err.payload == '{"temp": 21.5,\n "hum": }'
        assert err.topic == "sensor/1"
        assert err.meta["error"]["class"] == "DecodeError"
        assert err.meta["error"]["node"] == "j"
        assert err.meta["error"]["message"] == "invalid JSON at line 2 column 9 (char 23): Expecting value"


async def test_error_port_takes_precedence_over_catch() -> None:
    doc = flow()
    doc["nodes"][0]["wires"] = {"out": ["out"], "error": ["bad"]}
    doc["nodes"].append({"id": "bad", "type": "collect"})
    async with run_flow(doc) as h:
        await h.send("j", b"\xff\xfe")
        await h.idle()
        [err] = h.received("bad")
        assert err.meta["error"]["class"] == "DecodeError"
        assert err.meta["error"]["message"] == "JSON is not valid UTF-8 at byte 0: invalid start byte"
        assert h.received("errs") == []


async def test_schema_mismatch_is_a_message_error() -> None:
    schema = {"type": "object", "required": ["temp"], "properties": {"temp": {"type": "number"}}}
    async with run_flow(flow(schema=schema)) as h:
        await h.send("j", '{"temp": 20}')
        await h.send("j", '{"temp": "warm"}')
        await h.idle()
        assert h.payloads("out") == [{"temp": 20}]
        [err] = h.received("errs")
        assert err.meta["error"]["class"] == "MessageError"
        assert (
            err.meta["error"]["message"]
            == "payload does not match the schema at temp: 'warm' is not of type 'number'"
        )


def test_invalid_schema_is_a_config_error() -> None:
    v, issues = validate_doc(flow(schema={"type": "thing"}))
    assert v is None
    assert [(i.field, i.message) for i in issues if i.severity == "error"] == [
        ("schema", "invalid JSON Schema: 'thing' is not valid under any of the given schemas")
    ]


def test_serialize_converts_dates_and_rejects_nan_and_unknown_types() -> None:
    assert serialize_json({"d": dt.date(2024, 8, 15), "s": (1, 2)}) == '{"d": "2024-08-15", "s": [1, 2]}'
    with pytest.raises(MessageError, match="Out of range float values are not JSON compliant"):
        serialize_json({"v": float("nan")})
    with pytest.raises(MessageError, match="object is not JSON serializable"):
        serialize_json(object())


def test_parse_reports_truncated_input() -> None:
    with pytest.raises(DecodeError, match=r"^invalid JSON at line 1 column 8 \(char 7\): Expecting"):
        parse_json('{"a": 1')
