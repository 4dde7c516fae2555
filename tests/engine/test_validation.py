"""Validation: one test per kind of problem, each with the exact ``FILE:LINE: node ID: FIELD: message``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from engine.errors import FlowValidationError
from engine.node import Connection, Node
from engine.registry import Registry
from engine.types import ConnectionConfig, Duration, NodeConfig, connection_field
from engine.validation import load_and_validate, load_documents, validate_deployment
from tests.flowkit import test_registry, validate_doc


class VaultConfig(ConnectionConfig):
    """Test connection with a secret field."""

    url: str = Field(description="Where the vault is.")
    password: SecretStr | None = Field(default=None, description="Password (a secret).")


class VaultConnection(Connection):
    """Test-only connection type with a secret."""

    type_name = "vault"
    Config = VaultConfig


class OtherConfig(ConnectionConfig):
    """Test connection of another type."""

    url: str = Field(default="", description="Anything.")


class OtherConnection(Connection):
    """Test-only connection type that nodes of this module never accept."""

    type_name = "other"
    Config = OtherConfig


class UsesVaultConfig(NodeConfig):
    """Test node config: a connection reference, a secret and typed fields."""

    vault: str = connection_field("vault", "Name of a vault connection.")
    token: SecretStr | None = Field(default=None, description="A token (a secret).")
    limit: int = Field(default=1, description="A number.")
    every: Duration = Field(default=1.0, description="A duration.")


class UsesVaultNode(Node):
    """Test-only node type with two output ports."""

    type_name = "uses-vault"
    Config = UsesVaultConfig
    outputs = ("out", "rejected")


def registry() -> Registry:
    reg = test_registry()
    reg.add_node(UsesVaultNode)
    reg.add_connection(VaultConnection)
    reg.add_connection(OtherConnection)
    return reg


def issues_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    validated, issues = validate_doc(text, environ=environ, registry=registry())
    assert (validated is None) == any(i.severity == "error" for i in issues)
    return [i.format() for i in issues]


def issues_of_files(*docs: tuple[str, str]) -> list[str]:
    deployment, issues = load_documents(docs)
    _, all_issues = validate_deployment(deployment, registry(), environ={}, prior_issues=issues)
    return [i.format() for i in all_issues]


INJECT_FIELDS = "cron, interval, once, once_delay, payload, repeat, topic"
VAULT = "connections:\n  v1:\n    type: vault\n    url: https://vault\n"


# -- structure ------------------------------------------------------------------------


def test_missing_nodes() -> None:
    assert issues_of("id: f\nlabel: x\n") == ["flow.yaml:1: 'nodes' is a required property"]


def test_a_document_that_is_not_a_mapping() -> None:
    assert issues_of("- id: a\n") == ["flow.yaml:1: a flow file must contain a mapping with id and nodes"]


def test_unknown_top_level_key() -> None:
    assert issues_of("id: f\nnodes: []\nnodez: []\n") == [
        "flow.yaml:3: unknown top-level key 'nodez' (allowed: $schema, id, label, description, env, connections, nodes, dashboards)"
    ]


def test_bad_wires_shape() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: inject\n    wires: 5\n"
    assert issues_of(text) == [
        "flow.yaml:5: node a: wires: wires must be a list of node ids, or a mapping from port name to a "
        "list of node ids; got 5",
        "flow.yaml:3: node a: wires: warning: source whose output goes nowhere",
    ]


def test_node_without_id_and_bad_id() -> None:
    text = "id: f\nnodes:\n  - type: inject\n  - id: a b\n    type: inject\n"
    assert issues_of(text) == [
        "flow.yaml:3: nodes.0: 'id' is a required property",
        "flow.yaml:4: node a b: id: 'a b' does not match '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$'",
        "flow.yaml:4: node a b: wires: warning: source whose output goes nowhere",
    ]


# -- ids and names ----------------------------------------------------------------------


def test_duplicate_node_ids_across_files() -> None:
    a = "id: fa\nnodes:\n  - id: x\n    type: inject\n    wires: [y]\n  - id: y\n    type: collect\n"
    b = "id: fb\nnodes:\n  - id: z\n    type: collect\n  - id: x\n    type: collect\n"
    assert issues_of_files(("a.yaml", a), ("b.yaml", b)) == [
        "b.yaml:5: node x: id: duplicate node id (first defined at a.yaml:3)",
        "b.yaml:3: node z: warning: not reachable from any source (no inject, mqtt-in, catch, ... feeds it)",
    ]


def test_duplicate_flow_ids() -> None:
    a = "id: f\nnodes:\n  - id: x\n    type: inject\n    wires: [y]\n  - id: y\n    type: collect\n"
    b = "label: again\nid: f\nnodes: []\n"
    assert issues_of_files(("a.yaml", a), ("b.yaml", b)) == [
        "b.yaml:2: duplicate flow id 'f' (also in a.yaml)"
    ]


def test_duplicate_connection_names() -> None:
    a = f"id: fa\n{VAULT}nodes: []\n"
    b = f"id: fb\n{VAULT}nodes: []\n"
    assert issues_of_files(("a.yaml", a), ("b.yaml", b)) == [
        "b.yaml:3: connection v1: duplicate connection name (first defined at a.yaml:3)"
    ]


# -- types and configs --------------------------------------------------------------------


def test_unknown_node_type_with_did_you_mean() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: injekt\n  - id: b\n    type: zzzz\n"
    assert issues_of(text) == [
        "flow.yaml:4: node a: type: unknown node type 'injekt'; did you mean 'inject'?",
        "flow.yaml:6: node b: type: unknown node type 'zzzz' (`klimaflow nodes` lists the types)",
    ]


def test_unknown_type_of_a_disabled_node_is_only_a_warning() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: injekt\n    disabled: true\n"
    assert issues_of(text) == [
        "flow.yaml:4: node a: type: warning: unknown node type 'injekt'; did you mean 'inject'?"
    ]


def test_unknown_connection_type() -> None:
    text = "id: f\nconnections:\n  v1:\n    type: vaul\nnodes: []\n"
    assert issues_of(text) == [
        "flow.yaml:4: connection v1: type: unknown connection type 'vaul'; did you mean 'vault'?"
    ]


def test_unknown_config_field() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: inject\n    intervall: 5s\n    wires: [b]\n  - id: b\n    type: collect\n"
    assert issues_of(text) == [
        f"flow.yaml:5: node a: intervall: unknown field; did you mean 'interval'? (allowed: {INJECT_FIELDS})"
    ]


def test_wrong_type_and_bad_duration() -> None:
    text = (
        "id: f\nnodes:\n  - id: a\n    type: inject\n    once: perhaps\n    interval: 2 weeks\n"
        "    repeat: 0\n    wires: [b]\n  - id: b\n    type: collect\n"
    )
    assert issues_of(text) == [
        "flow.yaml:5: node a: once: Input should be a valid boolean, unable to interpret input",
        "flow.yaml:6: node a: interval: invalid duration '2 weeks': use seconds (e.g. 5) or a string like "
        "'500ms', '5s', '1m', '1h'",
        "flow.yaml:7: node a: repeat: Input should be greater than or equal to 1",
    ]


def test_whole_config_error_points_at_the_node() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: inject\n    interval: 5\n    cron: '* * * * *'\n    wires: [b]\n  - id: b\n    type: collect\n"
    assert issues_of(text) == ["flow.yaml:3: node a: set either interval or cron, not both"]


def test_env_var_missing_and_env_refs_for_numbers() -> None:
    text = (
        "id: f\nnodes:\n  - id: a\n    type: inject\n    interval: ${EVERY}\n    repeat: ${TIMES}\n"
        "    wires: [b]\n  - id: b\n    type: collect\n"
    )
    assert issues_of(text, environ={"TIMES": "3"}) == [
        "flow.yaml:5: node a: interval: environment variable EVERY is not set (write ${EVERY:-default} for a default)"
    ]
    validated, issues = validate_doc(text, environ={"EVERY": "250ms", "TIMES": "3"})
    assert issues == []
    assert validated is not None
    cfg = validated.node_configs["a"]
    assert (cfg.interval, cfg.repeat) == (0.25, 3)  # type: ignore[attr-defined]


def test_literal_secrets_are_refused_in_nodes_and_connections() -> None:
    text = (
        "id: f\nconnections:\n  v1:\n    type: vault\n    url: https://vault\n    password: hunter2\n"
        "nodes:\n  - id: a\n    type: inject\n    wires: [b]\n  - id: b\n    type: uses-vault\n"
        "    vault: v1\n    token: $${not-a-reference}\n"
    )
    hint = "secrets must not be written into flow files; use ${ENV_VAR} or ${file:/run/secrets/NAME}"
    assert issues_of(text) == [
        f"flow.yaml:6: connection v1: password: {hint}",
        f"flow.yaml:14: node b: token: {hint}",
    ]


def test_secrets_from_env_and_file_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0ken\n", encoding="utf-8")
    (tmp_path / "f.yaml").write_text(
        "id: f\nconnections:\n  v1:\n    type: vault\n    url: https://vault\n    password: ${VAULT_PW}\n"
        "nodes:\n  - id: a\n    type: inject\n    wires: [b]\n  - id: b\n    type: uses-vault\n"
        "    vault: v1\n    token: ${file:token}\n",
        encoding="utf-8",
    )
    validated = load_and_validate([tmp_path], registry(), environ={"VAULT_PW": "pw"})
    assert validated.connection_configs["v1"].password.get_secret_value() == "pw"  # type: ignore[attr-defined]
    assert validated.node_configs["b"].token.get_secret_value() == "t0ken"  # type: ignore[attr-defined]
    assert validated.issues == []


# -- connections ------------------------------------------------------------------------


def test_unknown_connection_reference() -> None:
    flow = "id: f\n{conns}nodes:\n  - id: a\n    type: inject\n    wires: [b]\n  - id: b\n    type: uses-vault\n    vault: v11\n"
    assert issues_of(flow.format(conns=VAULT)) == [
        "flow.yaml:12: node b: vault: unknown connection 'v11'; did you mean 'v1'?"
    ]
    assert issues_of(flow.format(conns="")) == [
        "flow.yaml:8: node b: vault: unknown connection 'v11' (no vault connection is defined)"
    ]


def test_wrong_connection_type() -> None:
    text = (
        "id: f\nconnections:\n  o1:\n    type: other\nnodes:\n  - id: a\n    type: inject\n    wires: [b]\n"
        "  - id: b\n    type: uses-vault\n    vault: o1\n"
    )
    assert issues_of(text) == [
        "flow.yaml:11: node b: vault: connection 'o1' is of type 'other', expected 'vault'"
    ]


# -- wires and graph ---------------------------------------------------------------------


def test_wire_to_unknown_node() -> None:
    text = "id: f\nnodes:\n  - id: tick\n    type: inject\n    wires:\n      - sink\n      - snk2\n  - id: sink2\n    type: collect\n"
    assert issues_of(text) == [
        "flow.yaml:6: node tick: wires.out: wire to unknown node 'sink'; did you mean 'sink2'?",
        "flow.yaml:7: node tick: wires.out: wire to unknown node 'snk2'; did you mean 'sink2'?",
        "flow.yaml:3: node tick: wires: warning: source whose output goes nowhere",
        "flow.yaml:8: node sink2: warning: not reachable from any source (no inject, mqtt-in, catch, ... feeds it)",
    ]


def test_unknown_port_lists_the_ports() -> None:
    text = (
        f"id: f\n{VAULT}nodes:\n  - id: a\n    type: inject\n    wires: [b]\n  - id: b\n    type: uses-vault\n"
        "    vault: v1\n    wires:\n      rejected: [c]\n      accepted: [c]\n  - id: c\n    type: collect\n"
    )
    assert issues_of(text) == [
        "flow.yaml:15: node b: wires.accepted: node type 'uses-vault' has no output port 'accepted' "
        "(ports: out, rejected, error)"
    ]


def test_wire_into_a_node_without_input() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: inject\n    wires: [b]\n  - id: b\n    type: inject\n"
    assert issues_of(text) == [
        "flow.yaml:5: node a: wires.out: node 'b' (inject) has no input and cannot be wired to",
        "flow.yaml:6: node b: wires: warning: source whose output goes nowhere",
    ]


def test_cycle_prints_the_exact_path() -> None:
    text = (
        "id: f\nnodes:\n  - id: src\n    type: inject\n    wires: [b]\n"
        "  - id: c\n    type: uses-vault\n    vault: v1\n    wires: {out: [x], rejected: [a]}\n"
        "  - id: a\n    type: uses-vault\n    vault: v1\n    wires: [b]\n"
        "  - id: b\n    type: uses-vault\n    vault: v1\n    wires: [c]\n"
        "  - id: x\n    type: collect\n" + VAULT
    )
    assert issues_of(text) == ["flow.yaml:6: node c: wires: cycle: c -> a -> b -> c (flows must be acyclic)"]


def test_self_loop_is_a_cycle() -> None:
    text = f"id: f\n{VAULT}nodes:\n  - id: a\n    type: uses-vault\n    vault: v1\n    wires: [a]\n"
    assert issues_of(text) == [
        "flow.yaml:7: node a: wires: cycle: a -> a (flows must be acyclic)",
        "flow.yaml:7: node a: warning: not reachable from any source (no inject, mqtt-in, catch, ... feeds it)",
    ]


def test_catch_scope_naming_an_unknown_node() -> None:
    text = (
        "id: f\nnodes:\n  - id: tick\n    type: inject\n    wires: [sink]\n  - id: sink\n    type: collect\n"
        "  - id: c\n    type: catch\n    scope:\n      - sink\n      - snk\n      - nowhere\n    wires: [sink]\n"
    )
    validated, issues = validate_doc(text)
    assert validated is None
    assert [i.format() for i in issues] == [
        "flow.yaml:12: node c: scope.1: scope names node 'snk', which is not in this flow; did you mean 'sink'?",
        "flow.yaml:13: node c: scope.2: scope names node 'nowhere', which is not in this flow",
    ]
    first = issues[0]
    assert (first.code, first.file, first.line, first.flow, first.node, first.field) == (
        "unknown-scope",
        "flow.yaml",
        12,
        "f",
        "c",
        "scope.1",
    )


def test_status_scope_naming_a_node_of_another_flow() -> None:
    a = "id: fa\nnodes:\n  - id: x\n    type: inject\n    wires: [y]\n  - id: y\n    type: collect\n"
    b = (
        "id: fb\nnodes:\n  - id: s\n    type: status\n    scope: [z, x]\n    wires: [z]\n"
        "  - id: z\n    type: collect\n"
    )
    assert issues_of_files(("a.yaml", a), ("b.yaml", b)) == [
        "b.yaml:5: node s: scope.1: scope names node 'x', which is not in this flow "
        "(it is in flow 'fa'; status sees only its own flow)"
    ]


def test_scope_naming_the_node_itself() -> None:
    text = (
        "id: f\nnodes:\n  - id: c\n    type: catch\n    scope: [c]\n    wires: [out]\n"
        "  - id: s\n    type: status\n    scope: [s]\n    wires: [out]\n  - id: out\n    type: collect\n"
    )
    assert issues_of(text) == [
        "flow.yaml:5: node c: scope.0: scope names this node itself; a catch node never sees its own errors",
        "flow.yaml:9: node s: scope.0: scope names this node itself; a status node never sees its own status",
    ]


def test_valid_scopes_pass() -> None:
    text = (
        "id: f\nnodes:\n  - id: tick\n    type: inject\n    wires: [sink]\n  - id: sink\n    type: collect\n"
        "  - id: off\n    type: collect\n    disabled: true\n"
        "  - id: c\n    type: catch\n    scope: [tick, sink, off, s]\n    wires: [sink]\n"
        "  - id: s\n    type: status\n    scope: [tick, c]\n    wires: [sink]\n"
        "  - id: all\n    type: catch\n    scope: []\n    wires: [sink]\n"
    )
    validated, issues = validate_doc(text)
    assert issues == []
    assert validated is not None
    assert validated.node_configs["c"].scope == ["tick", "sink", "off", "s"]  # type: ignore[attr-defined]


def test_warnings_for_unreachable_nodes_and_dead_end_sources() -> None:
    text = (
        "id: f\nnodes:\n  - id: tick\n    type: inject\n  - id: lonely\n    type: debug\n"
        "  - id: c\n    type: catch\n    wires: [off]\n  - id: off\n    type: debug\n    disabled: true\n"
    )
    validated, issues = validate_doc(text)
    assert validated is not None  # warnings do not stop a deployment
    assert [i.format() for i in validated.warnings] == [
        "flow.yaml:3: node tick: wires: warning: source whose output goes nowhere",
        "flow.yaml:5: node lonely: warning: not reachable from any source (no inject, mqtt-in, catch, ... feeds it)",
        "flow.yaml:7: node c: wires: warning: source whose output goes nowhere",
    ]
    assert [i.code for i in issues] == ["dead-end-source", "unreachable", "dead-end-source"]
    assert sorted(validated.graph.nodes) == ["c", "lonely", "tick"]  # the disabled node is not run


def test_a_config_error_upstream_does_not_add_unreachable_noise() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: inject\n    once: 3x\n    wires: [b]\n  - id: b\n    type: collect\n"
    assert issues_of(text) == [
        "flow.yaml:5: node a: once: Input should be a valid boolean, unable to interpret input"
    ]


def test_a_valid_flow_gives_typed_configs_and_the_graph() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: inject\n    interval: 1m\n    wires: {out: [b], error: [b]}\n  - id: b\n    type: collect\n"
    validated, issues = validate_doc(text)
    assert issues == []
    assert validated is not None
    assert validated.node_configs["a"].interval == 60.0  # type: ignore[attr-defined]
    assert sorted((u, v, d["port"]) for u, v, d in validated.graph.edges(data=True)) == [
        ("a", "b", "error"),
        ("a", "b", "out"),
    ]


# -- the raising entry point ---------------------------------------------------------------


def test_load_and_validate_raises_with_every_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "id: a\nnodes:\n  - id: x\n    type: injekt\n  - id: y\n    type: inject\n", encoding="utf-8"
    )
    (tmp_path / "b.json").write_text('{"id": "b", "nodes": [}', encoding="utf-8")
    with pytest.raises(FlowValidationError) as info:
        load_and_validate([tmp_path], registry())
    assert str(info.value) == (
        "2 error(s):\n"
        f"{tmp_path / 'b.json'}:1: invalid JSON: Expecting value\n"
        f"{tmp_path / 'a.yaml'}:4: node x: type: unknown node type 'injekt'; did you mean 'inject'?"
    )
    assert [i.code for i in info.value.issues] == ["load", "unknown-type", "dead-end-source"]
