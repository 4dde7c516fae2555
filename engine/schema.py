"""JSON Schemas: the flow envelope (structure), per-type config schemas, and the published
flow-file schema that ``klimaflow schema`` prints for editors such as VS Code.

Every schema here is derived from the node types' pydantic config models; nothing is
maintained by hand twice.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from engine.node import Connection, Node
from engine.registry import Registry

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$"
#: A value written as an environment reference is accepted wherever a number/bool/list is expected.
ENV_REF = {"type": "string", "pattern": r"\$\{[^}]+\}"}

_WIRE_TARGETS = {"type": "array", "items": {"type": "string", "minLength": 1}}

NODE_COMMON_PROPERTIES: dict[str, Any] = {
    "id": {
        "type": "string",
        "minLength": 1,
        "pattern": ID_PATTERN,
        "description": "Unique in the deployment.",
    },
    "type": {"type": "string", "minLength": 1, "description": "Node type, see `klimaflow nodes`."},
    "name": {"type": "string", "description": "Label shown in the editor."},
    "disabled": {
        "type": "boolean",
        "description": "A disabled node is not started; wires into it go nowhere.",
    },
    "info": {"type": "string", "description": "Free-form documentation for humans."},
    "inbox": {
        "type": "integer",
        "minimum": 1,
        "description": "Inbox capacity (back-pressure bound), default 1000.",
    },
    "wires": {
        "description": "Targets: a list (port `out`) or a mapping from named port to a list of node ids.",
        "anyOf": [
            _WIRE_TARGETS,
            {
                "type": "object",
                "additionalProperties": _WIRE_TARGETS,
                "propertyNames": {"pattern": ID_PATTERN},
            },
        ],
    },
}


def envelope_schema() -> dict[str, Any]:
    """The structure of a flow file, independent of node types (checked with jsonschema)."""
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "klimaflow flow",
        "type": "object",
        "required": ["id", "nodes"],
        "additionalProperties": False,
        "properties": {
            "$schema": {"type": "string"},
            "id": {"type": "string", "minLength": 1, "pattern": ID_PATTERN},
            "label": {"type": "string"},
            "description": {"type": "string"},
            "env": {
                "type": "object",
                "description": "Variables for ${NAME} references; they shadow the process environment.",
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
            "connections": {
                "type": "object",
                "description": "Named shared configuration (MQTT brokers, InfluxDB servers, ...).",
                "propertyNames": {"pattern": ID_PATTERN},
                "additionalProperties": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"type": "string", "minLength": 1}},
                },
            },
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "type"],
                    "properties": NODE_COMMON_PROPERTIES,
                },
            },
            "dashboards": {
                "type": "array",
                "description": "Grafana dashboards of the stored data (docs/grafana.md); checked in validation.",
                "items": {"type": "object"},
            },
        },
    }


def _allow_env_refs(schema: Any) -> Any:
    """Let every non-string value also be written as a ``${...}`` reference."""
    if isinstance(schema, list):
        return [_allow_env_refs(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _allow_env_refs(v) for k, v in schema.items()}
    t = out.get("type")
    if t is not None and t != "string" and t != "object" and t != ["string"]:
        keep = {k: v for k, v in out.items() if k not in ("title", "description", "default", "examples")}
        meta = {k: v for k, v in out.items() if k in ("title", "description", "default", "examples")}
        return {**meta, "anyOf": [keep, ENV_REF]}
    return out


def _hoist(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move a model schema's ``$defs`` into a shared dict under a prefix, rewriting ``$ref``s."""
    local = schema.pop("$defs", {})
    rename = {name: f"{prefix}.{name}" for name in local}

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                    out[k] = "#/$defs/" + rename.get(v[len("#/$defs/") :], v[len("#/$defs/") :])
                else:
                    out[k] = fix(v)
            return out
        if isinstance(node, list):
            return [fix(x) for x in node]
        return node

    for name, sub in local.items():
        defs[rename[name]] = fix(sub)
    return fix(schema)  # type: ignore[no-any-return]


def config_schema(cls: type[Node] | type[Connection]) -> dict[str, Any]:
    """The JSON Schema of a type's config (what the editor renders as a form)."""
    schema = cls.Config.model_json_schema()
    schema.setdefault("title", cls.type_name)
    return schema


def describe_node_type(cls: type[Node]) -> dict[str, Any]:
    """Everything the CLI, the docs and the editor palette show about a node type."""
    schema = config_schema(cls)
    doc = inspect.cleandoc(cls.__doc__ or "")
    return {
        "type": cls.type_name,
        "category": cls.category,
        "summary": cls.summary(),
        "description": doc,
        "inputs": cls.inputs,
        "outputs": list(cls.output_ports(None)),
        "dynamic_outputs": cls.output_ports.__func__ is not Node.output_ports.__func__,  # type: ignore[attr-defined]
        "color": cls.color,
        "icon": cls.icon,
        "config_schema": schema,
    }


def describe_connection_type(cls: type[Connection]) -> dict[str, Any]:
    return {
        "type": cls.type_name,
        "summary": cls.summary(),
        "description": inspect.cleandoc(cls.__doc__ or ""),
        "config_schema": config_schema(cls),
    }


def flow_file_schema(registry: Registry) -> dict[str, Any]:
    """The complete flow-file schema: envelope plus every registered node/connection config."""
    schema = envelope_schema()
    schema["$id"] = "https://klimaflow.invalid/schema/flow.json"
    defs: dict[str, Any] = {}
    node_rules: list[dict[str, Any]] = []
    for name in sorted(registry.nodes):
        cls = registry.nodes[name]
        cfg = _hoist(copy.deepcopy(cls.Config.model_json_schema()), f"node.{name}", defs)
        props = {**NODE_COMMON_PROPERTIES, **_allow_env_refs(cfg.get("properties", {}))}
        then: dict[str, Any] = {"properties": props, "additionalProperties": False}
        if cfg.get("required"):
            then["required"] = ["id", "type", *cfg["required"]]
        node_rules.append(
            {"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then}
        )
    type_names = sorted(registry.nodes)
    node_schema = schema["properties"]["nodes"]["items"]
    node_schema["properties"] = {**NODE_COMMON_PROPERTIES, "type": {"type": "string", "enum": type_names}}
    node_schema["allOf"] = node_rules
    conn_rules: list[dict[str, Any]] = []
    for name in sorted(registry.connections):
        ccls = registry.connections[name]
        cfg = _hoist(copy.deepcopy(ccls.Config.model_json_schema()), f"connection.{name}", defs)
        props = {"type": {"const": name}, **_allow_env_refs(cfg.get("properties", {}))}
        then = {"properties": props, "additionalProperties": False}
        if cfg.get("required"):
            then["required"] = ["type", *cfg["required"]]
        conn_rules.append({"if": {"properties": {"type": {"const": name}}}, "then": then})
    conn_schema = schema["properties"]["connections"]["additionalProperties"]
    if registry.connections:
        conn_schema["properties"]["type"] = {"type": "string", "enum": sorted(registry.connections)}
        conn_schema["allOf"] = conn_rules
    from grafana_provisioning.declared import dashboard_schema  # the `dashboards` section's model

    schema["properties"]["dashboards"]["items"] = _hoist(dashboard_schema(), "dashboards", defs)
    schema["$defs"] = defs
    return schema
