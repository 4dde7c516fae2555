from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nodes.range import RangeConfig, scale
from tests.flowkit import FlowHarness, run_flow, validate_doc


def flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "r",
        "nodes": [
            {"id": "rng", "type": "range", **config, "wires": {"out": ["c"], "error": ["err"]}},
            {"id": "c", "type": "collect"},
            {"id": "err", "type": "collect"},
        ],
    }


TENFOLD = {"in_min": 0, "in_max": 10, "out_min": 0, "out_max": 100}


async def through(h: FlowHarness, values: list[Any]) -> list[Any]:
    for v in values:
        await h.send("rng", v)
    await h.idle()
    return h.payloads("c")


async def test_scale_extrapolates_outside_the_input_range() -> None:
    async with run_flow(flow(**TENFOLD)) as h:
        assert await through(h, [0, 2.5, 10, -5, 15]) == [0.0, 25.0, 100.0, -50.0, 150.0]


async def test_clamp_limits_to_the_output_range() -> None:
    async with run_flow(flow(**TENFOLD, action="clamp")) as h:
        assert await through(h, [-5, 2.5, 15]) == [0.0, 25.0, 100.0]


async def test_wrap_folds_into_the_input_range() -> None:
    async with run_flow(flow(**TENFOLD, action="wrap")) as h:
        assert await through(h, [12.5, -2.5, 10, 25]) == [25.0, 75.0, 0.0, 50.0]


async def test_current_loop_4_20_ma_to_percent_with_string_input() -> None:
    async with run_flow(flow(in_min=4, in_max=20, out_min=0, out_max=100)) as h:
        assert await through(h, ["12", " 8 ", 20.0]) == [50.0, 25.0, 100.0]


async def test_reversed_output_range() -> None:
    async with run_flow(flow(in_min=0, in_max=1, out_min=100, out_max=0, action="clamp")) as h:
        assert await through(h, [0.25, 2]) == [75.0, 0.0]


async def test_rounding_to_decimals_and_to_integer() -> None:
    adc = {"in_min": 0, "in_max": 1023, "out_min": 0, "out_max": 100}
    async with run_flow(flow(**adc, decimals=1)) as h:
        assert await through(h, [100, 511]) == [9.8, 50.0]
    async with run_flow(flow(**adc, decimals=0)) as h:
        out = await through(h, [100, 511])
        assert out == [10, 50]
        assert [type(v) for v in out] == [int, int]


async def test_nested_property_is_replaced_in_place() -> None:
    async with run_flow(flow(**TENFOLD, property="payload.raw")) as h:
        await h.send("rng", {"raw": "2.5", "device": "s1"})
        await h.idle()
        assert h.payloads("c") == [{"raw": 25.0, "device": "s1"}]


async def test_non_numbers_are_message_errors() -> None:
    async with run_flow(flow(**TENFOLD)) as h:
        for v in ["warm", True, None, {"t": 1}, "nan"]:
            await h.send("rng", v)
        await h.send("rng", 1)
        await h.idle()
        assert h.payloads("c") == [10.0]
        errors = h.received("err")
        assert [m.meta["error"]["class"] for m in errors] == ["MessageError"] * 5
        assert [m.meta["error"]["message"] for m in errors] == [
            "payload is not a number: 'warm'",
            "payload is a boolean, not a number",
            "payload is not a number: NoneType None",
            "payload is not a number: dict {'t': 1}",
            "payload is not a finite number: 'nan'",
        ]


def test_empty_input_range_is_rejected() -> None:
    validated, issues = validate_doc(flow(in_min=5, in_max=5, out_min=0, out_max=1))
    assert validated is None
    assert any("in_min and in_max must differ" in i.message for i in issues)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(value=finite, lo=finite, width=st.floats(min_value=0.001, max_value=1e3))
def test_clamp_never_leaves_the_output_range(value: float, lo: float, width: float) -> None:
    c = RangeConfig(in_min=lo, in_max=lo + width, out_min=-1, out_max=1, action="clamp")
    assert -1 <= scale(value, c) <= 1
