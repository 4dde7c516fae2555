import asyncio
import time
from collections.abc import Callable
from typing import Any

from engine.message import Delivery, Message
from tests.flowkit import run_flow, validate_doc


def flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "d",
        "nodes": [
            {"id": "dl", "type": "delay", **config, "wires": {"out": ["c"], "dropped": ["dropped"]}},
            {"id": "c", "type": "collect"},
            {"id": "dropped", "type": "collect"},
        ],
    }


async def wait_until(cond: Callable[[], bool], timeout: float = 2.0) -> float:
    """Poll ``cond``; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)
    return time.monotonic()


async def test_delay_holds_each_message_and_keeps_order() -> None:
    async with run_flow(flow(delay=0.2)) as h:
        t0 = time.monotonic()
        for i in range(5):
            await h.send("dl", i)
        await asyncio.sleep(0.05)
        assert h.payloads("c") == []
        t1 = await wait_until(lambda: len(h.received("c")) == 5)
        assert h.payloads("c") == [0, 1, 2, 3, 4]
        assert 0.2 <= t1 - t0 < 1.5


async def test_delay_accepts_duration_strings() -> None:
    async with run_flow(flow(delay="30ms")) as h:
        await h.send("dl", "x")
        await wait_until(lambda: h.payloads("c") == ["x"])


async def test_stop_flushes_pending_messages_in_order() -> None:
    t0 = time.monotonic()
    async with run_flow(flow(delay="1h")) as h:
        for i in range(3):
            await h.send("dl", i)
        await h.idle()
        assert h.payloads("c") == []
    assert h.payloads("c") == [0, 1, 2]
    assert time.monotonic() - t0 < 2


async def test_delay_mode_full_queue_applies_back_pressure_not_loss() -> None:
    async with run_flow(flow(delay=0.02, queue_size=2)) as h:
        for i in range(6):
            await h.send("dl", i)
        await wait_until(lambda: len(h.received("c")) == 6)
        assert h.payloads("c") == [0, 1, 2, 3, 4, 5]
        assert h.payloads("dropped") == []


async def test_delivery_settles_only_after_the_delayed_message_was_passed_on() -> None:
    settled: list[tuple[bool, int]] = []
    async with run_flow(flow(delay=0.05)) as h:
        d = Delivery(lambda ok: settled.append((ok, len(h.received("c")))))
        d.retain()  # the inbox's reference, as Engine.emit takes it
        await h.engine.runtimes["dl"].put(Message("m", deliveries=(d,)))
        d.release()  # the source's own reference
        await h.idle()
        assert settled == []
        await wait_until(lambda: settled != [])
        await h.idle()
        assert settled == [(True, 1)]


async def test_rate_drop_sends_excess_to_dropped_port_and_counts_it() -> None:
    async with run_flow(flow(mode="rate", rate=2, period=10, drop=True)) as h:
        for i in range(5):
            await h.send("dl", i)
        await h.idle()
        assert h.payloads("c") == [0, 1]
        assert h.payloads("dropped") == [2, 3, 4]
        rt = h.engine.runtimes["dl"]
        assert rt.counters.dropped == 3
        assert (rt.status.level, rt.status.text) == ("warning", "dropped 3")


async def test_rate_queue_spaces_messages_and_drops_when_queue_is_full() -> None:
    async with run_flow(flow(mode="rate", rate=2, period=0.15, queue_size=3)) as h:
        t0 = time.monotonic()
        for i in range(6):
            await h.send("dl", i)
        await wait_until(lambda: len(h.received("c")) == 2)
        await asyncio.sleep(0.05)
        assert h.payloads("c") == [0, 1]  # the third must wait for the window
        t3 = await wait_until(lambda: len(h.received("c")) == 3)
        assert t3 - t0 >= 0.15
        assert h.payloads("c") == [0, 1, 2]
        assert h.payloads("dropped") == [3, 4, 5]
        assert h.engine.runtimes["dl"].counters.dropped == 3


async def test_rate_window_opens_again_after_the_period() -> None:
    async with run_flow(flow(mode="rate", rate=1, period=0.05, drop=True)) as h:
        await h.send("dl", "a")
        await h.send("dl", "b")
        await h.idle()
        await asyncio.sleep(0.07)
        await h.send("dl", "c")
        await h.idle()
        assert h.payloads("c") == ["a", "c"]
        assert h.payloads("dropped") == ["b"]


async def test_rate_queue_is_flushed_on_stop() -> None:
    async with run_flow(flow(mode="rate", rate=1, period="1h")) as h:
        for i in range(3):
            await h.send("dl", i)
        await wait_until(lambda: len(h.received("c")) == 1)
    assert h.payloads("c") == [0, 1, 2]
    assert h.payloads("dropped") == []


def test_rate_period_must_be_positive() -> None:
    validated, issues = validate_doc(flow(mode="rate", period=0))
    assert validated is None
    assert any("period must be greater than 0" in i.message for i in issues)
