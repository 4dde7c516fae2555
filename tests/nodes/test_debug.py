"""debug: property paths, the last N records, debug events, logging."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from nodes.debug import DebugNode
from tests.flowkit import run_flow


def debug_flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "tick", "type": "inject", "wires": ["show"]},
            {"id": "show", "type": "debug", **config},
        ],
    }


async def test_property_path_and_published_debug_events() -> None:
    events: list[dict[str, Any]] = []
    async with run_flow(debug_flow(property="payload.soil.moisture")) as h:
        h.engine.subscribe(events.append)
        sent = await h.send("show", {"soil": {"moisture": 31.5}}, "sensors/lse01")
        await h.send("show", {"other": 1})
        await h.idle()
    debug_events = [e for e in events if e["kind"] == "debug"]
    assert [(e["node"], e["flow"], e["topic"], e["property"], e["value"]) for e in debug_events] == [
        ("show", "f", "sensors/lse01", "payload.soil.moisture", 31.5),
        ("show", "f", None, "payload.soil.moisture", None),
    ]
    assert debug_events[0]["msg_id"] == sent.id
    assert isinstance(debug_events[0]["time"], float)


async def test_whole_message_and_meta_properties() -> None:
    async with run_flow(debug_flow(property="msg")) as h:
        sent = await h.send("show", [1, 2], "t", device="lse01")
        await h.idle()
        node = h.engine.node("show")
        assert isinstance(node, DebugNode)
        [record] = node.recent
    assert record["value"] == {
        "payload": [1, 2],
        "topic": "t",
        "device": "lse01",
        "_msgid": sent.id,
        "entered_at": sent.entered_at,
    }


async def test_keeps_only_the_last_n() -> None:
    async with run_flow(debug_flow(keep=2)) as h:
        for i in range(5):
            await h.send("show", i)
        await h.idle()
        node = h.engine.node("show")
        assert isinstance(node, DebugNode)
        assert [r["value"] for r in node.recent] == [3, 4]


async def test_keep_zero_keeps_nothing_but_still_publishes() -> None:
    events: list[dict[str, Any]] = []
    async with run_flow(debug_flow(keep=0)) as h:
        h.engine.subscribe(events.append)
        await h.send("show", 1)
        await h.idle()
        node = h.engine.node("show")
        assert isinstance(node, DebugNode)
        assert list(node.recent) == []
    assert [e["value"] for e in events if e["kind"] == "debug"] == [1]


async def test_inactive_debug_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="klimaflow.node.show")
    events: list[dict[str, Any]] = []
    async with run_flow(debug_flow(active=False)) as h:
        h.engine.subscribe(events.append)
        await h.send("show", 1)
        await h.idle()
    assert [e for e in events if e["kind"] == "debug"] == []
    assert [r for r in caplog.records if r.name == "klimaflow.node.show"] == []


async def test_set_active_switches_output_at_runtime_and_keeps_the_configured_default() -> None:
    events: list[dict[str, Any]] = []
    async with run_flow(debug_flow(active=False)) as h:
        h.engine.subscribe(events.append)
        node = h.engine.node("show")
        assert isinstance(node, DebugNode)
        assert node.active is False
        await h.send("show", 1)
        await h.idle()
        node.set_active(True)
        await h.send("show", 2)
        await h.idle()
        node.set_active(False)
        await h.send("show", 3)
        await h.idle()
        assert (node.active, node.config.active) == (False, False)
        node.set_active(True)
        assert (node.active, node.config.active) == (True, False)
    assert [e["value"] for e in events if e["kind"] == "debug"] == [2]
    assert [r["value"] for r in node.recent] == [2]


async def test_logs_at_the_configured_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="klimaflow.node.show")
    async with run_flow(debug_flow(level="warning", property="payload")) as h:
        await h.send("show", {"t": "Grün"}, "roof")
        await h.send("show", "x" * 3000)
        await h.idle()
    records = [r for r in caplog.records if r.name == "klimaflow.node.show"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert records[0].getMessage() == '[roof] {"t": "Grün"}'
    assert records[1].getMessage() == '"' + "x" * 1999 + "…"


async def test_log_false_only_publishes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="klimaflow.node.show")
    async with run_flow(debug_flow(log=False)) as h:
        await h.send("show", 1)
        await h.idle()
    assert [r for r in caplog.records if r.name == "klimaflow.node.show"] == []
