"""inject: once, interval, cron (through a replaceable clock), $timestamp, trigger."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nodes.inject import InjectNode, next_cron_time
from tests.flowkit import FlowHarness, run_flow, validate_doc


def inject_flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "tick", "type": "inject", "wires": ["out"], **config},
            {"id": "out", "type": "collect"},
        ],
    }


async def wait_for_count(h: FlowHarness, n: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while len(h.received("out")) < n:
        assert time.monotonic() < deadline, f"only {len(h.received('out'))} of {n} messages arrived"
        await asyncio.sleep(0.005)


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Europe/Berlin (with DST) for the duration of a test."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_once_fires_right_after_start() -> None:
    async with run_flow(inject_flow(once=True, once_delay=0, payload={"t": 21.5}, topic="sensors/roof")) as h:
        await wait_for_count(h, 1)
        await asyncio.sleep(0.05)
        [msg] = h.received("out")
    assert (msg.payload, msg.topic) == ({"t": 21.5}, "sensors/roof")


async def test_once_waits_for_once_delay() -> None:
    async with run_flow(inject_flow(once=True, once_delay="150ms", payload=1)) as h:
        t0 = time.monotonic()
        await wait_for_count(h, 1)
        assert time.monotonic() - t0 >= 0.12


async def test_interval_with_repeat_fires_that_often_at_that_pace() -> None:
    async with run_flow(inject_flow(interval="50ms", repeat=3, payload="ping")) as h:
        t0 = time.time()
        await wait_for_count(h, 3)
        await asyncio.sleep(0.15)  # repeat is a limit: nothing more comes
        msgs = h.received("out")
    assert [m.payload for m in msgs] == ["ping", "ping", "ping"]
    times = [m.entered_at - t0 for m in msgs]
    assert times[0] >= 0.04  # the first firing is one interval after start, not at start
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(times))


async def test_each_firing_gets_a_fresh_copy_of_the_payload() -> None:
    async with run_flow(inject_flow(interval="20ms", repeat=2, payload={"n": [1]})) as h:
        await wait_for_count(h, 1)
        h.received("out")[0].payload["n"].append(2)
        await wait_for_count(h, 2)
        assert h.payloads("out")[1] == {"n": [1]}


async def test_timestamp_payload_and_trigger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InjectNode, "_now", staticmethod(lambda: 1714536000.25))
    async with run_flow(inject_flow(payload="$timestamp", topic="t")) as h:
        node = h.engine.node("tick")
        await node.trigger()
        await node.trigger({"manual": True})
        await h.idle()
        assert h.payloads("out") == [1714536000250, {"manual": True}]
        assert [m.topic for m in h.received("out")] == ["t", "t"]


async def test_timestamp_uses_the_real_clock() -> None:
    async with run_flow(inject_flow(payload="$timestamp")) as h:
        before = int(time.time() * 1000)
        await h.engine.node("tick").trigger()
        await h.idle()
        [ts] = h.payloads("out")
        assert before <= ts <= int(time.time() * 1000)


async def test_cron_fires_at_the_scheduled_local_time(monkeypatch: pytest.MonkeyPatch, berlin: None) -> None:
    """The clock is moved to 50 ms before 06:00 local time, so the 06:00 firing comes at once."""
    target = dt.datetime(2024, 5, 1, 6, 0, 0).astimezone().timestamp()
    offset = target - 0.05 - time.time()
    monkeypatch.setattr(InjectNode, "_now", staticmethod(lambda: time.time() + offset))
    async with run_flow(inject_flow(cron="0 6 * * *", payload="$timestamp", repeat=1)) as h:
        await wait_for_count(h, 1, timeout=1.0)
        [ts] = h.payloads("out")
    fired = dt.datetime.fromtimestamp(ts / 1000).astimezone()
    assert (fired.date(), fired.hour, fired.minute, fired.second) == (dt.date(2024, 5, 1), 6, 0, 0)
    assert fired.utcoffset() == dt.timedelta(hours=2)


def test_next_cron_time_is_local_and_dst_aware(berlin: None) -> None:
    def at(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
        return dt.datetime(year, month, day, hour, minute, second).astimezone().timestamp()

    def utc(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    # 06:00 Berlin is 05:00 UTC in winter and 04:00 UTC in summer (DST starts 2024-03-31)
    assert utc(next_cron_time("0 6 * * *", at(2024, 3, 30, 12, 0))) == "2024-03-31 04:00:00"
    assert utc(next_cron_time("0 6 * * *", at(2024, 3, 29, 12, 0))) == "2024-03-30 05:00:00"
    # strictly after: at exactly 06:00 the next one is tomorrow
    assert next_cron_time("0 6 * * *", at(2024, 5, 1, 6, 0)) == at(2024, 5, 2, 6, 0)
    # a sixth field is seconds (croniter puts it last)
    assert next_cron_time("* * * * * */10", at(2024, 5, 1, 6, 0, 3)) == at(2024, 5, 1, 6, 0, 10)
    assert next_cron_time("@hourly", at(2024, 5, 1, 6, 59, 59)) == at(2024, 5, 1, 7, 0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cron": "61 * * * *"}, "cron: invalid cron expression '61 * * * *'"),
        ({"cron": "0 0 30 2 *"}, "cron: cron expression '0 0 30 2 *' never fires"),
        ({"cron": "0 6 * * *", "interval": 5}, "set either interval or cron, not both"),
        ({"interval": 0}, "interval must be greater than 0"),
        (
            {"interval": "-5s"},
            "interval: invalid duration '-5s': use seconds (e.g. 5) or a string like '500ms', '5s', '1m', '1h'",
        ),
        ({"repeat": 0}, "repeat: Input should be greater than or equal to 1"),
    ],
)
def test_invalid_schedules_are_config_errors(config: dict[str, Any], message: str) -> None:
    validated, issues = validate_doc(inject_flow(**config))
    assert validated is None
    assert [i.format() for i in issues] == [f"flow.json:1: node tick: {message}"]


async def test_stop_ends_the_schedule() -> None:
    async with run_flow(inject_flow(interval="20ms", payload=1)) as h:
        await wait_for_count(h, 2)
    count = len(h.received("out"))
    await asyncio.sleep(0.06)
    assert len(h.received("out")) == count
    assert h.engine.undrained == 0


def test_next_cron_time_never_goes_back_in_the_repeated_autumn_hour(berlin: None) -> None:
    # 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:10 CET (the second pass) is 01:10 UTC
    second_pass = dt.datetime(2024, 10, 27, 1, 10, tzinfo=dt.UTC).timestamp()
    nxt = next_cron_time("30 2 * * *", second_pass)
    assert nxt > second_pass
    assert dt.datetime.fromtimestamp(nxt, dt.UTC) == dt.datetime(2024, 10, 28, 1, 30, tzinfo=dt.UTC)
