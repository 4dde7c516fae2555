"""Test kit: run a flow document in a real Engine and look at what arrived where.

``collect`` is a test-only node type (registered only in :func:`test_registry`) that
records every message it receives, so tests assert on real outputs of real flows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from engine.errors import FlowValidationError
from engine.message import Delivery, Message
from engine.node import Node
from engine.registry import Registry, default_registry
from engine.runtime import Engine
from engine.types import NodeConfig
from engine.validation import Issue, ValidatedDeployment, load_documents, validate_deployment


class CollectConfig(NodeConfig):
    """No options."""


class CollectNode(Node):
    """Test sink: remembers every message it receives."""

    type_name = "collect"
    Config = CollectConfig
    outputs = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[Message] = []

    async def on_message(self, msg: Message) -> None:
        self.messages.append(msg)


def test_registry() -> Registry:
    reg = default_registry().copy()
    reg.add_node(CollectNode)
    return reg


test_registry.__test__ = False  # type: ignore[attr-defined]


def validate_doc(
    doc: Mapping[str, Any] | str,
    *,
    environ: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    name: str = "flow.yaml",
) -> tuple[ValidatedDeployment | None, list[Issue]]:
    """Validate one flow document (dict or YAML/JSON text) exactly as the CLI would."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    if not isinstance(doc, str) and name.endswith(".yaml"):
        name = name[:-5] + ".json"
    deployment, issues = load_documents([(name, text)])
    return validate_deployment(
        deployment, registry or test_registry(), environ=environ or {}, prior_issues=issues
    )


class FlowHarness:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def send(
        self,
        node_id: str,
        payload: Any = None,
        topic: str | None = None,
        *,
        delivery: Delivery | None = None,
        **meta: Any,
    ) -> Message:
        """Put a message into a node's inbox, as if an upstream node had emitted it.

        With ``delivery`` the message carries it and holds one reference, exactly as a
        source's message does after ``emit`` (the test keeps its own initial reference).
        """
        deliveries = (delivery,) if delivery is not None else ()
        for d in deliveries:
            d.retain()
        msg = Message(payload, topic, meta=dict(meta), deliveries=deliveries)
        await self.engine.runtimes[node_id].put(msg)
        return msg

    def received(self, collector_id: str) -> list[Message]:
        node = self.engine.node(collector_id)
        assert isinstance(node, CollectNode), f"{collector_id} is not a collect node"
        return node.messages

    def payloads(self, collector_id: str) -> list[Any]:
        return [m.payload for m in self.received(collector_id)]

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until every inbox is empty and no node is busy (timers of delay/batch may still hold work)."""
        assert await self.engine.wait_idle(timeout), "flow did not become idle"


@asynccontextmanager
async def run_flow(
    doc: Mapping[str, Any] | str,
    *,
    environ: Mapping[str, str] | None = None,
    data_dir: str | Path | None = None,
    drain_timeout: float = 5.0,
) -> AsyncIterator[FlowHarness]:
    """Validate and start ``doc``; stops the engine (with drain) when the block ends."""
    validated, issues = validate_doc(doc, environ=environ)
    if validated is None:
        raise FlowValidationError(issues)
    engine = Engine(validated, data_dir=data_dir or "/tmp/klimaflow-test-data", drain_timeout=drain_timeout)
    await engine.start()
    try:
        yield FlowHarness(engine)
    finally:
        await engine.stop()
