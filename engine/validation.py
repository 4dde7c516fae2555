"""Validation of a whole deployment: structure, node configs, connections, and the graph.

One function, :func:`validate_deployment`, is the gate every entry point goes through
(``klimaflow validate``, ``klimaflow run``, file reload, the editor API), so a flow that
passes here is a flow the runtime can start. Every problem is an :class:`Issue` that
knows its file, line, node id and field, printed as ``FILE:LINE: node ID: FIELD: message``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import networkx as nx
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from engine.envsubst import has_reference, make_lookup, resolve
from engine.errors import FlowLoadError, FlowValidationError, SecretError
from engine.loader import add_import_paths, build_flow, flow_files, parse_text, read_document
from engine.model import ERROR_PORT, ConnectionSpec, Deployment, FlowSpec, NodeSpec, SourceMap
from engine.node import Node
from engine.registry import Registry, default_registry
from engine.schema import envelope_schema
from engine.types import CONNECTION_MARKER, ConnectionConfig, NodeConfig

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding of validation, located as precisely as the source allows."""

    severity: Severity
    message: str
    code: str
    file: str | None = None
    line: int | None = None
    flow: str | None = None
    node: str | None = None
    connection: str | None = None
    field: str | None = None

    def format(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.node:
            parts.append(f"node {self.node}")
        elif self.connection:
            parts.append(f"connection {self.connection}")
        elif self.flow and not self.file:
            parts.append(f"flow {self.flow}")
        if self.field:
            parts.append(self.field)
        prefix = "warning: " if self.severity == "warning" else ""
        return ": ".join([*parts, prefix + self.message])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidatedDeployment:
    """A deployment that passed validation, with typed configs ready for the runtime."""

    deployment: Deployment
    registry: Registry
    node_classes: dict[str, type[Node]] = field(default_factory=dict)
    node_configs: dict[str, NodeConfig] = field(default_factory=dict)
    connection_configs: dict[str, ConnectionConfig] = field(default_factory=dict)
    graph: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    issues: list[Issue] = field(default_factory=list)

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def revision(self) -> str:
        return self.deployment.revision


def _field_name(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc)


def _connection_fields(model: type[BaseModel]) -> dict[str, str]:
    """Config fields that name a connection, with the connection type they need."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get(CONNECTION_MARKER), str):
            out[info.alias or name] = str(extra[CONNECTION_MARKER])
    return out


def _secret_fields(model: type[BaseModel]) -> set[str]:
    """Top-level fields whose schema marks them as secrets (pydantic ``SecretStr``)."""
    try:
        props = model.model_json_schema().get("properties", {})
    except Exception:  # a model without a JSON Schema has no marked secrets
        return set()
    out: set[str] = set()
    for name, sub in props.items():
        candidates = [sub, *sub.get("anyOf", [])]
        if any(
            isinstance(c, dict) and (c.get("writeOnly") or c.get("format") == "password") for c in candidates
        ):
            out.add(name)
    return out


class _Collector:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, severity: Severity, code: str, message: str, **where: Any) -> None:
        self.issues.append(Issue(severity, message, code, **where))

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


_TOP_LEVEL_KEYS = "$schema, id, label, description, env, connections, nodes, dashboards"
_WIRES_SHAPE = "wires must be a list of node ids, or a mapping from port name to a list of node ids"


def _structural(data: Any, source: SourceMap, out: _Collector) -> None:
    schema = envelope_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        node_id = None
        fld: str | None = None
        if len(path) >= 2 and path[0] == "nodes" and isinstance(path[1], int):
            item = data["nodes"][path[1]] if isinstance(data, dict) else None
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                node_id = item["id"]
            fld = _field_name(path[2:]) or None
            if node_id is None:
                fld = _field_name(path)
        elif path:
            fld = _field_name(path)
        message = err.message
        if err.validator == "additionalProperties" and not path and isinstance(err.instance, dict):
            allowed = set(schema["properties"])
            for key in err.instance:
                if key not in allowed:
                    out.add(
                        "error",
                        "structure",
                        f"unknown top-level key {key!r} (allowed: {_TOP_LEVEL_KEYS})",
                        file=source.file,
                        line=source.line((key,)),
                        field=None,
                    )
            continue
        if len(path) >= 3 and path[0] == "nodes" and path[2] == "wires":
            message = f"{_WIRES_SHAPE}; got {err.instance!r:.60}"
        out.add(
            "error",
            "structure",
            message,
            file=source.file,
            line=source.line(path),
            node=node_id,
            field=fld if node_id is not None or fld else None,
        )


def load_deployment(paths: Iterable[Path | str]) -> tuple[Deployment, list[Issue]]:
    """Read and structurally check flow files; unreadable files become issues, not exceptions."""
    out = _Collector()
    flows: list[FlowSpec] = []
    files = flow_files(paths)
    add_import_paths(files)
    if not files:
        out.add("error", "no-flows", "no flow files found (expected *.yaml, *.yml or *.json)")
    for f in files:
        try:
            data, source = read_document(f)
        except FlowLoadError as exc:
            _load_issue(exc, out)
            continue
        flow = _check_document(data, source, out)
        if flow is not None:
            flows.append(flow)
    return Deployment(tuple(flows)), out.issues


def load_documents(documents: Iterable[tuple[str, str]]) -> tuple[Deployment, list[Issue]]:
    """Like :func:`load_deployment` for in-memory ``(name, text)`` pairs (the editor API)."""
    out = _Collector()
    flows: list[FlowSpec] = []
    for name, text in documents:
        try:
            data, source = parse_text(text, name)
        except FlowLoadError as exc:
            _load_issue(exc, out)
            continue
        flow = _check_document(data, source, out)
        if flow is not None:
            flows.append(flow)
    return Deployment(tuple(flows)), out.issues


def _load_issue(exc: FlowLoadError, out: _Collector) -> None:
    """A load failure as an issue; the file and line move from the text into their fields."""
    text = str(exc)
    if exc.file and exc.line:
        text = text.removeprefix(f"{exc.file}:{exc.line}: ")
    elif exc.file:
        text = text.removeprefix(f"{exc.file}: ")
    out.add("error", "load", text, file=exc.file, line=exc.line)


def _check_document(data: Any, source: SourceMap, out: _Collector) -> FlowSpec | None:
    if not isinstance(data, dict):
        out.add(
            "error",
            "structure",
            "a flow file must contain a mapping with id and nodes",
            file=source.file,
            line=1,
        )
        return None
    _structural(data, source, out)
    return build_flow(data, source)


def validate_deployment(
    deployment: Deployment,
    registry: Registry | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prior_issues: Iterable[Issue] = (),
) -> tuple[ValidatedDeployment | None, list[Issue]]:
    """Check everything; returns the validated deployment (None if any error) and all issues."""
    reg = registry or default_registry()
    out = _Collector()
    out.issues.extend(prior_issues)
    env = os.environ if environ is None else environ
    result = ValidatedDeployment(deployment=deployment, registry=reg)

    # -- flows and ids ---------------------------------------------------------------
    flow_seen: dict[str, FlowSpec] = {}
    for flow in deployment.flows:
        if flow.id in flow_seen:
            out.add(
                "error",
                "duplicate-flow",
                f"duplicate flow id {flow.id!r} (also in {flow_seen[flow.id].file})",
                file=flow.file,
                line=flow.source.line(("id",)),
                flow=flow.id,
            )
        else:
            flow_seen[flow.id] = flow

    node_seen: dict[str, NodeSpec] = {}
    for flow in deployment.flows:
        for node in flow.nodes:
            if node.id in node_seen:
                other = node_seen[node.id]
                out.add(
                    "error",
                    "duplicate-id",
                    f"duplicate node id (first defined at {other.file}:{other.line})",
                    file=node.file,
                    line=node.line,
                    flow=flow.id,
                    node=node.id,
                    field="id",
                )
            else:
                node_seen[node.id] = node

    conn_seen: dict[str, ConnectionSpec] = {}
    for flow in deployment.flows:
        for conn in flow.connections.values():
            if conn.name in conn_seen:
                other_c = conn_seen[conn.name]
                out.add(
                    "error",
                    "duplicate-connection",
                    f"duplicate connection name (first defined at {other_c.file}:{other_c.line})",
                    file=conn.file,
                    line=conn.line,
                    flow=flow.id,
                    connection=conn.name,
                )
            else:
                conn_seen[conn.name] = conn

    # -- connections -----------------------------------------------------------------
    for flow in deployment.flows:
        lookup = make_lookup(flow.env, env)
        base_dir = Path(flow.file).parent if flow.file else None
        for conn in flow.connections.values():
            ccls = reg.connections.get(conn.type)
            where = {"file": conn.file, "flow": flow.id, "connection": conn.name}
            if ccls is None:
                hint = difflib.get_close_matches(conn.type, list(reg.connections), n=1)
                extra = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f" (known: {', '.join(sorted(reg.connections)) or 'none'})"
                )
                out.add(
                    "error",
                    "unknown-connection-type",
                    f"unknown connection type {conn.type!r}{extra}",
                    line=flow.source.line(("connections", conn.name, "type")),
                    field="type",
                    **where,
                )
                continue
            _check_literal_secrets(
                ccls.Config, conn.raw_config, flow.source, ("connections", conn.name), out, where
            )
            cfg = _resolve_and_validate(
                ccls.Config,
                conn.raw_config,
                lookup,
                base_dir,
                flow.source,
                ("connections", conn.name),
                out,
                where,
            )
            if cfg is not None and conn.name not in result.connection_configs:
                result.connection_configs[conn.name] = cfg  # type: ignore[assignment]

    # -- nodes -----------------------------------------------------------------------
    all_nodes = deployment.nodes()
    known_classes: dict[str, type[Node]] = {}
    graph = nx.MultiDiGraph()
    for flow in deployment.flows:
        lookup = make_lookup(flow.env, env)
        base_dir = Path(flow.file).parent if flow.file else None
        for node in flow.nodes:
            if all_nodes.get(node.id) is not node:
                continue  # duplicate, already reported
            where = {"file": node.file, "flow": flow.id, "node": node.id}
            cls = reg.nodes.get(node.type)
            if cls is None:
                hint = difflib.get_close_matches(node.type, list(reg.nodes), n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else " (`klimaflow nodes` lists the types)"
                out.add(
                    "error" if not node.disabled else "warning",
                    "unknown-type",
                    f"unknown node type {node.type!r}{extra}",
                    line=flow.source.line((*node.path, "type")),
                    field="type",
                    **where,
                )
                continue
            if node.disabled:
                continue
            known_classes[node.id] = cls
            # In the graph even if its config fails, so the graph checks judge the flow as written
            # (no "unreachable" noise downstream of a node that merely has a config error).
            graph.add_node(node.id, flow=flow.id, type=node.type, source=cls.is_source())
            _check_literal_secrets(cls.Config, node.raw_config, flow.source, node.path, out, where)
            cfg = _resolve_and_validate(
                cls.Config, node.raw_config, lookup, base_dir, flow.source, node.path, out, where
            )
            if cfg is None:
                continue
            result.node_classes[node.id] = cls
            result.node_configs[node.id] = cfg  # type: ignore[assignment]
            # connection references
            for fld, ctype in _connection_fields(cls.Config).items():
                ref = getattr(cfg, fld, None) if hasattr(cfg, fld) else node.raw_config.get(fld)
                if ref is None:
                    continue
                ref_s = str(ref)
                conn_spec = conn_seen.get(ref_s)
                line = flow.source.line((*node.path, fld))
                if conn_spec is None:
                    names = [c.name for c in conn_seen.values() if c.type == ctype]
                    hint = difflib.get_close_matches(ref_s, names, n=1)
                    extra = (
                        f"; did you mean {hint[0]!r}?"
                        if hint
                        else (
                            f" (defined {ctype} connections: {', '.join(names)})"
                            if names
                            else f" (no {ctype} connection is defined)"
                        )
                    )
                    out.add(
                        "error",
                        "unknown-connection",
                        f"unknown connection {ref_s!r}{extra}",
                        line=line,
                        field=fld,
                        **where,
                    )
                elif conn_spec.type != ctype:
                    out.add(
                        "error",
                        "connection-type",
                        f"connection {ref_s!r} is of type {conn_spec.type!r}, expected {ctype!r}",
                        line=line,
                        field=fld,
                        **where,
                    )

    # -- wires -----------------------------------------------------------------------
    for flow in deployment.flows:
        for node in flow.nodes:
            if all_nodes.get(node.id) is not node or node.id not in known_classes:
                continue
            cls = known_classes[node.id]
            # Config-defined ports (switch) cannot be known when the config is invalid.
            dynamic = cls.output_ports.__func__ is not Node.output_ports.__func__  # type: ignore[attr-defined]
            ports_known = node.id in result.node_configs or not dynamic
            ports = (*cls.output_ports(result.node_configs.get(node.id)), ERROR_PORT)
            for port, targets in node.wires.items():
                wires_doc = flow.document["nodes"][node.index].get("wires")
                wire_path = (
                    (*node.path, "wires", port) if isinstance(wires_doc, dict) else (*node.path, "wires")
                )
                line = flow.source.line(wire_path)
                if port not in ports and ports_known:
                    out.add(
                        "error",
                        "unknown-port",
                        f"node type {node.type!r} has no output port {port!r} (ports: {', '.join(ports)})",
                        line=line,
                        file=node.file,
                        flow=flow.id,
                        node=node.id,
                        field=f"wires.{port}",
                    )
                    continue
                raw_targets = wires_doc.get(port) if isinstance(wires_doc, dict) else wires_doc
                for target in targets:
                    line = _target_line(flow.source, wire_path, raw_targets, target) or line
                    tgt = all_nodes.get(target)
                    if tgt is None:
                        hint = difflib.get_close_matches(target, list(all_nodes), n=1)
                        extra = f"; did you mean {hint[0]!r}?" if hint else ""
                        out.add(
                            "error",
                            "unknown-target",
                            f"wire to unknown node {target!r}{extra}",
                            line=line,
                            file=node.file,
                            flow=flow.id,
                            node=node.id,
                            field=f"wires.{port}",
                        )
                        continue
                    if tgt.disabled or target not in known_classes:
                        continue
                    tcls = known_classes[target]
                    if tcls.inputs == 0:
                        out.add(
                            "error",
                            "target-has-no-input",
                            f"node {target!r} ({tgt.type}) has no input and cannot be wired to",
                            line=line,
                            file=node.file,
                            flow=flow.id,
                            node=node.id,
                            field=f"wires.{port}",
                        )
                        continue
                    graph.add_edge(node.id, target, port=port)

    _check_scopes(deployment, result, out)

    # -- graph checks ------------------------------------------------------------------
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        # Start the printed cycle at its first node in declaration order, so it is stable.
        order = {nid: i for i, nid in enumerate(all_nodes)}
        members = [edge[0] for edge in cycle]
        start = min(range(len(members)), key=lambda i: order.get(members[i], 0))
        members = members[start:] + members[:start]
        path = [*members, members[0]]
        first = all_nodes[path[0]]
        out.add(
            "error",
            "cycle",
            f"cycle: {' -> '.join(path)} (flows must be acyclic)",
            file=first.file,
            line=first.line,
            flow=first.flow_id,
            node=first.id,
            field="wires",
        )

    sources = [n for n, d in graph.nodes(data=True) if d.get("source")]
    reachable: set[str] = set(sources)
    for s in sources:
        reachable |= nx.descendants(graph, s)
    for nid in graph.nodes:
        spec = all_nodes[nid]
        if nid not in reachable:
            out.add(
                "warning",
                "unreachable",
                "not reachable from any source (no inject, mqtt-in, catch, ... feeds it)",
                file=spec.file,
                line=spec.line,
                flow=spec.flow_id,
                node=nid,
            )
        elif graph.nodes[nid].get("source") and not _wired(spec, all_nodes):
            out.add(
                "warning",
                "dead-end-source",
                "source whose output goes nowhere",
                file=spec.file,
                line=spec.line,
                flow=spec.flow_id,
                node=nid,
                field="wires",
            )

    result.graph = graph
    _check_dashboards(deployment, out)
    if not out.has_errors:
        from grafana_provisioning.declared import check_declared  # needs the validated graph and configs

        out.issues.extend(check_declared(result))
    result.issues = out.issues
    if out.has_errors:
        return None, out.issues
    return result, out.issues


def _check_scopes(deployment: Deployment, result: ValidatedDeployment, out: _Collector) -> None:
    """``scope`` of catch and status nodes: each entry must name another node of the same flow.

    At runtime a catch node only receives errors of nodes in its own flow and never its own,
    and a status node likewise (see ``Engine.catchers`` and ``StatusNode._on_event``), so any
    other entry would silently never match.
    """
    from nodes.catch import CatchNode, StatusNode

    flow_of: dict[str, str] = {}
    for flow in deployment.flows:
        for node in flow.nodes:
            flow_of.setdefault(node.id, flow.id)
    for flow in deployment.flows:
        ids = [n.id for n in flow.nodes]
        for node in flow.nodes:
            cls = result.node_classes.get(node.id)
            cfg = result.node_configs.get(node.id)
            if cls is None or cfg is None or not issubclass(cls, CatchNode | StatusNode):
                continue
            what = "its own errors" if issubclass(cls, CatchNode) else "its own status"
            for i, target in enumerate(getattr(cfg, "scope", None) or ()):
                if target == node.id:
                    message = f"scope names this node itself; a {node.type} node never sees {what}"
                    code = "self-scope"
                elif target not in ids:
                    code = "unknown-scope"
                    message = f"scope names node {target!r}, which is not in this flow"
                    if target in flow_of:
                        message += f" (it is in flow {flow_of[target]!r}; {node.type} sees only its own flow)"
                    else:
                        hint = difflib.get_close_matches(target, [x for x in ids if x != node.id], n=1)
                        message += f"; did you mean {hint[0]!r}?" if hint else ""
                else:
                    continue
                out.add(
                    "error",
                    code,
                    message,
                    file=node.file,
                    line=flow.source.line((*node.path, "scope", i)),
                    flow=flow.id,
                    node=node.id,
                    field=f"scope.{i}",
                )


def _check_dashboards(deployment: Deployment, out: _Collector) -> None:
    """Each entry of a flow's ``dashboards`` section against its model (values taken as written)."""
    from grafana_provisioning.declared import DashboardDecl

    for flow in deployment.flows:
        for i, item in enumerate(flow.dashboards):
            try:
                DashboardDecl.model_validate(item)
            except PydanticValidationError as exc:
                for err in exc.errors(include_url=False):
                    # A ValueError may name the part of the value it is about (``loc``).
                    part = getattr((err.get("ctx") or {}).get("error"), "loc", ())
                    path = ("dashboards", i, *err.get("loc", ()), *part)
                    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
                    if err.get("type") == "extra_forbidden":
                        msg = "unknown key"
                    out.add(
                        "error",
                        "dashboard",
                        msg,
                        file=flow.file,
                        line=flow.source.line(path),
                        flow=flow.id,
                        field=_field_name(path),
                    )


def _wired(spec: NodeSpec, all_nodes: Mapping[str, NodeSpec]) -> bool:
    """Whether any wire of ``spec`` leads to an existing, enabled node (of any type)."""
    return any(t in all_nodes and not all_nodes[t].disabled for _port, t in spec.targets())


def _target_line(source: SourceMap, wire_path: tuple[Any, ...], raw: Any, target: str) -> int | None:
    """Line of ``target`` inside a wire list (one target per line in block-style YAML)."""
    if not isinstance(raw, list):
        return None
    for i, value in enumerate(raw):
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value) == target:
            return source.lines.get((*wire_path, i))
    return None


def _check_literal_secrets(
    model: type[BaseModel],
    raw: Mapping[str, Any],
    source: SourceMap,
    path: tuple[Any, ...],
    out: _Collector,
    where: dict[str, Any],
) -> None:
    for name in _secret_fields(model):
        value = raw.get(name)
        if isinstance(value, str) and value and not has_reference(value):
            out.add(
                "error",
                "literal-secret",
                "secrets must not be written into flow files; use ${ENV_VAR} or ${file:/run/secrets/NAME}",
                line=source.line((*path, name)),
                field=name,
                **where,
            )


def _resolve_and_validate(
    model: type[BaseModel],
    raw: Mapping[str, Any],
    lookup: Any,
    base_dir: Path | None,
    source: SourceMap,
    path: tuple[Any, ...],
    out: _Collector,
    where: dict[str, Any],
) -> BaseModel | None:
    failed = False

    def on_error(p: tuple[Any, ...], exc: SecretError) -> None:
        nonlocal failed
        failed = True
        out.add("error", "env", str(exc), line=source.line((*path, *p)), field=_field_name(p), **where)

    resolved = resolve(dict(raw), lookup, base_dir, on_error)
    if failed:
        return None
    try:
        return model.model_validate(resolved)
    except PydanticValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err.get("loc", ()))
            msg = (
                err.get("msg", "invalid value")
                .removeprefix("Value error, ")
                .removeprefix("Assertion failed, ")
            )
            if err.get("type") == "extra_forbidden":
                names = sorted(f.alias or n for n, f in model.model_fields.items())
                hint = difflib.get_close_matches(str(loc[-1]), names, n=1) if loc else []
                did = f"; did you mean {hint[0]!r}?" if hint else ""
                msg = f"unknown field{did} (allowed: {', '.join(names) or 'none'})"
            out.add(
                "error",
                "config",
                msg,
                line=source.line((*path, *loc)),
                field=_field_name(loc) or None,
                **where,
            )
        return None
    except Exception as exc:  # a validator raising TypeError etc.: still a config problem
        out.add(
            "error",
            "config",
            f"invalid config: {type(exc).__name__}: {exc}",
            line=source.line(path),
            **where,
        )
        return None


def load_and_validate(
    paths: Iterable[Path | str], registry: Registry | None = None, *, environ: Mapping[str, str] | None = None
) -> ValidatedDeployment:
    """Load and validate; raises :class:`FlowValidationError` listing every problem."""
    deployment, issues = load_deployment(paths)
    validated, all_issues = validate_deployment(deployment, registry, environ=environ, prior_issues=issues)
    if validated is None or any(i.severity == "error" for i in all_issues):
        raise FlowValidationError(all_issues)
    return validated
