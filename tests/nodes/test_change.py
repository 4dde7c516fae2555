from typing import Any

from tests.flowkit import run_flow, validate_doc


def change_flow(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "chg", "type": "change", "rules": rules, "wires": ["out"]},
            {"id": "out", "type": "collect"},
            {"id": "c", "type": "catch", "wires": ["errs"]},
            {"id": "errs", "type": "collect"},
        ],
    }


def errors(doc: dict[str, Any]) -> list[str]:
    validated, issues = validate_doc(doc)
    assert validated is None
    return [i.format() for i in issues if i.severity == "error"]


async def test_rules_apply_in_order_and_see_earlier_results() -> None:
    rules = [
        {"set": "payload.f", "expr": "payload.c * 1.8 + 32"},
        {"set": "payload.label", "expr": "$string(payload.f) & ' ' & payload.unit"},
        {"set": "payload.unit", "to": "°F"},
        {"move": "payload.hum", "to": "payload.humidity"},
        {"set": "station", "from": "payload.device"},
        {"delete": "payload.device"},
        {"set": "topic", "expr": "'climate/' & station"},
    ]
    async with run_flow(change_flow(rules)) as h:
        await h.send("chg", {"c": 20, "unit": "°C", "hum": 55, "device": "s1"}, "raw")
        await h.idle()
        [msg] = h.received("out")
    assert msg.payload == {"c": 20, "f": 68, "label": "68 °C", "unit": "°F", "humidity": 55}
    assert msg.meta == {"station": "s1"}
    assert msg.topic == "climate/s1"


async def test_literal_values_are_not_shared_between_messages() -> None:
    rules: list[dict[str, Any]] = [
        {"set": "payload.tags", "to": ["a"]},
        {"set": "payload.tags.0", "expr": "payload.n"},
    ]
    async with run_flow(change_flow(rules)) as h:
        await h.send("chg", {"n": 1})
        await h.send("chg", {"n": 2})
        await h.idle()
        assert h.payloads("out") == [{"n": 1, "tags": [1]}, {"n": 2, "tags": [2]}]


async def test_copied_value_is_independent_of_its_source() -> None:
    rules: list[dict[str, Any]] = [
        {"set": "payload.copy", "from": "payload.orig"},
        {"set": "payload.orig.x", "to": 2},
    ]
    async with run_flow(change_flow(rules)) as h:
        await h.send("chg", {"orig": {"x": 1}})
        await h.idle()
        assert h.payloads("out") == [{"orig": {"x": 2}, "copy": {"x": 1}}]


async def test_missing_source_or_undefined_result_deletes_the_target() -> None:
    rules = [
        {"set": "payload.a", "from": "payload.nope"},
        {"set": "payload.b", "expr": "payload.nope * 2"},
        {"move": "payload.nope", "to": "payload.c"},
        {"set": "payload.d", "expr": "null"},
    ]
    async with run_flow(change_flow(rules)) as h:
        await h.send("chg", {"a": 1, "b": 2, "c": 3, "keep": 4})
        await h.idle()
        assert h.payloads("out") == [{"keep": 4, "d": None}]


async def test_jsonata_error_goes_to_catch_and_not_out() -> None:
    rules = [{"set": "payload.f", "expr": "payload.c * 1.8"}]
    async with run_flow(change_flow(rules)) as h:
        await h.send("chg", {"c": "warm"})
        await h.idle()
        assert h.received("out") == []
        [err] = h.received("errs")
    assert err.meta["error"]["class"] == "ExpressionError"
    assert err.meta["error"]["node"] == "chg"
    assert err.meta["error"]["message"] == (
        "JSONata 'payload.c * 1.8': The left side of the * operator must evaluate to a number [T2001]"
    )


async def test_path_that_cannot_be_created_is_a_message_error() -> None:
    rules = [{"set": "payload.ok", "to": True}, {"set": "payload.list.5", "to": 1}]
    async with run_flow(change_flow(rules)) as h:
        await h.send("chg", {"list": [0]})
        await h.idle()
        [err] = h.received("errs")
    assert err.meta["error"]["class"] == "MessageError"
    assert err.meta["error"]["message"] == "rule 2 (set payload.list.5): cannot set 'payload.list.5'"
    assert err.payload == {"list": [0], "ok": True}


def test_invalid_rules_are_config_errors() -> None:
    assert errors(change_flow([{"set": "payload.f", "expr": "payload.c *"}])) == [
        "flow.json:1: node chg: rules.0.set.expr: invalid JSONata expression: "
        "Unexpected end of expression (at character 11) [S0207]"
    ]
    assert errors(change_flow([{"set": "payload.f", "to": 1, "from": "payload.c"}])) == [
        "flow.json:1: node chg: rules.0.set: set needs exactly one of to, expr, from (found: to, from)"
    ]
    assert errors(change_flow([{"set": "x", "move": "y"}, {"rename": "x"}])) == [
        "flow.json:1: node chg: rules.0: a rule is a mapping with exactly one of the keys set, delete, move",
        "flow.json:1: node chg: rules.1: a rule is a mapping with exactly one of the keys set, delete, move",
    ]
    assert errors(change_flow([{"delete": "_msgid"}, {"move": "payload.a", "to": "payload..b"}])) == [
        "flow.json:1: node chg: rules.0.delete.delete: '_msgid' is read-only",
        "flow.json:1: node chg: rules.1.move.to: 'payload..b' has an empty part",
    ]
