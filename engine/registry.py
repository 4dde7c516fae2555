"""Discovery of node and connection types through Python entry points.

Built-in types are declared in klimaflow's own ``pyproject.toml`` under the entry-point
groups ``klimaflow.nodes`` and ``klimaflow.connections``; a third-party package adds
types by declaring entry points in the same groups and being installed. A type that
fails to import is reported, not fatal: the rest of the palette keeps working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from engine.node import Connection, Node

NODE_GROUP = "klimaflow.nodes"
CONNECTION_GROUP = "klimaflow.connections"

log = logging.getLogger("klimaflow.registry")


@dataclass
class Registry:
    """Node and connection types by name, plus the load problems met while discovering them."""

    nodes: dict[str, type[Node]] = field(default_factory=dict)
    connections: dict[str, type[Connection]] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)

    def add_node(self, cls: type[Node], name: str | None = None) -> type[Node]:
        type_name = name or cls.type_name
        if not type_name:
            raise ValueError(f"{cls.__qualname__} has no type_name")
        self.nodes[type_name] = cls
        return cls

    def add_connection(self, cls: type[Connection], name: str | None = None) -> type[Connection]:
        type_name = name or cls.type_name
        if not type_name:
            raise ValueError(f"{cls.__qualname__} has no type_name")
        self.connections[type_name] = cls
        return cls

    def copy(self) -> Registry:
        return Registry(dict(self.nodes), dict(self.connections), dict(self.load_errors))

    @classmethod
    def from_entry_points(cls) -> Registry:
        reg = cls()
        for ep in entry_points(group=NODE_GROUP):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in must not take the engine down
                reg.load_errors[f"node:{ep.name}"] = f"{type(exc).__name__}: {exc}"
                log.warning("node type %r (%s) could not be loaded: %s", ep.name, ep.value, exc)
                continue
            if isinstance(obj, type) and issubclass(obj, Node):
                reg.add_node(obj, ep.name)
            else:
                reg.load_errors[f"node:{ep.name}"] = f"{ep.value} is not a Node subclass"
        for ep in entry_points(group=CONNECTION_GROUP):
            try:
                obj = ep.load()
            except Exception as exc:
                reg.load_errors[f"connection:{ep.name}"] = f"{type(exc).__name__}: {exc}"
                log.warning("connection type %r (%s) could not be loaded: %s", ep.name, ep.value, exc)
                continue
            if isinstance(obj, type) and issubclass(obj, Connection):
                reg.add_connection(obj, ep.name)
            else:
                reg.load_errors[f"connection:{ep.name}"] = f"{ep.value} is not a Connection subclass"
        return reg


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry from installed entry points (discovered once)."""
    global _default
    if _default is None:
        _default = Registry.from_entry_points()
    return _default
