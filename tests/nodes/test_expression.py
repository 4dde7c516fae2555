from typing import Any

from tests.flowkit import run_flow, validate_doc


def expression_flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "ex", "type": "expression", **config, "wires": ["out"]},
            {"id": "out", "type": "collect"},
            {"id": "c", "type": "catch", "wires": ["errs"]},
            {"id": "errs", "type": "collect"},
        ],
    }


async def test_result_becomes_the_payload() -> None:
    doc = expression_flow(expr="{'f': payload.celsius * 1.8 + 32, 'station': station, 'topic': topic}")
    async with run_flow(doc) as h:
        await h.send("ex", {"celsius": 25}, "t/1", station="rathaus")
        await h.idle()
        [msg] = h.received("out")
    assert msg.payload == {"f": 77, "station": "rathaus", "topic": "t/1"}
    assert (msg.topic, msg.meta) == ("t/1", {"station": "rathaus"})


async def test_result_written_to_a_target_property() -> None:
    doc = expression_flow(expr="$round(payload.celsius * 1.8 + 32, 1)", target="payload.fahrenheit")
    async with run_flow(doc) as h:
        await h.send("ex", {"celsius": 21.3})
        await h.idle()
        assert h.payloads("out") == [{"celsius": 21.3, "fahrenheit": 70.3}]


async def test_undefined_result_drops_by_default_but_null_is_a_value() -> None:
    async with run_flow(expression_flow(expr="payload.battery < 3.3 ? payload.battery")) as h:
        for battery in (3.1, 3.6):
            await h.send("ex", {"battery": battery})
        await h.send("ex", {"battery": None})
        await h.idle()
        assert h.payloads("out") == [3.1]
        assert h.engine.runtimes["ex"].counters.dropped == 1
        assert len(h.received("errs")) == 1  # null < 3.3 is a JSONata type error

    async with run_flow(expression_flow(expr="payload.missing", on_undefined="null")) as h:
        await h.send("ex", {"a": 1})
        await h.idle()
        assert h.payloads("out") == [None]

    async with run_flow(expression_flow(expr="payload.value", on_undefined="drop")) as h:
        await h.send("ex", {"value": None})
        await h.idle()
        assert h.payloads("out") == [None]


async def test_undefined_result_can_be_an_error() -> None:
    async with run_flow(expression_flow(expr="payload.missing", on_undefined="error")) as h:
        await h.send("ex", {"a": 1})
        await h.idle()
        assert h.received("out") == []
        [err] = h.received("errs")
    assert err.meta["error"]["class"] == "ExpressionError"
    assert err.meta["error"]["message"] == "JSONata 'payload.missing': the result is undefined"


async def test_evaluation_error_is_routed_to_catch_as_expression_error() -> None:
    async with run_flow(expression_flow(expr="$number(payload.raw) * 2")) as h:
        await h.send("ex", {"raw": "12,5"})
        await h.send("ex", {"raw": "12.5"})
        await h.idle()
        assert h.payloads("out") == [25]
        [err] = h.received("errs")
    assert err.payload == {"raw": "12,5"}
    assert err.meta["error"]["class"] == "ExpressionError"
    assert err.meta["error"]["classes"][:3] == ["ExpressionError", "NodeError", "KlimaflowError"]
    assert err.meta["error"]["message"] == (
        "JSONata '$number(payload.raw) * 2': ValueError: could not convert string to float: '12,5'"
    )


async def test_runaway_expressions_are_stopped_by_time_and_depth() -> None:
    endless = "($f := function($n) { $f($n + 1) }; $f(0))"  # tail call: no depth, only time
    deep = "($f := function($n) { $f($n + 1) + 1 }; $f(0))"
    doc = expression_flow(expr=f"/* runaway recursion */\npayload = 'endless'\n  ? {endless}\n  : {deep}")
    async with run_flow(doc) as h:
        await h.send("ex", "endless")
        await h.send("ex", "deep")
        await h.idle()
        messages = [e.meta["error"]["message"] for e in h.received("errs")]
    # whitespace collapsed, cut at 120 characters
    shown = (
        "JSONata \"/* runaway recursion */ payload = 'endless' ? ($f := function($n) { $f($n + 1) }; $f(0))"
        ' : ($f := function($n) { $f($n …"'
    )
    assert messages == [
        f"{shown}: Evaluation timeout after 500 milliseconds. Check for infinite loop [D1012]",
        f"{shown}: Stack overflow. Check for non-terminating recursive function.  "
        "Consider rewriting as tail-recursive [D1011]",
    ]


def test_syntax_error_and_bad_target_are_config_errors() -> None:
    doc = expression_flow(expr="payload.celsius * ", target="_msgid")
    validated, issues = validate_doc(doc)
    assert validated is None
    assert [i.format() for i in issues if i.severity == "error"] == [
        "flow.json:1: node ex: expr: invalid JSONata expression: Unexpected end of expression (at character 18) [S0207]",
        "flow.json:1: node ex: target: '_msgid' is read-only",
    ]
