"""Batch hand-off between nodes: on_batch / emit_many keep order, isolation, errors and acks."""

from __future__ import annotations

from typing import Any

from engine.errors import DecodeError
from engine.message import Message
from engine.node import BATCH_LIMIT, Node
from engine.registry import Registry
from tests.engine.test_runtime import FastSource, PassConfig, PassNode, SlowSink, registry, running, until


class Doubler(Node):
    """Test batch node: doubles numbers, routes negative ones to its error port itself."""

    type_name = "doubler"
    Config = PassConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    async def on_batch(self, msgs: list[Message]) -> None:
        self.batches.append(len(msgs))
        out = []
        for msg in msgs:
            if isinstance(msg.payload, int) and msg.payload % 100 == 99:
                await self.emit_error(msg, DecodeError(f"cannot double {msg.payload}"))
                continue
            msg.payload = msg.payload * 2
            out.append(msg)
        await self.emit_many(out)


class Exploding(Node):
    """Test batch node whose on_batch raises after emitting nothing."""

    type_name = "exploding"
    Config = PassConfig

    async def on_batch(self, msgs: list[Message]) -> None:
        raise ValueError(f"batch of {len(msgs)} failed")


def batch_registry() -> Registry:
    reg = registry()
    reg.add_node(Doubler)
    reg.add_node(Exploding)
    return reg


def flow(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"id": "batches", "nodes": list(nodes)}


async def test_a_flood_reaches_a_batch_node_in_batches_in_order_and_every_delivery_settles(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr("tests.engine.test_runtime.registry", batch_registry)
    doc = flow(
        {"id": "src", "type": "fast-source", "count": 3000, "wires": ["double"]},
        {"id": "double", "type": "doubler", "wires": {"out": ["sink", "other"], "error": ["errors"]}},
        {"id": "sink", "type": "slow-sink", "delay": 0.0},
        {"id": "other", "type": "slow-sink", "delay": 0.0},
        {"id": "errors", "type": "slow-sink", "delay": 0.0},
    )
    async with running(doc) as h:
        src: FastSource = h.engine.node("src")  # type: ignore[assignment]
        sink: SlowSink = h.engine.node("sink")  # type: ignore[assignment]
        other: SlowSink = h.engine.node("other")  # type: ignore[assignment]
        errors: SlowSink = h.engine.node("errors")  # type: ignore[assignment]
        doubler: Doubler = h.engine.node("double")  # type: ignore[assignment]
        await until(lambda: len(src.settled) == 3000, timeout=10)
        expected = [2 * i for i in range(3000) if i % 100 != 99]
        assert sink.done == expected
        assert other.done == expected  # the fan-out copy, in the same order
        assert errors.done == [i for i in range(3000) if i % 100 == 99]
        assert sum(doubler.batches) == 3000
        assert max(doubler.batches) > 1  # the flood was handed over in batches ...
        assert max(doubler.batches) <= BATCH_LIMIT  # ... of bounded size
        assert src.settled == [True] * 3000
        counters = h.engine.runtimes["double"].counters
        assert (counters.received, counters.errors) == (3000, 30)


async def test_a_fan_out_of_a_batch_gives_each_branch_its_own_copy(monkeypatch: Any) -> None:
    monkeypatch.setattr("tests.engine.test_runtime.registry", batch_registry)
    doc = flow(
        {"id": "src", "type": "fast-source", "count": 50, "wires": ["double"]},
        {"id": "double", "type": "doubler", "wires": ["a", "b"]},
        {"id": "a", "type": "doubler", "wires": ["sink_a"]},
        {"id": "b", "type": "pass", "wires": ["sink_b"]},
        {"id": "sink_a", "type": "slow-sink", "delay": 0.0},
        {"id": "sink_b", "type": "slow-sink", "delay": 0.0},
    )
    async with running(doc) as h:
        src: FastSource = h.engine.node("src")  # type: ignore[assignment]
        await until(lambda: len(src.settled) == 50)
        sink_a: SlowSink = h.engine.node("sink_a")  # type: ignore[assignment]
        sink_b: SlowSink = h.engine.node("sink_b")  # type: ignore[assignment]
        assert sink_a.done == [4 * i for i in range(50)]
        assert sink_b.done == [2 * i for i in range(50)]  # b's copy was not doubled again by a


async def test_an_exception_escaping_on_batch_is_routed_for_every_message(monkeypatch: Any) -> None:
    monkeypatch.setattr("tests.engine.test_runtime.registry", batch_registry)
    doc = flow(
        {"id": "src", "type": "fast-source", "count": 200, "wires": ["boom"]},
        {"id": "boom", "type": "exploding", "wires": {"error": ["errors"]}},
        {"id": "errors", "type": "slow-sink", "delay": 0.0},
    )
    async with running(doc) as h:
        src: FastSource = h.engine.node("src")  # type: ignore[assignment]
        errors: SlowSink = h.engine.node("errors")  # type: ignore[assignment]
        await until(lambda: len(src.settled) == 200)
        assert errors.done == list(range(200))
        assert h.engine.runtimes["boom"].counters.errors == 200
        assert h.engine.unhandled_errors == 0


def test_only_nodes_that_override_on_batch_are_batched() -> None:
    assert Doubler.on_batch is not Node.on_batch
    assert PassNode.on_batch is Node.on_batch
