"""Engine.apply: a live, diff-based swap. What is unchanged keeps running with its state and its
connections; what changed is drained, stopped and replaced; nothing in flight is lost."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import Field

from engine.errors import ConfigError, FlowValidationError
from engine.message import Delivery, Message
from engine.node import Connection, Node
from engine.registry import Registry
from engine.runtime import ApplyOutcome, Engine
from engine.supervisor import DeploymentDiff, compute_diff
from engine.types import ConnectionConfig, NodeConfig, connection_field
from tests.flowkit import CollectNode, FlowHarness, test_registry, validate_doc

# -- test-only node and connection types ------------------------------------------------------


class LinkConfig(ConnectionConfig):
    """Where the link goes (only compared)."""

    url: str = Field(description="Any text; a different value is a changed connection.")


class LinkConnection(Connection):
    """Test connection that records its lifecycle and the nodes registered with it."""

    type_name = "link"
    Config = LinkConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[str] = []
        self.connects = 0
        self.registered: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    async def activate(self) -> None:
        self.connects += 1
        self.events.append("activate")

    async def stop(self) -> None:
        self.events.append("stop")


class LinkSourceConfig(NodeConfig):
    """A source on a link."""

    link: str = connection_field("link", "The link.")
    label: str = Field(default="", description="Changing it changes the node.")


class LinkSource(Node):
    """Test source: registers with its link on start; unregisters on stop unless paused."""

    type_name = "link-source"
    Config = LinkSourceConfig
    inputs = 0
    config: LinkSourceConfig

    async def start(self) -> None:
        self.conn = self.ctx.connection(self.config.link)
        assert isinstance(self.conn, LinkConnection)
        self.conn.registered.append(self.config.label)
        self.conn.events.append(f"register {self.config.label}")
        self.paused = False

    async def pause(self) -> None:
        self.paused = True
        self.conn.events.append(f"pause {self.config.label}")

    async def stop(self) -> None:
        self.conn.events.append(f"stop {self.config.label} paused={self.paused}")
        if not self.paused:
            self.conn.registered.remove(self.config.label)


class LinkSinkConfig(NodeConfig):
    """A sink on a link."""

    link: str = connection_field("link", "The link.")


class LinkSink(Node):
    """Test sink that needs a link."""

    type_name = "link-sink"
    Config = LinkSinkConfig
    outputs = ()


class SeqSourceConfig(NodeConfig):
    """How many messages, and how fast."""

    count: int = Field(description="Messages to emit (payload 0, 1, ...).")
    every: float = Field(default=0.0, description="Seconds between messages.")


SETTLED: dict[int, bool] = {}


class SeqSource(Node):
    """Test source: emits 0..count-1, each with a delivery recorded in ``SETTLED``."""

    type_name = "seq-source"
    Config = SeqSourceConfig
    inputs = 0
    config: SeqSourceConfig

    async def start(self) -> None:
        self.paused = False
        self.sent = 0
        self.ctx.spawn(self._run(), "run")

    async def _run(self) -> None:
        for i in range(self.config.count):
            if self.paused:
                return
            await self.send(Message(i, deliveries=(Delivery(lambda ok, i=i: SETTLED.__setitem__(i, ok)),)))
            self.sent += 1
            await asyncio.sleep(self.config.every)

    async def pause(self) -> None:
        self.paused = True


class SlowConfig(NodeConfig):
    """Seconds per message and a tag added to each payload."""

    delay: float = Field(default=0.0, description="Time each message takes.")
    tag: str = Field(default="", description="Wraps the payload as `[tag, payload]`.")


class SlowNode(Node):
    """Test node: takes ``delay`` per message, emits ``[tag, payload]``; counts starts and stops."""

    type_name = "slow"
    Config = SlowConfig
    config: SlowConfig
    starts = 0
    stops = 0

    async def start(self) -> None:
        type(self).starts += 1

    async def on_message(self, msg: Message) -> None:
        if self.config.delay:
            await asyncio.sleep(self.config.delay)
        msg.payload = [self.config.tag, msg.payload]
        await self.emit(msg)

    async def stop(self) -> None:
        type(self).stops += 1


class FragileConfig(NodeConfig):
    """Fails in its constructor when asked to."""

    fail: bool = Field(default=False, description="Raise in __init__.")


class Fragile(Node):
    """Test node whose constructor can fail (a config problem found only at construction)."""

    type_name = "fragile"
    Config = FragileConfig
    config: FragileConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.fail:
            raise RuntimeError("cannot build")


def registry() -> Registry:
    reg = test_registry()
    for cls in (LinkSource, LinkSink, SeqSource, SlowNode, Fragile):
        reg.add_node(cls)
    reg.add_connection(LinkConnection)
    return reg


@asynccontextmanager
async def running(doc: Mapping[str, Any], drain_timeout: float = 5.0) -> AsyncIterator[FlowHarness]:
    SETTLED.clear()
    validated, issues = validate_doc(doc, registry=registry())
    if validated is None:
        raise FlowValidationError(issues)
    engine = Engine(validated, data_dir="/tmp/klimaflow-test-data", drain_timeout=drain_timeout)
    await engine.start()
    try:
        yield FlowHarness(engine)
    finally:
        await engine.stop()


async def apply(h: FlowHarness, doc: Mapping[str, Any]) -> tuple[ApplyOutcome, DeploymentDiff]:
    validated, issues = validate_doc(doc, registry=registry())
    if validated is None:
        raise FlowValidationError(issues)
    diff = compute_diff(h.engine.validated, validated)
    return await h.engine.apply(validated, diff), diff


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


def node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in doc["nodes"] if n["id"] == node_id)
    return found


# -- categories: unchanged, rewired, changed, removed, added ---------------------------------


STATEFUL = {
    "id": "stateful",
    "nodes": [
        {"id": "entry", "type": "slow", "tag": "v1", "wires": ["counter", "flt"]},
        {"id": "counter", "type": "batch", "count": 3, "wires": ["out"]},
        {"id": "flt", "type": "filter", "property": "payload.1", "key": None, "wires": ["out2"]},
        {"id": "out", "type": "collect"},
        {"id": "out2", "type": "collect"},
    ],
}


async def test_unchanged_and_rewired_nodes_keep_their_state_changed_removed_added_are_swapped() -> None:
    async with running(STATEFUL) as h:
        await h.send("entry", 5)
        await h.send("entry", 6)
        await h.idle()
        before = dict(h.engine.runtimes)
        old_out2: CollectNode = h.engine.node("out2")  # type: ignore[assignment]
        assert [m.payload for m in old_out2.messages] == [["v1", 5], ["v1", 6]]

        edited = copy.deepcopy(STATEFUL)
        node(edited, "entry")["tag"] = "v2"  # changed
        node(edited, "flt")["wires"] = ["out3"]  # rewired
        edited["nodes"] = [n for n in edited["nodes"] if n["id"] != "out2"]  # removed
        edited["nodes"].append({"id": "out3", "type": "collect"})  # added
        outcome, diff = await apply(h, edited)

        assert (diff.changed, diff.rewired, diff.removed, diff.added, diff.unchanged) == (
            ("entry",),
            ("flt",),
            ("out2",),
            ("out3",),
            ("counter", "out"),
        )
        assert outcome.drain_timeout_hit is False
        assert (outcome.undrained, outcome.handed_over) == (0, 0)
        assert outcome.stopped == ("entry", "out2")
        assert outcome.started == ("entry", "out3")
        rts = h.engine.runtimes
        assert rts["counter"] is before["counter"]
        assert rts["flt"] is before["flt"]
        assert rts["out"] is before["out"]
        assert rts["entry"] is not before["entry"]
        assert before["entry"].closed
        assert "out2" not in rts
        assert before["out2"].closed
        assert list(rts) == ["entry", "counter", "flt", "out", "out3"]  # topological, for stop()

        await h.send("entry", 6)  # the filter still remembers 6: blocked
        await h.send("entry", 7)
        await h.idle()
        # The batch kept its two messages from before the reload: the third completes it.
        assert h.payloads("out") == [[["v1", 5], ["v1", 6], ["v2", 6]]]
        assert h.payloads("out3") == [["v2", 7]]
        assert len(old_out2.messages) == 2  # the removed node got nothing more


async def test_invalid_construction_leaves_the_running_flow_untouched() -> None:
    doc = {
        "id": "fragile",
        "nodes": [
            {"id": "a", "type": "fragile", "wires": ["out"]},
            {"id": "out", "type": "collect"},
        ],
    }
    async with running(doc) as h:
        before = dict(h.engine.runtimes)
        revision = h.engine.validated.revision
        edited = copy.deepcopy(doc)
        node(edited, "a")["fail"] = True
        with pytest.raises(ConfigError, match="node a: cannot be created: RuntimeError: cannot build"):
            await apply(h, edited)
        assert h.engine.runtimes == before
        assert h.engine.validated.revision == revision
        assert not before["a"].closed
        await h.send("a", 1)
        await h.idle()
        assert h.payloads("out") == [1]


# -- nothing lost while a node in the middle is replaced -------------------------------------------


PIPE = {
    "id": "pipe",
    "nodes": [
        {"id": "src", "type": "seq-source", "count": 1500, "every": 0.0, "wires": ["up"]},
        # Small inboxes tie the source to mid's pace, so it is still sending when the test
        # looks, however late a loaded machine wakes the test up (1,500 fit in two inboxes of 1,000).
        {"id": "up", "type": "slow", "tag": "up", "inbox": 50, "wires": ["mid"]},
        {"id": "mid", "type": "slow", "tag": "v1", "delay": 0.0002, "inbox": 50, "wires": ["down"]},
        {"id": "down", "type": "change", "rules": [{"set": "meta.seen", "to": True}], "wires": ["out"]},
        {"id": "out", "type": "collect"},
    ],
}


async def test_a_changed_node_between_running_neighbours_loses_and_reorders_nothing() -> None:
    async with running(PIPE) as h:
        src: Any = h.engine.node("src")
        await until(lambda: src.sent >= 300)
        sent_before = src.sent
        assert sent_before < 1500
        queued = h.engine.runtimes["mid"].inbox.qsize()
        assert queued > 0  # messages are in flight toward the node being replaced
        edited = copy.deepcopy(PIPE)
        node(edited, "mid")["tag"] = "v2"
        outcome, diff = await apply(h, edited)
        assert diff.changed == ("mid",)
        assert outcome.drain_timeout_hit is False
        assert src.sent > sent_before  # the source kept running through the swap
        await until(lambda: len(h.received("out")) == 1500)
        await h.idle()
        payloads = h.payloads("out")
        values = [p[1][1] for p in payloads]
        tags = [p[0] for p in payloads]
        assert values == list(range(1500))  # every message, in order
        assert {p[1][0] for p in payloads} == {"up"}
        switch = tags.index("v2")
        assert queued <= switch < 1500
        assert tags == ["v1"] * switch + ["v2"] * (1500 - switch)
        assert dict.fromkeys(range(1500), True) == SETTLED


async def test_drain_timeout_is_reported_and_queued_messages_move_to_the_replacement() -> None:
    doc = {
        "id": "slowdrain",
        "nodes": [
            {"id": "mid", "type": "slow", "tag": "v1", "delay": 0.05, "wires": ["out"]},
            {"id": "out", "type": "collect"},
        ],
    }
    async with running(doc, drain_timeout=0.12) as h:
        deliveries = []
        settled: dict[int, bool] = {}
        for i in range(20):
            d = Delivery(lambda ok, i=i: settled.__setitem__(i, ok))
            deliveries.append(d)
            await h.send("mid", i, delivery=d)
            d.release()  # the test's own reference; the message holds the other one
        edited = copy.deepcopy(doc)
        node(edited, "mid")["tag"] = "v2"
        node(edited, "mid")["delay"] = 0
        outcome, _ = await apply(h, edited)
        await h.idle()
        done_by_old = [p[1] for p in h.payloads("out") if p[0] == "v1"]
        done_by_new = [p[1] for p in h.payloads("out") if p[0] == "v2"]
        assert outcome.drain_timeout_hit is True
        assert outcome.drain_timeout == 0.12
        # The one in hand at the timeout was cancelled: not processed, not acknowledged.
        assert outcome.undrained == 1
        assert outcome.handed_over == 20 - len(done_by_old) - 1
        assert 1 <= len(done_by_old) <= 3
        lost = len(done_by_old)
        assert done_by_old == list(range(lost))
        assert done_by_new == list(range(lost + 1, 20))
        assert settled == {i: True for i in range(20) if i != lost}


async def test_a_removed_node_is_drained_through_the_old_wires_first() -> None:
    doc = {
        "id": "remove",
        "nodes": [
            {"id": "a", "type": "slow", "tag": "a", "delay": 0.005, "wires": ["b"]},
            {"id": "b", "type": "slow", "tag": "b", "delay": 0.005, "wires": ["out"]},
            {"id": "out", "type": "collect"},
        ],
    }
    async with running(doc) as h:
        for i in range(10):
            await h.send("a", i)
        edited = {"id": "remove", "nodes": [node(doc, "out")]}
        outcome, diff = await apply(h, edited)
        assert diff.removed == ("a", "b")
        assert (outcome.drain_timeout_hit, outcome.undrained) == (False, 0)
        assert h.payloads("out") == [["b", ["a", i]] for i in range(10)]
        assert list(h.engine.runtimes) == ["out"]


# -- connections ---------------------------------------------------------------------------------


LINKED = {
    "id": "linked",
    "connections": {"l1": {"type": "link", "url": "one"}, "l2": {"type": "link", "url": "two"}},
    "nodes": [
        {"id": "s1", "type": "link-source", "link": "l1", "label": "s1", "wires": ["out"]},
        {"id": "s2", "type": "link-source", "link": "l2", "label": "s2", "wires": ["out"]},
        {"id": "k2", "type": "link-sink", "link": "l2"},
        {"id": "out", "type": "collect"},
    ],
}


async def test_an_unchanged_connection_is_the_same_object_and_never_reconnects() -> None:
    async with running(LINKED) as h:
        l1: Any = h.engine.connections["l1"]
        l2: Any = h.engine.connections["l2"]
        assert (l1.connects, l2.connects) == (1, 1)
        edited = copy.deepcopy(LINKED)
        node(edited, "s1")["label"] = "s1b"  # a source on l1 changes; l1 does not
        node(edited, "out")["name"] = "renamed"
        outcome, diff = await apply(h, edited)
        assert diff.changed == ("out", "s1")
        assert diff.connections_changed == diff.connections_added == diff.connections_removed == ()
        assert h.engine.connections["l1"] is l1
        assert h.engine.connections["l2"] is l2
        assert (l1.connects, l2.connects) == (1, 1)
        assert l1.events == ["start", "register s1", "activate", "register s1b", "stop s1 paused=False"]
        assert l2.events == ["start", "register s2", "activate"]
        assert l1.registered == ["s1b"]
        assert outcome.started == ("s1", "out")  # topological order


async def test_a_changed_connection_is_replaced_with_its_nodes_a_removed_one_stops() -> None:
    async with running(LINKED) as h:
        l1: Any = h.engine.connections["l1"]
        l2: Any = h.engine.connections["l2"]
        s1 = h.engine.runtimes["s1"]
        edited = copy.deepcopy(LINKED)
        edited["connections"]["l2"]["url"] = "two-b"
        del edited["connections"]["l1"]
        edited["connections"]["l3"] = {"type": "link", "url": "three"}
        node(edited, "s1")["link"] = "l3"
        outcome, diff = await apply(h, edited)
        assert diff.changed == ("k2", "s1", "s2")
        assert (diff.connections_added, diff.connections_removed, diff.connections_changed) == (
            ("l3",),
            ("l1",),
            ("l2",),
        )
        new_l2: Any = h.engine.connections["l2"]
        l3: Any = h.engine.connections["l3"]
        assert new_l2 is not l2
        assert set(h.engine.connections) == {"l2", "l3"}
        # Its sources were paused first (what arrives stays unacknowledged for the new session).
        assert l2.events == ["start", "register s2", "activate", "pause s2", "stop s2 paused=True", "stop"]
        # s1's connection l1 is going away too: paused, then l1 stops.
        assert l1.events == ["start", "register s1", "activate", "pause s1", "stop s1 paused=True", "stop"]
        assert new_l2.events == ["start", "register s2", "activate"]
        assert l3.events == ["start", "register s1", "activate"]
        assert h.engine.runtimes["s1"] is not s1
        assert outcome.drain_timeout_hit is False


async def test_a_connection_edit_that_changes_nothing_else_restarts_nothing() -> None:
    async with running(LINKED) as h:
        before = dict(h.engine.runtimes)
        edited = copy.deepcopy(LINKED)
        edited["label"] = "new label"
        outcome, diff = await apply(h, edited)
        assert diff.empty
        assert h.engine.runtimes == before
        assert (outcome.stopped, outcome.started) == ((), ())
        assert h.engine.validated.deployment.flows[0].label == "new label"
