from typing import Any

from tests.flowkit import run_flow, validate_doc


def flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "rbe", "type": "filter", **config, "wires": {"out": ["c"], "error": ["err"]}},
            {"id": "c", "type": "collect"},
            {"id": "err", "type": "collect"},
        ],
    }


async def test_changed_keeps_state_per_topic() -> None:
    async with run_flow(flow()) as h:
        for topic, value in [
            ("a", 1),
            ("b", 1),
            ("a", 1),
            ("b", 2),
            ("a", {"x": 1}),
            ("a", {"x": 1}),
            ("b", 2),
        ]:
            await h.send("rbe", value, topic)
        await h.idle()
        assert [(m.topic, m.payload) for m in h.received("c")] == [
            ("a", 1),
            ("b", 1),
            ("b", 2),
            ("a", {"x": 1}),
        ]


async def test_changed_compares_a_copy_not_the_forwarded_object() -> None:
    # Downstream may mutate what was passed on; the stored value must not change with it.
    async with run_flow(flow()) as h:
        await h.send("rbe", {"t": 1}, "s")
        await h.idle()
        h.received("c")[0].payload["t"] = 99
        await h.send("rbe", {"t": 99}, "s")
        await h.idle()
        assert h.payloads("c") == [{"t": 99}, {"t": 99}]


async def test_deadband_per_device_key() -> None:
    doc = flow(mode="deadband", band=0.5, property="payload.t", key="payload.device_id")
    readings = [
        ("a", 20.0),  # first of a: passes
        ("b", 10.0),  # first of b: passes
        ("a", 20.25),  # 0.25 from a's 20.0: blocked
        ("b", 10.5),  # 0.5 from b's 10.0: passes (>= band)
        ("a", 19.5),  # 0.5 from 20.0: passes
        ("b", 10.75),  # 0.25 from 10.5: blocked
        ("a", 19.5),  # unchanged: blocked
    ]
    async with run_flow(doc) as h:
        for device, t in readings:
            await h.send("rbe", {"device_id": device, "t": t})
        await h.idle()
        assert [(p["device_id"], p["t"]) for p in h.payloads("c")] == [
            ("a", 20.0),
            ("b", 10.0),
            ("b", 10.5),
            ("a", 19.5),
        ]


async def test_deadband_compare_sent_lets_slow_drift_through_but_input_does_not() -> None:
    drift = [20.0, 20.25, 20.5, 20.75, 21.0]
    async with run_flow(flow(mode="deadband", band=0.5, compare="sent")) as h:
        for v in drift:
            await h.send("rbe", v)
        await h.idle()
        assert h.payloads("c") == [20.0, 20.5, 21.0]
    async with run_flow(flow(mode="deadband", band=0.5, compare="input")) as h:
        for v in drift:
            await h.send("rbe", v)
        await h.idle()
        assert h.payloads("c") == [20.0]


async def test_deadband_percent_of_last_sent_value() -> None:
    async with run_flow(flow(mode="deadband", band=10, band_unit="percent")) as h:
        # band is 2.0 around 20, then 2.2 around 22
        for v in [20, 21, 22, 24, 24.5]:
            await h.send("rbe", v)
        await h.idle()
        assert h.payloads("c") == [20, 22, 24.5]


async def test_deadband_accepts_numeric_strings_and_passes_message_unchanged() -> None:
    async with run_flow(flow(mode="deadband", band=1)) as h:
        for v in ["24.1", "24.5", " 25.1 "]:
            await h.send("rbe", v)
        await h.idle()
        assert h.payloads("c") == ["24.1", " 25.1 "]


async def test_narrowband_blocks_outliers() -> None:
    async with run_flow(flow(mode="narrowband", band=5)) as h:
        for v in [20, 21, 80, -40, 22, 30]:
            await h.send("rbe", v)
        await h.idle()
        assert h.payloads("c") == [20, 21, 22]


async def test_narrowband_start_value_is_the_first_reference() -> None:
    async with run_flow(flow(mode="narrowband", band=5, start_value=0)) as h:
        for v in [1000, 3, 7, 13, 9]:
            await h.send("rbe", v)
        await h.idle()
        assert h.payloads("c") == [3, 7, 9]


async def test_non_numeric_value_in_deadband_goes_to_error_port_and_flow_continues() -> None:
    async with run_flow(flow(mode="deadband", band=1)) as h:
        await h.send("rbe", "warm", "s1")
        await h.send("rbe", True, "s1")
        await h.send("rbe", 5, "s1")
        await h.idle()
        assert h.payloads("c") == [5]
        errors = h.received("err")
        assert [m.payload for m in errors] == ["warm", True]
        assert [m.meta["error"]["class"] for m in errors] == ["MessageError", "MessageError"]
        assert errors[0].meta["error"]["message"] == "payload is not a number: 'warm'"


async def test_missing_property_is_a_message_error() -> None:
    async with run_flow(flow(property="payload.t")) as h:
        await h.send("rbe", {"rh": 40})
        await h.idle()
        assert h.payloads("c") == []
        assert [m.meta["error"]["message"] for m in h.received("err")] == [
            "message has no property 'payload.t'"
        ]


async def test_ignore_initial_blocks_first_value_per_key() -> None:
    async with run_flow(flow(ignore_initial=True)) as h:
        for topic, v in [("a", 1), ("b", 5), ("a", 1), ("a", 2), ("b", 6)]:
            await h.send("rbe", v, topic)
        await h.idle()
        assert [(m.topic, m.payload) for m in h.received("c")] == [("a", 2), ("b", 6)]


async def test_reset_clears_one_key_or_all() -> None:
    async with run_flow(flow()) as h:
        await h.send("rbe", 1, "a")
        await h.send("rbe", 1, "b")
        await h.send("rbe", None, "a", reset=True)  # forget a only
        await h.send("rbe", 1, "a")
        await h.send("rbe", 1, "b")
        await h.send("rbe", None, None, reset=True)  # no key: forget all
        await h.send("rbe", 1, "b")
        await h.idle()
        assert [(m.topic, m.payload) for m in h.received("c")] == [("a", 1), ("b", 1), ("a", 1), ("b", 1)]


def test_band_modes_need_a_band() -> None:
    validated, issues = validate_doc(flow(mode="deadband"))
    assert validated is None
    assert [i.code for i in issues if i.severity == "error"] != []
    assert any("mode deadband needs a band greater than 0" in i.message for i in issues)
