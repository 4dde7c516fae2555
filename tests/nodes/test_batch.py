import asyncio
import time
from collections.abc import Callable
from typing import Any

from engine.message import Delivery, Message
from tests.flowkit import FlowHarness, run_flow, validate_doc


def flow(collectors: tuple[str, ...] = ("c",), **config: Any) -> dict[str, Any]:
    return {
        "id": "b",
        "nodes": [
            {"id": "bt", "type": "batch", **config, "wires": list(collectors)},
            *({"id": c, "type": "collect"} for c in collectors),
        ],
    }


async def wait_until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def put(h: FlowHarness, payload: Any, delivery: Delivery, topic: str | None = None) -> None:
    """Send to the batch node as Engine.emit does: the inbox takes its own reference."""
    delivery.retain()
    await h.engine.runtimes["bt"].put(Message(payload, topic, deliveries=(delivery,)))


async def test_batch_by_count_then_flush_rest_on_stop() -> None:
    async with run_flow(flow(count=3)) as h:
        for i in range(7):
            await h.send("bt", i, "t")
        await h.idle()
        assert h.payloads("c") == [[0, 1, 2], [3, 4, 5]]
    batches = h.received("c")
    assert h.payloads("c") == [[0, 1, 2], [3, 4, 5], [6]]
    assert [m.meta["batch"] for m in batches] == [
        {"count": 3, "key": None},
        {"count": 3, "key": None},
        {"count": 1, "key": None},
    ]
    assert [m.topic for m in batches] == ["t", "t", "t"]


async def test_batch_by_interval_since_first_message() -> None:
    async with run_flow(flow(interval=0.05)) as h:
        t0 = time.monotonic()
        await h.send("bt", "a")
        await h.send("bt", "b")
        await h.idle()
        assert h.payloads("c") == []
        await wait_until(lambda: len(h.received("c")) == 1)
        assert time.monotonic() - t0 >= 0.05
        await h.send("bt", "c")
        await wait_until(lambda: len(h.received("c")) == 2)
        assert h.payloads("c") == [["a", "b"], ["c"]]
        assert [m.meta["batch"]["count"] for m in h.received("c")] == [2, 1]


async def test_count_or_interval_whichever_comes_first() -> None:
    async with run_flow(flow(count=2, interval=0.05)) as h:
        for v in [1, 2, 3]:
            await h.send("bt", v)
        await h.idle()
        assert h.payloads("c") == [[1, 2]]
        await wait_until(lambda: len(h.received("c")) == 2)
        assert h.payloads("c") == [[1, 2], [3]]


async def test_batches_per_key() -> None:
    async with run_flow(flow(count=2, key="payload.device")) as h:
        for dev, t in [("a", 1), ("b", 10), ("a", 2), ("a", 3), ("b", 11), ("b", 12)]:
            await h.send("bt", {"device": dev, "t": t})
        await h.idle()
        got = [(m.meta["batch"], [p["t"] for p in m.payload]) for m in h.received("c")]
        assert got == [
            ({"count": 2, "key": "a"}, [1, 2]),
            ({"count": 2, "key": "b"}, [10, 11]),
        ]
    assert [(m.meta["batch"], [p["t"] for p in m.payload]) for m in h.received("c")[2:]] == [
        ({"count": 1, "key": "a"}, [3]),
        ({"count": 1, "key": "b"}, [12]),
    ]


async def test_interval_per_key_expires_separately() -> None:
    async with run_flow(flow(interval=0.1, key="topic")) as h:
        await h.send("bt", 1, "a")
        await asyncio.sleep(0.05)
        await h.send("bt", 2, "b")
        await wait_until(lambda: len(h.received("c")) == 1)
        assert [(m.topic, m.payload) for m in h.received("c")] == [("a", [1])]
        await wait_until(lambda: len(h.received("c")) == 2)
        assert [(m.topic, m.payload) for m in h.received("c")] == [("a", [1]), ("b", [2])]


async def test_collects_a_chosen_property() -> None:
    async with run_flow(flow(count=2, property="payload.t")) as h:
        await h.send("bt", {"t": 20.5, "rh": 40})
        await h.send("bt", {"t": 21.0, "rh": 41})
        await h.idle()
        assert h.payloads("c") == [[20.5, 21.0]]


async def test_flush_on_stop_reaches_collector() -> None:
    async with run_flow(flow(count=100, interval="1h")) as h:
        await h.send("bt", "x")
        await h.send("bt", "y")
        await h.idle()
        assert h.payloads("c") == []
    assert h.payloads("c") == [["x", "y"]]


async def test_delivery_settles_once_after_batch_consumed_downstream() -> None:
    calls: list[tuple[bool, int, int]] = []
    async with run_flow(flow(("c1", "c2"), count=3)) as h:

        def settled(ok: bool) -> None:
            calls.append((ok, len(h.received("c1")), len(h.received("c2"))))

        shared = Delivery(settled)  # e.g. one HTTP request that produced several readings
        await put(h, 1, shared)
        await put(h, 2, shared)
        shared.release()  # the source's own reference
        await h.idle()
        assert calls == []  # batch not yet emitted
        assert shared.pending == 2  # one hold per part
        await put(h, 3, shared)
        await h.idle()
        assert h.payloads("c1") == [[1, 2, 3]]
        assert h.payloads("c2") == [[1, 2, 3]]
        assert calls == [(True, 1, 1)]
        assert shared.settled


async def test_each_part_delivery_settles_when_its_batch_is_consumed() -> None:
    calls: list[tuple[str, int]] = []
    async with run_flow(flow(count=2, key="topic")) as h:

        def on_settled(name: str) -> Callable[[bool], None]:
            return lambda ok: calls.append((name, len(h.received("c"))))

        deliveries = {name: Delivery(on_settled(name)) for name in ("a1", "b1", "a2")}
        for payload, (name, d) in enumerate(deliveries.items()):
            await put(h, payload, d, name[0])
            d.release()  # the source's own reference
        await h.idle()
        assert calls == [("a1", 1), ("a2", 1)]
        assert not deliveries["b1"].settled
    # b's partial batch is flushed on stop, and only then is b1 acknowledged.
    assert calls == [("a1", 1), ("a2", 1), ("b1", 2)]


def test_needs_count_or_interval() -> None:
    validated, issues = validate_doc(flow(key="topic"))
    assert validated is None
    assert any("set count, interval or both" in i.message for i in issues)
