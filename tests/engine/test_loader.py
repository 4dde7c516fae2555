"""Loader: YAML and JSON read into the same model, with line numbers, and clear load errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import FlowLoadError
from engine.loader import build_flow, flow_files, parse_text, read_document
from engine.model import FlowSpec, NodeSpec
from engine.validation import load_deployment, load_documents

FLOW_YAML = """\
# climate sensors of the town hall
id: townhall
label: Town hall
description: Roof sensors
env:
  ROOM: roof
  DEBUG: true
  PORT: 1883
connections:
  broker:
    type: mqtt
    host: localhost
nodes:
  - id: tick
    type: inject
    interval: 10s
    payload: {t: 21.5}
    wires: [show]
  - id: show
    type: debug
    name: Show it
    inbox: 5
    property: payload.t
    wires:
      error: [show2]
  - id: show2
    type: debug
    disabled: true
    info: spare
"""

FLOW_DICT: dict[str, Any] = {
    "id": "townhall",
    "label": "Town hall",
    "description": "Roof sensors",
    "env": {"ROOM": "roof", "DEBUG": True, "PORT": 1883},
    "connections": {"broker": {"type": "mqtt", "host": "localhost"}},
    "nodes": [
        {"id": "tick", "type": "inject", "interval": "10s", "payload": {"t": 21.5}, "wires": ["show"]},
        {
            "id": "show",
            "type": "debug",
            "name": "Show it",
            "inbox": 5,
            "property": "payload.t",
            "wires": {"error": ["show2"]},
        },
        {"id": "show2", "type": "debug", "disabled": True, "info": "spare"},
    ],
}


def load(path: Path) -> FlowSpec:
    data, source = read_document(path)
    return build_flow(data, source)


def without_location(node: NodeSpec) -> NodeSpec:
    return dataclasses.replace(node, file="", line=None)


def test_yaml_and_json_of_the_same_flow_give_the_same_model(tmp_path: Path) -> None:
    (tmp_path / "townhall.yaml").write_text(FLOW_YAML, encoding="utf-8")
    (tmp_path / "townhall.json").write_text(json.dumps(FLOW_DICT, indent=2), encoding="utf-8")
    from_yaml = load(tmp_path / "townhall.yaml")
    from_json = load(tmp_path / "townhall.json")

    assert from_yaml.document == from_json.document == FLOW_DICT
    assert from_yaml.content_hash() == from_json.content_hash()
    for flow in (from_yaml, from_json):
        assert (flow.id, flow.label, flow.description) == ("townhall", "Town hall", "Roof sensors")
        # env values are the text a shell would hold
        assert flow.env == {"ROOM": "roof", "DEBUG": "true", "PORT": "1883"}
        [broker] = flow.connections.values()
        assert (broker.name, broker.type, broker.flow_id) == ("broker", "mqtt", "townhall")
        assert broker.raw_config == {"host": "localhost"}
    assert [without_location(n) for n in from_yaml.nodes] == [without_location(n) for n in from_json.nodes]
    tick, show, show2 = from_yaml.nodes
    assert tick == NodeSpec(
        id="tick",
        type="inject",
        flow_id="townhall",
        index=0,
        wires={"out": ("show",)},
        raw_config={"interval": "10s", "payload": {"t": 21.5}},
        file=str(tmp_path / "townhall.yaml"),
        line=14,
    )
    assert (show.name, show.inbox, show.wires, show.raw_config) == (
        "Show it",
        5,
        {"error": ("show2",)},
        {"property": "payload.t"},
    )
    assert (show2.disabled, show2.info, show2.wires) == (True, "spare", {})


def test_yaml_line_numbers_of_nodes_and_fields(tmp_path: Path) -> None:
    (tmp_path / "townhall.yaml").write_text(FLOW_YAML, encoding="utf-8")
    flow = load(tmp_path / "townhall.yaml")
    assert [n.line for n in flow.nodes] == [14, 19, 26]
    assert flow.connections["broker"].line == 10
    src = flow.source
    assert src.line(()) == 2  # the mapping starts after the comment
    assert src.line(("id",)) == 2
    assert src.line(("nodes", 0, "interval")) == 16
    assert src.line(("nodes", 1, "property")) == 23
    assert src.line(("nodes", 1, "wires", "error")) == 25
    # a path that is not in the document falls back to its nearest ancestor
    assert src.line(("nodes", 1, "no_such_field")) == 19


def test_json_line_numbers_come_from_ruamel(tmp_path: Path) -> None:
    text = json.dumps(FLOW_DICT, indent=2)
    (tmp_path / "townhall.json").write_text(text, encoding="utf-8")
    flow = load(tmp_path / "townhall.json")
    lines = text.splitlines()
    for node in flow.nodes:
        # the line of a node is the line of its opening brace, followed by its "id"
        assert lines[node.line - 1].strip() == "{"  # type: ignore[operator]
        assert lines[node.line].strip() == f'"id": "{node.id}",'  # type: ignore[index]
    interval_line = flow.source.line(("nodes", 0, "interval"))
    assert interval_line is not None
    assert lines[interval_line - 1].strip() == '"interval": "10s",'


def test_directory_ignores_layout_hidden_and_other_files(tmp_path: Path) -> None:
    for name in (
        "b.json",
        "a.yaml",
        "c.yml",
        "D.YAML",
        "a.layout.json",
        ".hidden.yaml",
        "notes.txt",
        "a.yaml~",
    ):
        (tmp_path / name).write_text("{}", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.yaml").write_text("{}", encoding="utf-8")
    assert [p.name for p in flow_files([tmp_path])] == ["D.YAML", "a.yaml", "b.json", "c.yml"]
    # a file named directly is taken as it is
    assert flow_files([tmp_path / "a.layout.json"]) == [tmp_path / "a.layout.json"]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "bad.yaml",
            "id: f\nnodes:\n  - id: a\n    type: [inject\n",
            "bad.yaml:5: invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence started at line 4)",
        ),
        (
            "tab.yaml",
            "id: f\nnodes:\n\t- id: a\n",
            "tab.yaml:3: invalid YAML: found character '\\t' that cannot start any token",
        ),
        (
            "dup.yaml",
            "id: f\nnodes: []\nid: g\n",
            'dup.yaml:3: invalid YAML: found duplicate key "id" with value "g" (original value: "f")',
        ),
        (
            "bad.json",
            '{\n  "id": "f",\n  "nodes": [\n    {"id": "a" "type": "inject"}\n  ]\n}\n',
            "bad.json:4: invalid JSON: Expecting ',' delimiter",
        ),
        (
            "dup.json",
            '{\n  "id": "f",\n  "nodes": [],\n  "id": "g"\n}\n',
            'dup.json:4: invalid JSON: found duplicate key "id" with value "g" (original value: "f")',
        ),
        ("alias.yaml", "&n [*n]\n", "alias.yaml:1: recursive alias (a value that contains itself)"),
        (
            "tag.yaml",
            "id: f\nnodes: []\nlabel: !vault abc\n",
            "tag.yaml:3: unsupported value (tag !vault): use mappings, lists, strings, numbers, booleans and null",
        ),
        ("lone.json", '{"id": "\\ud83d"}', "lone.json:1: invalid unicode escape (unpaired surrogate)"),
    ],
)
def test_unparseable_documents_are_issues_with_file_and_line(name: str, text: str, expected: str) -> None:
    deployment, issues = load_documents([(name, text)])
    assert deployment.flows == ()
    assert [(i.severity, i.code, i.format()) for i in issues] == [("error", "load", expected)]


def test_the_same_errors_from_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("id: f\nnodes: [\n", encoding="utf-8")
    _, issues = load_deployment([path])
    [issue] = issues
    assert (issue.file, issue.line, issue.code) == (str(path), 3, "load")
    assert issue.message.startswith("invalid YAML: ")


def test_non_utf8_file_is_a_clear_issue(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("id: f\nnodes: []\nlabel: Gr\xfcn\n".encode("latin-1"))
    deployment, issues = load_deployment([tmp_path])
    assert deployment.flows == ()
    assert [i.format() for i in issues] == [
        f"{path}:3: not UTF-8 text (invalid byte 0xfc at offset 25); save the file as UTF-8"
    ]


def test_utf8_bom_and_surrogate_pairs_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"id": "f", "label": "Gr\\u00fcn \\ud83c\\udf21", "nodes": []}')
    data, _ = read_document(path)
    assert data == {"id": "f", "label": "Grün 🌡", "nodes": []}


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    _, issues = load_deployment([tmp_path / "nope.yaml"])
    assert [i.format() for i in issues] == [
        f"{tmp_path / 'nope.yaml'}: cannot read file: No such file or directory"
    ]
    _, issues = load_deployment([tmp_path])
    assert [i.format() for i in issues] == ["no flow files found (expected *.yaml, *.yml or *.json)"]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(FlowLoadError, match=r"document too large \(more than 200000 values; alias bomb\?\)"):
        parse_text("\n".join(lines), "bomb.yaml")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(FlowLoadError, match="nested more than 64 levels deep"):
        parse_text("[" * 200 + "]" * 200, "deep.json")


def test_scalars_become_plain_python() -> None:
    data, _ = parse_text(
        "when: 2024-05-01\nat: 2024-05-01T06:00:00Z\nn: 0x10\nf: 1e3\nnull_: ~\n1: one\n", "x.yaml"
    )
    assert data == {
        "when": "2024-05-01",
        "at": "2024-05-01T06:00:00+00:00",
        "n": 16,
        "f": 1000.0,
        "null_": None,
        "1": "one",
    }
    assert [type(v) for v in data.values()] == [str, str, int, float, type(None), str]


def test_build_flow_is_lenient_about_malformed_parts() -> None:
    data, source = parse_text(
        json.dumps(
            {
                "nodes": [
                    {"id": "a", "type": "inject", "wires": "b", "inbox": 0},
                    {"type": "no-id"},
                    "not a node",
                    {"id": "b", "type": "debug", "wires": {"out": ["c", 7, None], "bad": 3}, "inbox": True},
                ],
                "connections": {"broker": "not a mapping"},
                "env": ["not", "a", "mapping"],
            }
        ),
        "dir/lenient.json",
    )
    flow = build_flow(data, source)
    assert flow.id == "lenient"  # the file name stands in for a missing id
    assert flow.env == {}
    assert flow.connections == {}
    assert [(n.id, n.index, dict(n.wires), n.inbox) for n in flow.nodes] == [
        ("a", 0, {"out": ("b",)}, 1000),
        ("b", 3, {"out": ("c", "7")}, 1000),
    ]
