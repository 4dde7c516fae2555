"""catch and status: nodes that observe the other nodes of their flow."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import Field

from engine import errors
from engine.message import Message
from engine.node import Node
from engine.registry import Registry
from engine.runtime import Engine
from engine.types import NodeConfig
from engine.validation import load_documents, validate_deployment
from nodes.catch import CatchNode
from tests.flowkit import FlowHarness, test_registry


class SayConfig(NodeConfig):
    """Which error to raise when a payload asks for one."""

    error: str = Field(default="DecodeError", description="Class name in engine.errors.")


class SayNode(Node):
    """Test node: sets its status from ``{"level", "text"}`` payloads, raises for ``{"raise": msg}``."""

    type_name = "say"
    Config = SayConfig
    config: SayConfig

    async def on_message(self, msg: Message) -> None:
        p = msg.payload
        if "raise" in p:
            raise getattr(errors, self.config.error)(p["raise"])
        self.status(p["level"], p["text"])
        await self.emit(msg)


def registry() -> Registry:
    reg = test_registry()
    reg.add_node(SayNode)
    return reg


@asynccontextmanager
async def running(*docs: dict[str, Any]) -> AsyncIterator[FlowHarness]:
    """Several flows in one deployment, as a directory of flow files would be."""
    deployment, issues = load_documents([(f"{d['id']}.json", json.dumps(d)) for d in docs])
    validated, issues = validate_deployment(deployment, registry(), environ={}, prior_issues=issues)
    assert validated is not None, [i.format() for i in issues]
    engine = Engine(validated, data_dir="/tmp/klimaflow-test-data")
    await engine.start()
    try:
        yield FlowHarness(engine)
    finally:
        await engine.stop()


async def until(condition: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_catch_receives_errors_of_its_own_flow_only() -> None:
    a = {
        "id": "a",
        "nodes": [
            {"id": "a_say", "type": "say"},
            {"id": "a_catch", "type": "catch", "wires": ["a_errors"]},
            {"id": "a_errors", "type": "collect"},
        ],
    }
    b = {
        "id": "b",
        "nodes": [
            {"id": "b_say", "type": "say", "error": "TransientError"},
            {"id": "b_catch", "type": "catch", "classes": ["TransientError"], "wires": ["b_errors"]},
            {"id": "b_errors", "type": "collect"},
        ],
    }
    async with running(a, b) as h:
        await h.send("a_say", {"raise": "bad bytes"}, "up/1")
        await h.send("b_say", {"raise": "timeout"}, "up/2")
        await h.idle()
        [from_a] = h.received("a_errors")
        [from_b] = h.received("b_errors")
    assert (from_a.payload, from_a.topic) == ({"raise": "bad bytes"}, "up/1")
    assert {k: from_a.meta["error"][k] for k in ("message", "class", "node", "flow")} == {
        "message": "bad bytes",
        "class": "DecodeError",
        "node": "a_say",
        "flow": "a",
    }
    assert {k: from_b.meta["error"][k] for k in ("message", "class", "node", "flow")} == {
        "message": "timeout",
        "class": "TransientError",
        "node": "b_say",
        "flow": "b",
    }


def test_catches_matches_scope_and_class_names() -> None:
    def catch(**config: Any) -> CatchNode:
        node = CatchNode.__new__(CatchNode)
        node.config = CatchNode.Config(**config)
        return node

    decode = errors.error_chain(errors.DecodeError("x"))
    transient = errors.error_chain(errors.ServiceUnavailable("x"))
    assert catch().catches("any", decode)
    assert catch(scope=[]).catches("any", decode)  # empty scope means the whole flow
    assert catch(scope=["a"]).catches("a", decode)
    assert not catch(scope=["a"]).catches("b", decode)
    assert catch(classes=["MessageError"]).catches("a", decode)
    assert not catch(classes=["MessageError"]).catches("a", transient)
    assert catch(classes=["KlimaflowError"]).catches("a", transient)
    assert catch(classes=["Exception"]).catches("a", errors.error_chain(ValueError("x")))


async def test_status_node_emits_when_another_node_changes_status() -> None:
    flow = {
        "id": "s",
        "nodes": [
            {"id": "one", "type": "say"},
            {"id": "two", "type": "say"},
            {"id": "watch_all", "type": "status", "wires": ["all"]},
            {"id": "watch_two", "type": "status", "scope": ["two"], "wires": ["only_two"]},
            {"id": "all", "type": "collect"},
            {"id": "only_two", "type": "collect"},
        ],
    }
    other = {"id": "o", "nodes": [{"id": "elsewhere", "type": "say"}]}
    async with running(flow, other) as h:
        for node_id, level, text in [
            ("one", "warning", "battery low"),
            ("one", "warning", "battery low"),  # unchanged: no event
            ("two", "error", "no uplink"),
            ("elsewhere", "error", "other flow"),
            ("one", "ok", ""),
        ]:
            await h.send(node_id, {"level": level, "text": text})
            await h.idle()
        await until(lambda: len(h.received("all")) >= 3 and len(h.received("only_two")) >= 1)
        await asyncio.sleep(0.05)
        [from_two] = h.received("only_two")
        everything = h.received("all")
    assert [m.payload for m in everything] == [
        {"level": "warning", "text": "battery low", "node": "one"},
        {"level": "error", "text": "no uplink", "node": "two"},
        {"level": "ok", "text": "", "node": "one"},
    ]
    assert from_two.payload == {"level": "error", "text": "no uplink", "node": "two"}
    assert from_two.meta["status"] == from_two.payload
    from_two.payload["text"] = "edited"
    assert from_two.meta["status"]["text"] == "no uplink"  # payload and meta are not one object


async def test_status_node_sees_failed_starts_and_background_errors() -> None:
    flow = {
        "id": "s",
        "nodes": [
            {"id": "tick", "type": "inject", "cron": "0 6 * * *", "wires": ["sink"]},
            {"id": "sink", "type": "collect"},
            {"id": "watch", "type": "status", "wires": ["seen"]},
            {"id": "seen", "type": "collect"},
        ],
    }
    async with running(flow) as h:
        rt = h.engine.runtimes["tick"]

        async def boom() -> None:
            raise errors.ServiceUnavailable("broker down")

        rt.spawn(boom(), "boom")
        await until(lambda: len(h.received("seen")) == 1)
        [msg] = h.received("seen")
        assert msg.payload == {"level": "error", "text": "ServiceUnavailable: broker down", "node": "tick"}
        assert rt.counters.errors == 1
