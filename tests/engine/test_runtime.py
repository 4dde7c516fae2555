"""Runtime: back-pressure, fan-out isolation, error routing, counters, draining, delivery settling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import Field

from engine import errors
from engine.errors import ConfigError, FlowValidationError
from engine.message import Delivery, Message
from engine.node import Node
from engine.registry import Registry
from engine.runtime import MAX_CATCH_HOPS, Engine
from engine.types import NodeConfig
from tests.flowkit import FlowHarness, test_registry, validate_doc

# -- test-only node types ------------------------------------------------------------------


class FastSourceConfig(NodeConfig):
    """How many messages to emit, each with a delivery the test can count."""

    count: int = Field(description="Messages to emit as fast as the flow accepts them.")


class FastSource(Node):
    """Test source: emits ``count`` messages back to back, stops when paused."""

    type_name = "fast-source"
    Config = FastSourceConfig
    inputs = 0
    config: FastSourceConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = 0
        self.paused = False
        self.settled: list[bool] = []
        self.send_started: list[float] = []
        self.send_finished: list[float] = []

    async def start(self) -> None:
        self.ctx.spawn(self._produce(), "produce")

    async def _produce(self) -> None:
        for i in range(self.config.count):
            if self.paused:
                return
            msg = Message(i, deliveries=(Delivery(self.settled.append),))
            self.send_started.append(time.monotonic())
            await self.send(msg)
            self.send_finished.append(time.monotonic())
            self.sent += 1

    async def pause(self) -> None:
        self.paused = True


class SlowSinkConfig(NodeConfig):
    """Seconds per message."""

    delay: float = Field(default=0.01, description="Time each message takes.")


class SlowSink(Node):
    """Test sink: takes ``delay`` seconds per message and records what it finished."""

    type_name = "slow-sink"
    Config = SlowSinkConfig
    outputs = ()
    config: SlowSinkConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done: list[Any] = []

    async def on_message(self, msg: Message) -> None:
        await asyncio.sleep(self.config.delay)
        self.done.append(msg.payload)


class PassConfig(NodeConfig):
    """No options."""


class PassNode(Node):
    """Test node: passes every message on unchanged."""

    type_name = "pass"
    Config = PassConfig


class MutateNode(Node):
    """Test node: edits the payload in place, deep inside, then passes it on."""

    type_name = "mutate"
    Config = PassConfig

    async def on_message(self, msg: Message) -> None:
        msg.payload["x"] = "mutated"
        msg.payload["nested"]["y"] = 2
        msg.meta["seen_by"].append("mutate")
        await self.emit(msg)


class FailConfig(NodeConfig):
    """Which exception to raise for payloads that ask for it."""

    error: str = Field(default="DecodeError", description="Name of a class in engine.errors, or ValueError.")


class FailNode(Node):
    """Test node: raises for ``{"fail": true}`` payloads (and sets its status), passes others on."""

    type_name = "fail"
    Config = FailConfig
    config: FailConfig

    async def on_message(self, msg: Message) -> None:
        if isinstance(msg.payload, dict) and msg.payload.get("fail"):
            self.status("error", f"failed on {msg.payload.get('n')}")
            cls = ValueError if self.config.error == "ValueError" else getattr(errors, self.config.error)
            raise cls(f"bad payload {msg.payload.get('n')}")
        self.status("ok", "passing")
        await self.emit(msg)


class CancelledInside(Node):
    """Test node: awaits a future someone else cancelled, for ``"cancel"`` payloads."""

    type_name = "cancelled-inside"
    Config = PassConfig

    async def on_message(self, msg: Message) -> None:
        if msg.payload == "cancel":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut
        await self.emit(msg)


class HoldingSink(Node):
    """Test sink: holds every message's deliveries until the test releases them."""

    type_name = "holding-sink"
    Config = PassConfig
    outputs = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: list[Message] = []

    async def on_message(self, msg: Message) -> None:
        self.hold(msg)
        self.held.append(msg)


class BrokenInit(Node):
    """Test node whose constructor fails."""

    type_name = "broken-init"
    Config = PassConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        raise RuntimeError("cannot build")


def registry() -> Registry:
    reg = test_registry()
    for cls in (
        FastSource,
        SlowSink,
        PassNode,
        MutateNode,
        FailNode,
        HoldingSink,
        BrokenInit,
        CancelledInside,
    ):
        reg.add_node(cls)
    return reg


@asynccontextmanager
async def running(doc: Mapping[str, Any], drain_timeout: float = 5.0) -> AsyncIterator[FlowHarness]:
    validated, issues = validate_doc(doc, registry=registry())
    if validated is None:
        raise FlowValidationError(issues)
    engine = Engine(validated, data_dir="/tmp/klimaflow-test-data", drain_timeout=drain_timeout)
    await engine.start()
    try:
        yield FlowHarness(engine)
    finally:
        await engine.stop()


async def until(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


# -- back-pressure -----------------------------------------------------------------------------


async def test_a_slow_sink_makes_a_fast_source_wait() -> None:
    doc = {
        "id": "bp",
        "nodes": [
            {"id": "src", "type": "fast-source", "count": 40, "wires": ["sink"]},
            {"id": "sink", "type": "slow-sink", "delay": 0.01, "inbox": 5},
        ],
    }
    async with running(doc) as h:
        src = h.engine.node("src")
        sink = h.engine.node("sink")
        assert isinstance(src, FastSource)
        assert isinstance(sink, SlowSink)
        inbox = h.engine.runtimes["sink"].inbox
        max_inbox = 0
        max_ahead = 0
        while len(sink.done) < 40:
            max_inbox = max(max_inbox, inbox.qsize())
            # accepted but not finished: at most a full inbox plus the one being handled
            max_ahead = max(max_ahead, src.sent - len(sink.done))
            await asyncio.sleep(0.001)
        assert sink.done == list(range(40))
        assert src.settled == [True] * 40
    assert max_inbox == 5
    assert 5 <= max_ahead <= 6
    # while the sink worked, the source's emit was blocked: sends after the first few waited
    # for the sink, so the source as a whole took about as long as the sink
    blocked = [f - s for s, f in zip(src.send_started, src.send_finished, strict=True)][10:]
    assert min(blocked) > 0.005
    assert src.send_finished[-1] - src.send_started[0] > 30 * 0.01


# -- fan-out -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [["m", "plain"], ["plain", "m"]])
async def test_fan_out_branches_are_isolated(order: list[str]) -> None:
    doc = {
        "id": "fan",
        "nodes": [
            {"id": "split", "type": "pass", "wires": order},
            {"id": "m", "type": "mutate", "wires": ["mutated"]},
            {"id": "mutated", "type": "collect"},
            {"id": "plain", "type": "collect"},
        ],
    }
    async with running(doc) as h:
        sent = await h.send("split", {"x": "original", "nested": {"y": 1}}, "t/1", seen_by=[])
        await h.idle()
        [changed] = h.received("mutated")
        [original] = h.received("plain")
    assert changed.payload == {"x": "mutated", "nested": {"y": 2}}
    assert changed.meta["seen_by"] == ["mutate"]
    assert original.payload == {"x": "original", "nested": {"y": 1}}
    assert original.meta["seen_by"] == []
    assert (original.id, original.topic, changed.id, changed.topic) == (sent.id, "t/1", sent.id, "t/1")


# -- errors ------------------------------------------------------------------------------------


def error_flow(*extra: dict[str, Any], fail_wires: Any = None, error: str = "DecodeError") -> dict[str, Any]:
    fail: dict[str, Any] = {"id": "f", "type": "fail", "error": error, "wires": fail_wires or ["ok"]}
    return {"id": "errs", "nodes": [fail, {"id": "ok", "type": "collect"}, *extra]}


async def test_error_port_wins_over_catch() -> None:
    doc = error_flow(
        {"id": "c", "type": "catch", "wires": ["caught"]},
        {"id": "caught", "type": "collect"},
        {"id": "port", "type": "collect"},
        fail_wires={"out": ["ok"], "error": ["port"]},
    )
    async with running(doc) as h:
        await h.send("f", {"fail": True, "n": 1})
        await h.idle()
        [msg] = h.received("port")
        assert h.received("caught") == []
        assert h.engine.unhandled_errors == 0
    assert msg.payload == {"fail": True, "n": 1}
    assert msg.meta["error"] == {
        "message": "bad payload 1",
        "class": "DecodeError",
        "classes": [
            "DecodeError",
            "MessageError",
            "NodeError",
            "KlimaflowError",
            "Exception",
            "BaseException",
        ],
        "node": "f",
        "node_type": "fail",
        "flow": "errs",
        "hops": 0,
    }


async def test_catch_scope_selects_nodes() -> None:
    doc = {
        "id": "errs",
        "nodes": [
            {"id": "f1", "type": "fail"},
            {"id": "f2", "type": "fail"},
            {"id": "c1", "type": "catch", "scope": ["f1"], "wires": ["from_f1"]},
            {"id": "call", "type": "catch", "wires": ["from_all"]},
            {"id": "from_f1", "type": "collect"},
            {"id": "from_all", "type": "collect"},
        ],
    }
    async with running(doc) as h:
        await h.send("f1", {"fail": True, "n": 1})
        await h.send("f2", {"fail": True, "n": 2})
        await h.idle()
        assert h.payloads("from_f1") == [{"fail": True, "n": 1}]
        assert sorted(m.payload["n"] for m in h.received("from_all")) == [1, 2]
        assert [m.meta["error"]["hops"] for m in h.received("from_all")] == [1, 1]


@pytest.mark.parametrize(
    ("error", "caught_by"),
    [
        ("DecodeError", ["messages"]),
        ("MessageError", ["messages"]),
        ("ServiceUnavailable", ["transient"]),
        ("TransientError", ["transient"]),
        ("ExpressionError", ["node_errors"]),
        ("ValueError", []),
    ],
)
async def test_catch_classes_follow_the_error_hierarchy(error: str, caught_by: list[str]) -> None:
    doc = error_flow(
        {"id": "c_msg", "type": "catch", "classes": ["MessageError"], "wires": ["messages"]},
        {"id": "c_tr", "type": "catch", "classes": ["TransientError"], "wires": ["transient"]},
        {"id": "c_node", "type": "catch", "classes": ["ExpressionError"], "wires": ["node_errors"]},
        {"id": "messages", "type": "collect"},
        {"id": "transient", "type": "collect"},
        {"id": "node_errors", "type": "collect"},
        error=error,
    )
    async with running(doc) as h:
        await h.send("f", {"fail": True, "n": 7})
        await h.idle()
        got = [c for c in ("messages", "transient", "node_errors") if h.received(c)]
        assert got == caught_by
        assert h.engine.unhandled_errors == (0 if caught_by else 1)


async def test_unhandled_errors_are_counted_logged_and_do_not_stop_the_engine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="klimaflow.node.f")
    async with running(error_flow()) as h:
        await h.send("f", {"fail": True, "n": 1})
        await h.send("f", {"n": 2})
        await h.send("f", {"fail": True, "n": 3})
        await h.send("f", {"n": 4})
        await h.idle()
        assert h.payloads("ok") == [{"n": 2}, {"n": 4}]
        assert h.engine.unhandled_errors == 2
    failures = [r.getMessage() for r in caplog.records if r.name == "klimaflow.node.f"]
    assert len(failures) == 2
    assert failures[0].startswith("DecodeError: bad payload 1 (message ")
    assert failures[0].endswith("; no error wire or catch node)")


async def test_a_cancellation_inside_node_code_is_an_error_not_the_end_of_the_node() -> None:
    doc = {
        "id": "cx",
        "nodes": [
            {"id": "n", "type": "cancelled-inside", "wires": {"out": ["ok"], "error": ["errs"]}},
            {"id": "ok", "type": "collect"},
            {"id": "errs", "type": "collect"},
        ],
    }
    async with running(doc) as h:
        await h.send("n", "cancel")
        await h.send("n", "fine")
        await h.idle()
        assert h.payloads("ok") == ["fine"]
        [err] = h.received("errs")
    assert (err.payload, err.meta["error"]["class"], err.meta["error"]["message"]) == (
        "cancel",
        "NodeError",
        "handling was cancelled",
    )


async def test_a_failing_handler_behind_a_catch_does_not_loop_forever() -> None:
    doc = {
        "id": "loop",
        "nodes": [
            {"id": "f", "type": "fail", "wires": []},
            {"id": "c", "type": "catch", "scope": ["f"], "wires": ["f"]},
        ],
    }
    async with running(doc) as h:
        await h.send("f", {"fail": True, "n": 1})
        await h.idle()
        counters = h.engine.runtimes["f"].counters
        assert (counters.received, counters.errors) == (MAX_CATCH_HOPS + 1, MAX_CATCH_HOPS + 1)
        assert h.engine.unhandled_errors == 1


# -- status and counters -----------------------------------------------------------------------


async def test_snapshot_has_status_and_counters() -> None:
    doc = error_flow(
        {"id": "slow", "type": "slow-sink", "delay": 0.02},
        fail_wires=["slow"],
    )
    events: list[dict[str, Any]] = []
    async with running(doc) as h:
        h.engine.subscribe(events.append)
        await h.send("f", {"n": 1})
        await h.send("f", {"fail": True, "n": 2})
        await h.send("f", {"n": 3})
        await h.idle()
        snap = h.engine.snapshot()
    nodes = {n["id"]: n for n in snap["nodes"]}
    assert nodes["f"]["status"] == {"level": "ok", "text": "passing"}
    assert nodes["f"]["type"] == "fail"
    assert nodes["f"]["flow"] == "errs"
    f_counters = nodes["f"]["counters"]
    assert {k: f_counters[k] for k in ("received", "sent", "errors", "dropped", "inbox")} == {
        "received": 3,
        "sent": 2,
        "errors": 1,
        "dropped": 0,
        "inbox": 0,
    }
    slow = nodes["slow"]["counters"]
    assert (slow["received"], slow["sent"], slow["errors"]) == (2, 0, 0)
    assert 0.04 <= slow["processing_seconds"] < 1.0
    assert (snap["unhandled_errors"], snap["undrained"]) == (1, 0)
    statuses = [(e["node"], e["level"], e["text"]) for e in events if e["kind"] == "status"]
    # a status is published only when it changes
    assert statuses == [("f", "ok", "passing"), ("f", "error", "failed on 2"), ("f", "ok", "passing")]
    [error_event] = [e for e in events if e["kind"] == "error"]
    assert (error_event["node"], error_event["error"]["message"]) == ("f", "bad payload 2")


async def test_a_node_that_cannot_be_built_fails_the_start() -> None:
    validated, _ = validate_doc(
        {"id": "b", "nodes": [{"id": "x", "type": "broken-init"}]}, registry=registry()
    )
    assert validated is not None
    engine = Engine(validated, data_dir="/tmp/klimaflow-test-data")
    with pytest.raises(ConfigError, match=r"^node x: cannot be created: RuntimeError: cannot build$"):
        await engine.start()
    await engine.stop()
    assert engine.runtimes == {}


# -- shutdown --------------------------------------------------------------------------------


async def test_stop_drains_every_accepted_message() -> None:
    doc = {
        "id": "drain",
        "nodes": [
            {"id": "src", "type": "fast-source", "count": 100000, "wires": ["p"]},
            {"id": "p", "type": "pass", "wires": ["sink"], "inbox": 20},
            {"id": "sink", "type": "slow-sink", "delay": 0.001, "inbox": 20},
        ],
    }
    async with running(doc) as h:
        src = h.engine.node("src")
        sink = h.engine.node("sink")
        assert isinstance(src, FastSource)
        assert isinstance(sink, SlowSink)
        await until(lambda: len(sink.done) >= 30)
        assert src.sent < 100000
        await h.engine.stop()
        assert h.engine.undrained == 0
        assert sink.done == list(range(src.sent))  # nothing accepted was lost, nothing reordered
        assert src.settled == [True] * src.sent  # and every delivery settled exactly once


async def test_drain_timeout_reports_undrained_messages(caplog: pytest.LogCaptureFixture) -> None:
    doc = {
        "id": "slowdrain",
        "nodes": [
            {"id": "src", "type": "fast-source", "count": 20, "wires": ["sink"]},
            {"id": "sink", "type": "slow-sink", "delay": 0.2, "inbox": 50},
        ],
    }
    async with running(doc) as h:
        src = h.engine.node("src")
        sink = h.engine.node("sink")
        assert isinstance(src, FastSource)
        assert isinstance(sink, SlowSink)
        await until(lambda: src.sent == 20)
        t0 = time.monotonic()
        await h.engine.stop(drain_timeout=0.1)
        assert time.monotonic() - t0 < 1.0
        assert h.engine.undrained == 20 - len(sink.done) > 0
        assert h.engine.snapshot()["undrained"] == h.engine.undrained
        # only what the sink finished is acknowledged; the rest was not lost silently
        assert len(src.settled) == len(sink.done)
    assert any("drain timeout after 0.1s" in r.getMessage() for r in caplog.records)


# -- delivery semantics ------------------------------------------------------------------------


async def test_fan_out_to_three_receivers_settles_once_after_all_are_done() -> None:
    doc = {
        "id": "fan3",
        "nodes": [
            {"id": "p", "type": "pass", "wires": ["s1", "s2", "s3"]},
            {"id": "s1", "type": "slow-sink", "delay": 0.0},
            {"id": "s2", "type": "slow-sink", "delay": 0.03},
            {"id": "s3", "type": "slow-sink", "delay": 0.06},
        ],
    }
    async with running(doc) as h:
        sinks = [h.engine.node(s) for s in ("s1", "s2", "s3")]
        settled: list[tuple[bool, list[int]]] = []
        delivery = Delivery(lambda ok: settled.append((ok, [len(s.done) for s in sinks])))  # type: ignore[attr-defined]
        await h.engine.runtimes["p"].put(Message("x", deliveries=(delivery,)))
        await h.idle()
        assert settled == [(True, [1, 1, 1])]
        assert delivery.settled
        assert delivery.pending == 0


async def test_held_deliveries_settle_when_the_sink_releases_them() -> None:
    doc = {"id": "hold", "nodes": [{"id": "sink", "type": "holding-sink"}]}
    async with running(doc) as h:
        settled: list[bool] = []
        await h.engine.runtimes["sink"].put(Message(1, deliveries=(Delivery(settled.append),)))
        await h.idle()
        assert settled == []
        sink = h.engine.node("sink")
        assert isinstance(sink, HoldingSink)
        sink.held[0].release(ok=False)
        assert settled == [False]


async def test_an_error_routed_to_a_catch_node_still_settles() -> None:
    doc = error_flow({"id": "c", "type": "catch", "wires": ["caught"]}, {"id": "caught", "type": "slow-sink"})
    async with running(doc) as h:
        settled: list[tuple[bool, int]] = []
        caught = h.engine.node("caught")
        assert isinstance(caught, SlowSink)
        d = Delivery(lambda ok: settled.append((ok, len(caught.done))))
        await h.engine.runtimes["f"].put(Message({"fail": True, "n": 1}, deliveries=(d,)))
        await h.idle()
        assert settled == [(True, 1)]  # after the catch branch handled it, not before


async def test_an_unhandled_error_still_settles() -> None:
    async with running(error_flow()) as h:
        settled: list[bool] = []
        await h.engine.runtimes["f"].put(Message({"fail": True}, deliveries=(Delivery(settled.append),)))
        await h.idle()
        assert settled == [True]
        assert h.engine.unhandled_errors == 1
