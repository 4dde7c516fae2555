from typing import Any

from engine.message import Delivery, Message
from tests.flowkit import run_flow


def flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "s",
        "nodes": [
            {"id": "sp", "type": "split", **config, "wires": {"out": ["c"], "error": ["err"]}},
            {"id": "c", "type": "collect"},
            {"id": "err", "type": "collect"},
        ],
    }


async def test_list_becomes_one_message_per_element() -> None:
    async with run_flow(flow()) as h:
        original = await h.send("sp", [{"t": 1}, {"t": 2}, {"t": 3}], "sensors", source="ttn")
        await h.idle()
        parts = h.received("c")
        assert [m.payload for m in parts] == [{"t": 1}, {"t": 2}, {"t": 3}]
        assert [m.meta["parts"] for m in parts] == [
            {"id": original.id, "index": i, "count": 3, "type": "array"} for i in range(3)
        ]
        assert [(m.topic, m.meta["source"]) for m in parts] == [("sensors", "ttn")] * 3


async def test_list_in_chunks() -> None:
    async with run_flow(flow(chunk=2)) as h:
        await h.send("sp", [1, 2, 3, 4, 5])
        await h.idle()
        assert h.payloads("c") == [[1, 2], [3, 4], [5]]
        assert [(m.meta["parts"]["index"], m.meta["parts"]["count"]) for m in h.received("c")] == [
            (0, 3),
            (1, 3),
            (2, 3),
        ]


async def test_empty_list_emits_nothing() -> None:
    async with run_flow(flow()) as h:
        await h.send("sp", [])
        await h.idle()
        assert h.payloads("c") == []
        assert h.payloads("err") == []


async def test_dict_becomes_one_message_per_entry_with_key() -> None:
    async with run_flow(flow(key_property="topic")) as h:
        await h.send("sp", {"temperature": 21.5, "humidity": 40}, "station/1")
        await h.idle()
        parts = h.received("c")
        assert [(m.topic, m.payload) for m in parts] == [("temperature", 21.5), ("humidity", 40)]
        assert [(m.meta["parts"]["key"], m.meta["parts"]["type"]) for m in parts] == [
            ("temperature", "object"),
            ("humidity", "object"),
        ]


async def test_dict_keeps_topic_without_key_property() -> None:
    async with run_flow(flow()) as h:
        await h.send("sp", {"a": 1}, "station/1")
        await h.idle()
        assert [(m.topic, m.payload, m.meta["parts"]["key"]) for m in h.received("c")] == [
            ("station/1", 1, "a")
        ]


async def test_string_split_on_newline_by_default() -> None:
    async with run_flow(flow()) as h:
        await h.send("sp", "a,1\nb,2\n")
        await h.idle()
        assert h.payloads("c") == ["a,1", "b,2", ""]
        assert h.received("c")[0].meta["parts"]["ch"] == "\n"
        assert h.received("c")[0].meta["parts"]["type"] == "string"


async def test_string_split_on_separator_skipping_empty() -> None:
    async with run_flow(flow(separator=";", skip_empty=True)) as h:
        await h.send("sp", "x;;y;")
        await h.idle()
        assert h.payloads("c") == ["x", "y"]
        assert [m.meta["parts"]["count"] for m in h.received("c")] == [2, 2]


async def test_bytes_split_on_encoded_separator() -> None:
    async with run_flow(flow(separator="|")) as h:
        await h.send("sp", b"ab|cd")
        await h.idle()
        assert h.payloads("c") == [b"ab", b"cd"]


async def test_nested_split_keeps_outer_parts() -> None:
    doc = {
        "id": "s",
        "nodes": [
            {"id": "outer", "type": "split", "wires": ["inner"]},
            {"id": "inner", "type": "split", "separator": " ", "wires": ["c"]},
            {"id": "c", "type": "collect"},
        ],
    }
    async with run_flow(doc) as h:
        await h.send("outer", ["a b", "c"])
        await h.idle()
        parts = h.received("c")
        assert [m.payload for m in parts] == ["a", "b", "c"]
        assert [(m.meta["parts"]["index"], m.meta["parts"]["parts"]["index"]) for m in parts] == [
            (0, 0),
            (1, 0),
            (0, 1),
        ]


async def test_parts_do_not_share_nested_meta() -> None:
    async with run_flow(flow()) as h:
        await h.send("sp", [1, 2], device={"id": "s1"})
        await h.idle()
        first, second = h.received("c")
        first.meta["device"]["id"] = "changed"
        assert second.meta["device"] == {"id": "s1"}


async def test_unsplittable_payload_is_a_message_error() -> None:
    async with run_flow(flow()) as h:
        await h.send("sp", 42)
        await h.idle()
        assert h.payloads("c") == []
        errors = h.received("err")
        assert [(m.payload, m.meta["error"]["class"], m.meta["error"]["message"]) for m in errors] == [
            (42, "MessageError", "cannot split a payload of type int (need a list, dict or string)")
        ]


async def test_delivery_settles_once_after_every_part_was_consumed() -> None:
    calls: list[tuple[bool, int]] = []
    async with run_flow(flow()) as h:
        d = Delivery(lambda ok: calls.append((ok, len(h.received("c")))))
        d.retain()  # the inbox's reference, as Engine.emit takes it
        await h.engine.runtimes["sp"].put(Message([1, 2, 3], deliveries=(d,)))
        d.release()  # the source's own reference
        await h.idle()
        assert h.payloads("c") == [1, 2, 3]
        assert calls == [(True, 3)]
