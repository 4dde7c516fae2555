from typing import Any

import pytest

from nodes.switch import SwitchNode
from tests.flowkit import run_flow, validate_doc


def switch_flow(rules: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    ports = dict.fromkeys(r["port"] for r in rules)
    wires = {p: [p] for p in ports}
    otherwise = config.get("otherwise", "else")
    if otherwise is not None:
        wires[otherwise] = [otherwise]
    return {
        "id": "f",
        "nodes": [
            {"id": "sw", "type": "switch", "rules": rules, "wires": wires, **config},
            *({"id": p, "type": "collect"} for p in wires),
            {"id": "c", "type": "catch", "wires": ["errs"]},
            {"id": "errs", "type": "collect"},
        ],
    }


TEMPERATURE_RULES = [
    {"port": "frost", "property": "payload.t", "op": "lt", "value": 0},
    {"port": "comfort", "property": "payload.t", "op": "between", "min": 18, "max": 24},
    {"port": "warm", "property": "payload.t", "op": "gte", "value": 20},
]


async def test_first_mode_routes_to_the_first_matching_rule_only() -> None:
    async with run_flow(switch_flow(TEMPERATURE_RULES)) as h:
        for t in (-3, 18, 24, 24.5, 10, "25"):
            await h.send("sw", {"t": t})
        await h.idle()
        assert h.payloads("frost") == [{"t": -3}]
        assert h.payloads("comfort") == [{"t": 18}, {"t": 24}]
        assert h.payloads("warm") == [{"t": 24.5}]
        # a string is not compared with numbers: it does not match, so it goes to else
        assert h.payloads("else") == [{"t": 10}, {"t": "25"}]


async def test_all_mode_sends_an_independent_copy_to_every_matching_port() -> None:
    rules = [*TEMPERATURE_RULES, {"port": "warm", "property": "payload.t", "op": "gt", "value": 0}]
    async with run_flow(switch_flow(rules, mode="all")) as h:
        await h.send("sw", {"t": 22})
        await h.send("sw", {"t": 5})
        await h.idle()
        [comfort] = h.received("comfort")
        [warm_22, warm_5] = h.received("warm")  # one message per port, however many rules match
        assert comfort.payload == {"t": 22}
        assert (warm_22.payload, warm_5.payload) == ({"t": 22}, {"t": 5})
        assert comfort is not warm_22
        comfort.payload["t"] = 0
        assert warm_22.payload == {"t": 22}
        assert h.received("else") == []


async def test_regex_jsonata_and_value_free_tests() -> None:
    rules: list[dict[str, Any]] = [
        {
            "port": "lora",
            "property": "topic",
            "op": "regex",
            "pattern": "^SENSORS/lora/",
            "ignore_case": True,
        },
        {"port": "text", "op": "is_type", "type": "string"},
        {"port": "nothing", "property": "payload.co2", "op": "is_null"},
        {"port": "stuffy", "op": "jsonata", "expr": "payload.co2 > 1000 and room = 'b1'"},
        {"port": "flag", "property": "payload.alarm", "op": "is_true"},
        {"port": "battery", "op": "has_key", "key": "battery"},
        {"port": "tagged", "property": "payload.tags", "op": "contains", "value": "outdoor"},
    ]
    async with run_flow(switch_flow(rules)) as h:
        await h.send("sw", {"co2": 1}, "sensors/LoRa/7")
        await h.send("sw", {"co2": 1200}, "wifi/1", room="b1")
        await h.send("sw", {"co2": 1200}, "wifi/1", room="a2")
        await h.send("sw", {"co2": 400, "alarm": True}, "wifi/2")
        await h.send("sw", {"co2": 400, "alarm": 1}, "wifi/3")
        await h.send("sw", {"co2": None}, "wifi/4")
        await h.send("sw", {"co2": 1, "battery": 3.1}, "wifi/5")
        await h.send("sw", "hello", "wifi/6")
        await h.send("sw", {"co2": 1, "tags": ["outdoor", "roof"]}, "wifi/7")
        await h.idle()
        topics = {p: [m.topic for m in h.received(p)] for p in ("lora", "stuffy", "flag", "nothing")}
        assert topics == {
            "lora": ["sensors/LoRa/7"],
            "stuffy": ["wifi/1"],
            "flag": ["wifi/2"],
            "nothing": ["wifi/4"],
        }
        assert [m.topic for m in h.received("battery")] == ["wifi/5"]
        assert [m.topic for m in h.received("text")] == ["wifi/6"]
        assert [m.topic for m in h.received("tagged")] == ["wifi/7"]
        assert [m.topic for m in h.received("else")] == ["wifi/1", "wifi/3"]


async def test_equality_is_type_strict() -> None:
    rules = [{"port": "one", "op": "eq", "value": 1}, {"port": "not_one", "op": "neq", "value": 1}]
    async with run_flow(switch_flow(rules)) as h:
        for v in (1, 1.0, True, "1", None):
            await h.send("sw", v)
        await h.idle()
        assert h.payloads("one") == [1, 1.0]
        assert h.payloads("not_one") == [True, "1", None]


async def test_unmatched_messages_are_dropped_without_otherwise() -> None:
    rules = [{"port": "frost", "op": "lt", "value": 0}]
    async with run_flow(switch_flow(rules, otherwise=None)) as h:
        await h.send("sw", 5)
        await h.send("sw", -5)
        await h.idle()
        assert h.payloads("frost") == [-5]
        assert h.received("errs") == []


async def test_failing_jsonata_condition_goes_to_catch() -> None:
    rules = [{"port": "hot", "op": "jsonata", "expr": "payload.t > 30"}]
    async with run_flow(switch_flow(rules)) as h:
        await h.send("sw", {"t": "hot"})
        await h.idle()
        assert h.received("hot") == h.received("else") == []
        [err] = h.received("errs")
    assert err.meta["error"]["class"] == "ExpressionError"
    assert err.meta["error"]["message"] == (
        "JSONata 'payload.t > 30': The values hot and 30 either side of operator > must be of the same data type [T2009]"
    )


def test_ports_come_from_the_config() -> None:
    validated, issues = validate_doc(switch_flow(TEMPERATURE_RULES, otherwise="other"))
    assert validated is not None, issues
    assert SwitchNode.output_ports(validated.node_configs["sw"]) == ("frost", "comfort", "warm", "other")
    assert SwitchNode.output_ports(None) == ("else",)


def test_wire_from_a_port_no_rule_defines_is_reported() -> None:
    doc = switch_flow(TEMPERATURE_RULES)
    doc["nodes"][0]["wires"]["hot"] = ["warm"]
    _, issues = validate_doc(doc)
    assert [i.format() for i in issues if i.severity == "error"] == [
        "flow.json:1: node sw: wires.hot: node type 'switch' has no output port 'hot' "
        "(ports: frost, comfort, warm, else, error)"
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"port": "a", "op": "regex", "pattern": "^(lora"},
            "rules.0.regex.pattern: invalid regular expression: missing ), unterminated subpattern at position 1",
        ),
        (
            {"port": "a", "op": "between", "min": 30, "max": 10},
            "rules.0.between: min (30.0) is greater than max (10.0)",
        ),
        (
            {"port": "a", "op": "jsonata", "expr": "payload.t >"},
            "rules.0.jsonata.expr: invalid JSONata expression: Unexpected end of expression (at character 11) [S0207]",
        ),
        (
            {"port": "error", "op": "is_true"},
            "rules.0.unary.port: 'error' is the error port of every node; choose another name",
        ),
        ({"port": "else", "op": "is_true"}, "port 'else' is used by a rule and as `otherwise`; rename one"),
        (
            {"port": "a", "value": 1},
            "rules.0: a rule needs `op`, one of: eq, neq, lt, lte, gt, gte, between, contains, regex, "
            "is_true, is_false, is_null, not_null, has_key, is_type, jsonata",
        ),
        (
            {"port": "a", "op": "greater"},
            "rules.0: a rule needs `op`, one of: eq, neq, lt, lte, gt, gte, between, contains, regex, "
            "is_true, is_false, is_null, not_null, has_key, is_type, jsonata",
        ),
        ({"port": "a", "op": "eq"}, "rules.0.compare.value: Field required"),
    ],
)
def test_invalid_rules_are_config_errors(rule: dict[str, Any], expected: str) -> None:
    doc = {"id": "f", "nodes": [{"id": "sw", "type": "switch", "rules": [rule]}]}
    validated, issues = validate_doc(doc)
    assert validated is None
    assert [i.format() for i in issues if i.severity == "error"] == [f"flow.json:1: node sw: {expected}"]
