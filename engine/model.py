"""The in-memory model of a deployment: flows, nodes, connections, each with its source location.

These are plain immutable records built by :mod:`engine.loader` from a YAML or JSON
document. They keep the *raw* (unresolved) config as written, so the editor API can
echo a flow without leaking secrets; :mod:`engine.validation` produces the resolved,
typed configs next to them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Keys every node has; everything else in a node's mapping is its type-specific config.
NODE_COMMON_KEYS = frozenset({"id", "type", "name", "disabled", "wires", "inbox", "info"})
DEFAULT_PORT = "out"
ERROR_PORT = "error"
DEFAULT_INBOX = 1000


@dataclass(frozen=True, slots=True)
class SourceMap:
    """Line numbers (1-based) of every key path in a document, e.g. ``("nodes", 2, "topic")``."""

    file: str
    lines: Mapping[tuple[Any, ...], int] = field(default_factory=dict)

    def line(self, path: tuple[Any, ...]) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: str
    type: str
    flow_id: str
    index: int
    name: str | None = None
    disabled: bool = False
    wires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    inbox: int = DEFAULT_INBOX
    info: str | None = None
    raw_config: Mapping[str, Any] = field(default_factory=dict)
    file: str = ""
    line: int | None = None

    @property
    def path(self) -> tuple[Any, ...]:
        return ("nodes", self.index)

    def targets(self) -> list[tuple[str, str]]:
        """(port, target id) pairs in declaration order."""
        return [(port, t) for port, ts in self.wires.items() for t in ts]


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    name: str
    type: str
    flow_id: str
    raw_config: Mapping[str, Any] = field(default_factory=dict)
    file: str = ""
    line: int | None = None


@dataclass(frozen=True, slots=True)
class FlowSpec:
    id: str
    label: str
    file: str
    description: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    connections: Mapping[str, ConnectionSpec] = field(default_factory=dict)
    nodes: tuple[NodeSpec, ...] = ()
    source: SourceMap = field(default_factory=lambda: SourceMap(""))
    document: Mapping[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        return content_hash(self.document)

    @property
    def dashboards(self) -> tuple[Mapping[str, Any], ...]:
        """The ``dashboards`` section as written (checked by validation, built by grafana_provisioning)."""
        raw = self.document.get("dashboards")
        return tuple(d for d in raw if isinstance(d, Mapping)) if isinstance(raw, list) else ()


@dataclass(frozen=True, slots=True)
class Deployment:
    """Every flow of one deployment (usually one directory of flow files)."""

    flows: tuple[FlowSpec, ...] = ()

    def nodes(self) -> dict[str, NodeSpec]:
        out: dict[str, NodeSpec] = {}
        for flow in self.flows:
            for node in flow.nodes:
                out.setdefault(node.id, node)
        return out

    def connections(self) -> dict[str, ConnectionSpec]:
        out: dict[str, ConnectionSpec] = {}
        for flow in self.flows:
            for name, conn in flow.connections.items():
                out.setdefault(name, conn)
        return out

    def flow(self, flow_id: str) -> FlowSpec | None:
        return next((f for f in self.flows if f.id == flow_id), None)

    @property
    def revision(self) -> str:
        """Content hash of the whole deployment: what the API's 409 conflict check compares."""
        return content_hash(sorted((f.id, f.document) for f in self.flows))


def content_hash(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:16]
