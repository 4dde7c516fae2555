from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest

from nodes.template import de_number, localtime
from tests.flowkit import run_flow, validate_doc


def flow(**cfg: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "t", "type": "template", **cfg, "wires": ["out"]},
            {"id": "out", "type": "collect"},
            {"id": "c", "type": "catch", "wires": ["errs"]},
            {"id": "errs", "type": "collect"},
        ],
    }


async def render(cfg: dict[str, Any], payload: Any, topic: str | None = None, **meta: Any) -> Any:
    async with run_flow(flow(**cfg)) as h:
        await h.send("t", payload, topic, **meta)
        await h.idle()
        assert [m.meta["error"] for m in h.received("errs")] == []
        [msg] = h.received("out")
        return msg


async def test_text_with_payload_topic_meta_and_german_filters() -> None:
    template = (
        "{{ topic }}: {{ payload.temp | de_number(1) }} °C, "
        "{{ msg.payload.level | de_number }} cm ({{ station.name }}), "
        "{{ payload.time | localtime }}"
    )
    msg = await render(
        {"template": template},
        {"temp": 21.46, "level": 1234, "time": 1723737600000},
        "bad-belzig/luft",
        station={"name": "Bad Belzig"},
    )
    assert msg.payload == "bad-belzig/luft: 21,5 °C, 1.234 cm (Bad Belzig), 15.08.2024 18:00"
    assert msg.topic == "bad-belzig/luft"
    assert msg.meta["station"] == {"name": "Bad Belzig"}


async def test_output_into_a_nested_property_keeps_the_rest() -> None:
    msg = await render(
        {"template": "Pegel {{ payload.level }} cm", "property": "payload.text"}, {"level": 637}
    )
    assert msg.payload == {"level": 637, "text": "Pegel 637 cm"}


async def test_json_output_is_parsed() -> None:
    template = """
{
  "station": {{ payload.station | tojson }},
  "values": [{% for r in payload.rows %}{{ r.v }}{{ "," if not loop.last }}{% endfor %}],
  "topic": {{ topic | tojson }}
}
"""
    msg = await render(
        {"template": template, "format": "json"},
        {"station": "Präfix <Nord>", "rows": [{"v": 1.5}, {"v": 2}]},
        "gw/38413470",
    )
    assert msg.payload == {"station": "Präfix <Nord>", "values": [1.5, 2], "topic": "gw/38413470"}


async def test_yaml_output_is_parsed_with_block_tags_trimmed() -> None:
    template = """\
measurement: groundwater
tags:
  station: "{{ payload.id }}"
fields:
{% for k, v in payload.fields.items() %}
  {{ k }}: {{ v }}
{% endfor %}
"""
    msg = await render(
        {"template": template, "format": "yaml"}, {"id": "38413470", "fields": {"level": 634, "t": 9.5}}
    )
    assert msg.payload == {
        "measurement": "groundwater",
        "tags": {"station": "38413470"},
        "fields": {"level": 634, "t": 9.5},
    }


async def test_autoescape_is_off_by_default_and_on_for_html() -> None:
    payload = {"name": "Wiese <Süd> & Acker"}
    plain = await render({"template": "<b>{{ payload.name }}</b>"}, payload)
    html = await render({"template": "<b>{{ payload.name }}</b>", "autoescape": True}, payload)
    assert plain.payload == "<b>Wiese <Süd> & Acker</b>"
    assert html.payload == "<b>Wiese &lt;Süd&gt; &amp; Acker</b>"


async def test_missing_value_is_an_expression_error_unless_not_strict() -> None:
    async with run_flow(flow(template="Temp\n{{ payload.temp }} °C")) as h:
        await h.send("t", {"hum": 50}, "s1")
        await h.idle()
        assert h.received("out") == []
        [err] = h.received("errs")
        assert err.payload == {"hum": 50}
        assert err.meta["error"]["class"] == "ExpressionError"
        assert err.meta["error"]["classes"][:3] == ["ExpressionError", "NodeError", "KlimaflowError"]
        assert (
            err.meta["error"]["message"]
            == "template render failed at line 2: 'dict object' has no attribute 'temp'"
        )
    msg = await render({"template": "Temp {{ payload.temp }} °C", "strict": False}, {"hum": 50})
    assert msg.payload == "Temp  °C"


async def test_filter_failure_and_sandbox_violation_are_expression_errors() -> None:
    async with run_flow(flow(template="{{ payload | de_number(1) }}")) as h:
        await h.send("t", "viel")
        await h.send("t", {"a": 1})
        await h.idle()
        assert [e.meta["error"]["message"] for e in h.received("errs")] == [
            "template render failed at line 1: ValueError: de_number needs a number, got 'viel'",
            "template render failed at line 1: TypeError: de_number needs a number, got dict",
        ]
    async with run_flow(flow(template="{{ payload.__class__.__mro__ }}")) as h:
        await h.send("t", [])
        await h.idle()
        [err] = h.received("errs")
        assert err.meta["error"]["class"] == "ExpressionError"
        assert err.meta["error"]["message"] == (
            "template render failed at line 1: access to attribute '__class__' of 'list' object is unsafe."
        )
    async with run_flow(flow(template="{{ payload.append(1) }}")) as h:
        await h.send("t", [])
        await h.idle()
        [err] = h.received("errs")
        assert err.meta["error"]["message"] == (
            "template render failed at line 1: access to attribute 'append' of 'list' object is unsafe."
        )
        assert err.payload == []


async def test_invalid_json_output_is_an_expression_error() -> None:
    async with run_flow(flow(template='{"temp": {{ payload }}}', format="json")) as h:
        await h.send("t", "warm")
        await h.idle()
        [err] = h.received("errs")
        assert err.meta["error"]["class"] == "ExpressionError"
        assert (
            err.meta["error"]["message"]
            == "template output is not valid JSON at line 1 column 10: Expecting value"
        )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ payload.x }", "template syntax error on line 1: unexpected '}'"),
        ("Kopf\n{{ payload | nofilter }}", "template syntax error on line 2: No filter named 'nofilter'."),
        (
            "{% for r in payload %}\n{{ r }}",
            "template syntax error on line 2: Unexpected end of template. Jinja was looking for the "
            "following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'.",
        ),
    ],
)
def test_syntax_errors_are_config_errors_with_line(template: str, message: str) -> None:
    v, issues = validate_doc(flow(template=template))
    assert v is None
    assert [(i.field, i.message) for i in issues if i.severity == "error"] == [("template", message)]


@pytest.mark.parametrize(
    ("value", "args", "expected"),
    [
        (1234.5, (), "1.234,5"),
        (1234.5, (2,), "1.234,50"),
        (11248.0, (0,), "11.248"),
        (0.125, (2,), "0,13"),  # half up, not half to even
        (2.675, (2,), "2,68"),  # the decimal text is rounded, not the binary float
        (-0.04, (1,), "0,0"),
        (-1234567.891, (1,), "-1.234.567,9"),
        (1234567, (), "1.234.567"),
        (1234.5, (1, False), "1234,5"),
        ("47.8964", (2,), "47,90"),
        (decimal.Decimal("9358.5841613670"), (3,), "9.358,584"),
        (1e-7, (), "0,0000001"),
        (None, (1,), ""),
        (float("nan"), (1,), "NaN"),
    ],
)
def test_de_number(value: Any, args: tuple[Any, ...], expected: str) -> None:
    assert de_number(value, *args) == expected


def test_de_number_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="de_number needs a number, got bool"):
        de_number(True)
    with pytest.raises(ValueError, match="decimals must be 0 or more"):
        de_number(1.5, -1)


@pytest.mark.parametrize(
    ("value", "args", "expected"),
    [
        (1723737600, (), "15.08.2024 18:00"),  # epoch seconds, summer time (UTC+2)
        (1723737600000, (), "15.08.2024 18:00"),  # epoch milliseconds
        (1704067200, (), "01.01.2024 01:00"),  # winter time (UTC+1)
        (1723737600, ("UTC", "%Y-%m-%d %H:%M:%S"), "2024-08-15 16:00:00"),
        (1723737600, ("America/New_York", "%H:%M"), "12:00"),
        (86400, ("UTC", "%d.%m.%Y", "ms"), "01.01.1970"),
        ("1723737600", (), "15.08.2024 18:00"),
        ("2024-08-15T16:00:00Z", (), "15.08.2024 18:00"),
        ("2024-08-15T16:00:00", (), "15.08.2024 18:00"),  # naive text is UTC
        ("2024-08-15T16:00:00+02:00", (), "15.08.2024 16:00"),
        ("2024-08-15", ("Europe/Berlin", "%d.%m.%Y"), "15.08.2024"),  # a calendar day is not shifted
        (dt.datetime(2024, 8, 15, 16, 0, tzinfo=dt.UTC), (), "15.08.2024 18:00"),
        (dt.date(2024, 8, 15), (), "15.08.2024 00:00"),
        (None, (), ""),
    ],
)
def test_localtime(value: Any, args: tuple[Any, ...], expected: str) -> None:
    assert localtime(value, *args) == expected


def test_localtime_rejects_non_timestamps() -> None:
    with pytest.raises(TypeError, match="localtime needs a timestamp, got list"):
        localtime([1])
    with pytest.raises(ValueError, match="unit must be 'auto', 's' or 'ms'"):
        localtime(1, unit="h")
