"""Flow files written by deploys: round-trip merges that keep comments, plans, atomic writes."""

from __future__ import annotations

import copy
import difflib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import flowfiles
from engine.errors import FlowLoadError, FlowValidationError
from engine.flowfiles import atomic_write, plan, render
from engine.loader import parse_text
from engine.validation import load_documents

REPO = Path(__file__).resolve().parents[2]
TTN_FULL = (REPO / "flows" / "ttn-sensors.yaml").read_text(encoding="utf-8")
# The node edits below are about the nodes section; the shipped file's dashboards section,
# which follows it, would only move the expected diffs around.
TTN_TEXT = TTN_FULL.split("\n\ndashboards:")[0] + "\n"
DEMO_TEXT = (REPO / "flows" / "demo.yaml").read_text(encoding="utf-8")
TTN_HEAD = TTN_TEXT[: TTN_TEXT.index("id: ttn-sensors")]


def data(text: str) -> Any:
    return parse_text(text, "flow.yaml")[0]


def changes(old: str, new: str) -> list[str]:
    """The +/- lines of a unified diff, as git would show them."""
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in doc["nodes"] if n["id"] == node_id)
    return found


@pytest.fixture
def ttn(tmp_path: Path) -> Path:
    path = tmp_path / "flows" / "ttn-sensors.yaml"
    path.parent.mkdir()
    path.write_text(TTN_TEXT, encoding="utf-8")
    return path


def edit(path: Path, doc: dict[str, Any]) -> str:
    """Render ``doc`` over the file as a deploy would, write it, return the new text."""
    existing = path.read_bytes().decode("utf-8")
    atomic_write(path, render(doc, existing, path))
    return path.read_bytes().decode("utf-8")


# -- YAML round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", [TTN_FULL, TTN_TEXT, DEMO_TEXT], ids=["ttn-sensors", "ttn-sensors-nodes", "demo"]
)
def test_an_unchanged_flow_is_written_back_byte_for_byte(text: str) -> None:
    assert render(data(text), text, Path("flow.yaml")) == text


def test_editing_one_node_field_changes_exactly_that_line(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    node(doc, "ttn-registry")["name"] = "sensor list"
    out = edit(ttn, doc)
    assert changes(TTN_TEXT, out) == ["-    name: sensor registry", "+    name: sensor list"]


def test_an_added_node_only_adds_lines(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    # keys in the editor's order: the file gets id and type first, wires last
    doc["nodes"].append({"wires": ["ttn-errors"], "name": "every uplink", "type": "debug", "id": "ttn-all"})
    node(doc, "ttn-decode")["wires"]["out"].append("ttn-all")
    out = edit(ttn, doc)
    assert changes(TTN_TEXT, out) == [
        "-    wires: {out: [ttn-registry], events: [ttn-events], error: [ttn-errors]}",
        "+    wires: {out: [ttn-registry, ttn-all], events: [ttn-events], error: [ttn-errors]}",
        "+",
        "+  - id: ttn-all",
        "+    type: debug",
        "+    name: every uplink",
        "+    wires: [ttn-errors]",
    ]
    assert data(out) == doc


def test_a_node_added_between_others_keeps_the_blank_line_rhythm(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    doc["nodes"].insert(1, {"id": "ttn-tap", "type": "debug", "property": "payload"})
    out = edit(ttn, doc)
    added = [line for line in changes(TTN_TEXT, out) if line.startswith("+")]
    assert changes(TTN_TEXT, out) == added
    assert sorted(added) == sorted(["+  - id: ttn-tap", "+    type: debug", "+    property: payload", "+"])
    assert "    wires: {out: [ttn-decode], error: [ttn-errors]}\n\n  - id: ttn-tap\n" in out


def test_a_deleted_node_takes_its_lines_and_the_blank_line_above_it(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    doc["nodes"] = [n for n in doc["nodes"] if n["id"] != "ttn-registry"]
    out = edit(ttn, doc)
    assert changes(TTN_TEXT, out) == [
        "-  - id: ttn-registry",
        "-    type: registry-enrich",
        "-    name: sensor registry",
        "-    path: ${TTN_REGISTRY:-flows/registry/ttn-sensoren.csv}",
        '-    measurement_tag: site   # the site name as a tag too, so queries can GROUP BY "site"',
        "-    wires: {out: [ttn-store], error: [ttn-errors]}",
        "-",
    ]


def test_a_deleted_node_takes_its_comment_block_and_leaves_the_next_ones(ttn: Path) -> None:
    text = (
        TTN_TEXT.replace(
            "\n  - id: ttn-store\n",
            "\n  # Batches of 5000 points; a spool on disk while InfluxDB is away.\n  - id: ttn-store\n",
        )
        .replace(
            "\n  - id: ttn-events\n",
            "\n  # Only joins and acks; uplinks go to InfluxDB.\n  - id: ttn-events\n",
        )
        .replace("\n  - id: ttn-errors\n", "\n  # Everything that went wrong.\n  - id: ttn-errors\n")
    )
    ttn.write_text(text, encoding="utf-8")
    doc = data(text)
    # ruamel hangs the comment above ttn-errors on ttn-events' last value: it must stay anyway
    doc["nodes"] = [n for n in doc["nodes"] if n["id"] not in ("ttn-store", "ttn-events")]
    out = edit(ttn, doc)
    assert changes(text, out) == [
        "-  # Batches of 5000 points; a spool on disk while InfluxDB is away.",
        "-  - id: ttn-store",
        "-    type: influxdb-out",
        "-    name: InfluxDB",
        "-    server: influx",
        "-    wires: {error: [ttn-errors]}",
        "-",
        "-  # Only joins and acks; uplinks go to InfluxDB.",
        "-  - id: ttn-events",
        "-    type: debug",
        "-    name: joins, downlinks, acks",
        "-    property: ttn_event",
        "-    level: debug",
        "-",
    ]
    assert out.endswith(
        "\n\n  # Everything that went wrong.\n  - id: ttn-errors\n    type: debug\n    name: errors\n    property: error\n    level: warning\n"
    )


def test_deleting_the_first_node_leaves_no_gap_under_nodes(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    del doc["nodes"][0]
    out = edit(ttn, doc)
    assert "nodes:\n  - id: ttn-decode\n" in out
    assert [line for line in changes(TTN_TEXT, out) if line.startswith("+")] == []


def test_reordered_nodes_move_with_their_comments(ttn: Path) -> None:
    text = TTN_TEXT.replace(
        "\n  - id: ttn-decode\n", "\n  # turns TTN JSON into readings\n  - id: ttn-decode\n"
    )
    ttn.write_text(text, encoding="utf-8")
    doc = data(text)
    doc["nodes"][0], doc["nodes"][1] = doc["nodes"][1], doc["nodes"][0]
    out = edit(ttn, doc)
    start = out.index("nodes:\n")
    assert out[start : out.index("  - id: ttn-registry")] == (
        "nodes:\n"
        "  # turns TTN JSON into readings\n"
        "  - id: ttn-decode\n"
        "    type: ttn-uplink\n"
        "    name: decode uplink\n"
        "    wires: {out: [ttn-registry], events: [ttn-events], error: [ttn-errors]}\n"
        "\n"
        "  - id: ttn-uplinks\n"
        "    type: mqtt-in\n"
        "    name: TTN uplinks\n"
        "    broker: ttn-broker\n"
        "    topic: v3/{application}/devices/{device_id}/up\n"
        "    qos: ${MQTT_QOS:-0}\n"
        "    # Raw bytes: ttn-uplink decodes only the parts of the JSON a reading needs (msgspec),\n"
        "    # about twice as fast as parsing the whole message here first.\n"
        "    payload_format: bytes\n"
        "    wires: {out: [ttn-decode], error: [ttn-errors]}\n"
        "\n"
    )
    assert out[:start] == text[: text.index("nodes:\n")]
    assert data(out) == doc


def test_env_references_stay_as_written_next_to_a_changed_value(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    doc["connections"]["ttn-broker"]["protocol"] = "5"
    doc["connections"]["influx"]["version"] = 2
    out = edit(ttn, doc)
    assert changes(TTN_TEXT, out) == [
        '-    protocol: "3.1.1"',
        '+    protocol: "5"',  # the double quotes are kept
        "-    version: auto",
        "+    version: 2",
    ]
    assert "    url: ${MQTT_URL:-mqtt://127.0.0.1:1883}\n" in out
    assert "    client_id: ${MQTT_CLIENT_ID:-}\n" in out


def test_a_comment_above_a_changed_key_stays(ttn: Path) -> None:
    text = TTN_TEXT.replace(
        "    url: ${INFLUX_URL", "    # the town's InfluxDB; a local one for tests\n    url: ${INFLUX_URL"
    )
    ttn.write_text(text, encoding="utf-8")
    doc = data(text)
    doc["connections"]["influx"]["url"] = "http://influx.intern:8086"
    out = edit(ttn, doc)
    assert changes(text, out) == [
        "-    url: ${INFLUX_URL:-http://127.0.0.1:8086}",
        "+    url: http://influx.intern:8086",
    ]
    assert "    # the town's InfluxDB; a local one for tests\n    url: http://influx.intern:8086\n" in out


def test_a_deleted_key_leaves_the_comment_of_the_next_key() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: debug\n    # shown in the log\n    property: payload\n    # at warning level\n    level: warning\n"
    doc = data(text)
    del doc["nodes"][0]["property"]
    out = render(doc, text, Path("f.yaml"))
    assert out == "id: f\nnodes:\n  - id: a\n    type: debug\n    # at warning level\n    level: warning\n"


def test_new_keys_go_to_readable_places(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    node(doc, "ttn-store")["batch_size"] = 5000  # editor appends after wires
    doc["env"] = {"SITE": "Bad Belzig"}  # schema order: before connections
    out = edit(ttn, doc)
    assert changes(TTN_TEXT, out) == [
        "+env:",
        "+  SITE: Bad Belzig",
        "+    batch_size: 5000",
    ]
    assert "    server: influx\n    batch_size: 5000\n    wires: {error: [ttn-errors]}\n" in out
    assert (
        "  unreachable, points wait in an on-disk spool.\nenv:\n  SITE: Bad Belzig\n\nconnections:\n" in out
    )


def test_changed_folded_text_keeps_its_unchanged_line_breaks(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    doc["description"] = doc["description"].replace("in batches.", "in batches of up to 5000 points.")
    out = edit(ttn, doc)
    assert changes(TTN_TEXT, out) == [
        "-  written to InfluxDB in batches. Nothing is dropped silently: malformed uplinks,",
        "+  written to InfluxDB in batches of up to 5000 points. Nothing is dropped silently:",
        "+  malformed uplinks,",
    ]
    assert data(out) == doc


def test_a_crlf_file_stays_crlf(ttn: Path) -> None:
    text = TTN_TEXT.replace("\n", "\r\n")
    ttn.write_bytes(text.encode("utf-8"))
    doc = data(text)
    node(doc, "ttn-events")["level"] = "info"
    out = edit(ttn, doc)
    assert out.count("\r\n") == out.count("\n") == TTN_TEXT.count("\n")
    assert changes(TTN_TEXT, out.replace("\r\n", "\n")) == ["-    level: debug", "+    level: info"]


def test_a_json_file_keeps_its_key_order_and_indent(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    old = {
        "nodes": [
            {"wires": ["b"], "type": "inject", "id": "a", "interval": "5s"},
            {"type": "debug", "id": "b"},
        ],
        "label": "F",
        "id": "f",
    }
    path.write_text(json.dumps(old, indent=2) + "\n", encoding="utf-8")
    new = {
        "id": "f",
        "label": "F2",
        "nodes": [
            {"id": "a", "type": "inject", "interval": "10s", "once": True, "wires": ["b"]},
            {"id": "b", "type": "debug"},
        ],
    }
    out = edit(path, new)
    assert out == (
        "{\n"
        '  "nodes": [\n'
        "    {\n"
        '      "wires": [\n'
        '        "b"\n'
        "      ],\n"
        '      "type": "inject",\n'
        '      "id": "a",\n'
        '      "interval": "10s",\n'
        '      "once": true\n'
        "    },\n"
        "    {\n"
        '      "type": "debug",\n'
        '      "id": "b"\n'
        "    }\n"
        "  ],\n"
        '  "label": "F2",\n'
        '  "id": "f"\n'
        "}\n"
    )
    assert json.loads(out) == new


def test_a_json_file_keeps_a_four_space_indent(tmp_path: Path) -> None:
    text = '{\n    "id": "f",\n    "nodes": []\n}\n'
    assert render({"id": "f", "nodes": [], "label": "L"}, text, tmp_path / "f.json") == (
        '{\n    "id": "f",\n    "label": "L",\n    "nodes": []\n}\n'
    )


def test_a_new_flow_file_is_readable_yaml_with_the_schema_comment(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "flow.schema.json").write_text("{}", encoding="utf-8")
    path = tmp_path / "flows" / "garden.yaml"
    path.parent.mkdir()
    doc = {
        "nodes": [
            {
                "wires": {"out": ["log"]},
                "interval": "1m",
                "type": "inject",
                "id": "tick",
                "name": "every minute",
            },
            {"property": "payload", "type": "debug", "id": "log", "info": "Shows\nthe tick.\n"},
        ],
        "connections": {"broker": {"url": "${MQTT_URL:-mqtt://localhost}", "type": "mqtt"}},
        "label": "Garden",
        "id": "garden",
        "env": {"PORT": "1883", "DEBUG": True},
    }
    out = render(doc, None, path)
    assert out == (
        "# yaml-language-server: $schema=../docs/flow.schema.json\n"
        "id: garden\n"
        "label: Garden\n"
        "\n"
        "env:\n"
        "  PORT: '1883'\n"
        "  DEBUG: true\n"
        "\n"
        "connections:\n"
        "  broker:\n"
        "    type: mqtt\n"
        "    url: ${MQTT_URL:-mqtt://localhost}\n"
        "\n"
        "nodes:\n"
        "  - id: tick\n"
        "    type: inject\n"
        "    name: every minute\n"
        "    interval: 1m\n"
        "    wires: {out: [log]}\n"
        "\n"
        "  - id: log\n"
        "    type: debug\n"
        "    property: payload\n"
        "    info: |\n"
        "      Shows\n"
        "      the tick.\n"
    )
    deployment, issues = load_documents([(str(path), out)])
    assert issues == []
    assert deployment.flows[0].document == doc


def test_a_new_flow_file_outside_a_repository_with_a_schema_has_no_schema_comment(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    out = render({"id": "x", "nodes": []}, None, tmp_path / "flows" / "x.yaml")
    assert out == "id: x\nnodes: []\n"


def test_a_new_json_flow_file_is_ordered_json(tmp_path: Path) -> None:
    out = render({"nodes": [{"wires": [], "type": "debug", "id": "a"}], "id": "x"}, None, tmp_path / "x.json")
    assert out == (
        '{\n  "id": "x",\n  "nodes": [\n    {\n      "id": "a",\n      "type": "debug",\n'
        '      "wires": []\n    }\n  ]\n}\n'
    )


def test_text_is_written_as_sent_once_it_parses(tmp_path: Path) -> None:
    text = "id: t  # mine\nnodes: []\n"
    assert render(text, TTN_TEXT, tmp_path / "t.yaml") == text
    with pytest.raises(FlowLoadError) as err:
        render("id: t\nnodes: [\n", None, tmp_path / "t.yaml")
    assert err.value.line == 3


def test_values_that_yaml_would_misread_are_quoted() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: debug\n"
    doc = data(text)
    doc["nodes"][0].update({"x": "true", "y": "0x1F", "z": "a\u2028b\x85c", "<<": "merge?", "n": None})
    out = render(doc, text, Path("f.yaml"))
    assert data(out) == doc


def test_a_changed_block_or_quoted_value_keeps_its_style_when_it_can() -> None:
    text = 'id: f\nnodes:\n  - id: a\n    type: python\n    code: |\n      x = 1\n    topic: "t"\n    more: |\n      y\n'
    doc = data(text)
    doc["nodes"][0].update({"code": "x = 2\nreturn x\n", "topic": "u", "more": "\x1f"})
    out = render(doc, text, Path("f.yaml"))
    assert out == (
        'id: f\nnodes:\n  - id: a\n    type: python\n    code: |\n      x = 2\n      return x\n    topic: "u"\n'
        '    more: "\\x1F"\n'
    )
    assert data(out) == doc


def test_an_aliased_block_is_edited_in_one_place_only() -> None:
    text = "id: f\nnodes:\n  - id: a\n    type: debug\n    extra: &shared {k: 1}\n  - id: b\n    type: debug\n    extra: *shared\n"
    doc = data(text)
    doc["nodes"][1]["extra"]["k"] = 2
    out = render(doc, text, Path("f.yaml"))
    assert data(out) == doc


def test_a_file_that_is_no_mapping_is_rewritten_whole(caplog: pytest.LogCaptureFixture) -> None:
    out = render({"id": "f", "nodes": []}, "- just\n- a list\n", Path("f.yaml"))
    assert data(out) == {"id": "f", "nodes": []}
    assert "comments could not be kept" in caplog.text


# -- the merge holds for any edit ------------------------------------------------------------

KEYS = st.text(alphabet="abcdefgh_-", min_size=1, max_size=6)
TEXTS = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.sampled_from(
        ["${X:-1}", "3.1.1", "true", "0x1F", "~", "a: b", "- x", "# no comment", "two\nlines\n", ">"]
    ),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=False), TEXTS
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(KEYS, SCALARS, max_size=3))


def _scalar_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _scalar_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _scalar_paths(v, (*path, i))]
    return [path]


def _mappings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc, *doc["connections"].values(), *doc["nodes"]]


#: The shipped flow with comments in the places ruamel finds hardest, and CRLF line endings.
TTN_COMMENTED = (
    TTN_TEXT.replace("\n  - id: ttn-store\n", "\n  # the sink\n\n  # batches\n  - id: ttn-store\n")
    .replace("    type: influxdb\n", "    type: influxdb  # 1.x or 2.x\n    # where\n")
    .replace("\nnodes:\n", "\nnodes:\n  # first\n")
    + "# the end\n"
).replace("\n", "\r\n")


@st.composite
def edited(draw: st.DrawFn, text: str) -> dict[str, Any]:
    doc: dict[str, Any] = data(text)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(
            st.sampled_from(["scalar", "scalar", "add-key", "del-key", "add-node", "del-node", "shuffle"])
        )
        if op == "scalar":
            path = draw(st.sampled_from(_scalar_paths(doc)))
            target: Any = doc
            for part in path[:-1]:
                target = target[part]
            if path:
                target[path[-1]] = draw(SCALARS)
        elif op == "add-key":
            target = draw(st.sampled_from(_mappings(doc)))
            target[draw(KEYS)] = draw(VALUES)
        elif op == "del-key":
            target = draw(st.sampled_from(_mappings(doc)))
            keys = [k for k in target if k not in ("nodes", "connections")]
            if keys:
                del target[draw(st.sampled_from(keys))]
        elif op == "add-node":
            new = {"id": f"n{len(doc['nodes'])}-{draw(KEYS)}", "type": "debug", draw(KEYS): draw(VALUES)}
            if new["id"] not in {n.get("id") for n in doc["nodes"]}:
                doc["nodes"].insert(draw(st.integers(0, len(doc["nodes"]))), new)
        elif op == "del-node" and doc["nodes"]:
            del doc["nodes"][draw(st.integers(0, len(doc["nodes"]) - 1))]
        elif op == "shuffle":
            doc["nodes"] = draw(st.permutations(doc["nodes"]))
    return doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited(TTN_TEXT))
def test_any_edit_of_a_real_flow_reads_back_as_the_new_document(doc: dict[str, Any]) -> None:
    out = render(doc, TTN_TEXT, Path("ttn-sensors.yaml"))
    back = parse_text(out, "ttn-sensors.yaml")[0]
    assert json.dumps(back, sort_keys=True) == json.dumps(doc, sort_keys=True)
    assert out.startswith(TTN_HEAD)  # merged, not rewritten: the head comment is still there


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited(TTN_COMMENTED))
def test_any_edit_of_a_commented_crlf_flow_reads_back_and_stays_crlf(doc: dict[str, Any]) -> None:
    out = render(doc, TTN_COMMENTED, Path("ttn-sensors.yaml"))
    back = parse_text(out, "ttn-sensors.yaml")[0]
    assert json.dumps(back, sort_keys=True) == json.dumps(doc, sort_keys=True)
    assert out.startswith(TTN_HEAD.replace("\n", "\r\n"))
    assert out.endswith("\r\n# the end\r\n")
    assert "\n" not in out.replace("\r\n", "")


# -- plan ----------------------------------------------------------------------------------------


def test_plan_keeps_the_file_of_a_renamed_flow(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    doc["id"] = "ttn"
    p = plan({"ttn-sensors": ttn}, {"ttn-sensors": doc}, ttn.parent)
    assert list(p.write) == [ttn]
    assert p.delete == []
    assert changes(TTN_TEXT, p.write[ttn]) == ["-id: ttn-sensors", "+id: ttn"]


def test_plan_names_a_new_flow_after_its_id_and_a_lost_file_too(tmp_path: Path) -> None:
    gone = tmp_path / "old-name.yaml"
    p = plan(
        {"kept": gone},
        {"kept": {"id": "kept", "nodes": []}, "fresh": "id: ../../etc/x\nnodes: []\n"},
        tmp_path,
    )
    assert sorted(p.write) == sorted([tmp_path / "kept.yaml", tmp_path / "etc-x.yaml"])


def test_plan_refuses_two_flows_in_one_file(ttn: Path) -> None:
    with pytest.raises(FlowValidationError) as err:
        plan(
            {"ttn-sensors": ttn},
            {"a": {"id": "same", "nodes": []}, "b": {"id": "same", "nodes": []}},
            ttn.parent,
        )
    assert [i.message for i in err.value.issues] == [
        f"flows a and b would both be written to {ttn.parent / 'same.yaml'}"
    ]
    with pytest.raises(FlowValidationError) as err:
        plan({"ttn-sensors": ttn}, {"new": {"id": "ttn-sensors", "nodes": []}}, ttn.parent)
    assert [i.message for i in err.value.issues] == [
        f"{ttn} holds flow ttn-sensors; flow new needs another file"
    ]


def test_plan_does_not_overwrite_a_file_that_holds_no_running_flow(tmp_path: Path) -> None:
    (tmp_path / "notes.yaml").write_text("# mine\n", encoding="utf-8")
    with pytest.raises(FlowValidationError):
        plan({}, {"notes": {"id": "notes", "nodes": []}}, tmp_path)
    assert (tmp_path / "notes.yaml").read_text(encoding="utf-8") == "# mine\n"


def test_plan_full_mode_deletes_flows_not_sent_and_replaces_a_deleted_flows_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for path in (a, b):
        path.write_text(f"id: {path.stem}\nnodes: []\n", encoding="utf-8")
    p = plan({"a": a, "b": b}, {"c": {"id": "c", "nodes": []}}, tmp_path, mode="full")
    assert (list(p.write), p.delete) == ([tmp_path / "c.yaml"], [a, b])
    p = plan({"a": a, "b": b}, {"new-b": {"id": "b", "nodes": []}}, tmp_path, deleted=["b"])
    assert (list(p.write), p.delete) == ([b], [])
    flowfiles.apply(p)
    assert b.read_text(encoding="utf-8") == "id: b\nnodes: []\n"


def test_plan_reads_crlf_files_as_they_are(ttn: Path) -> None:
    ttn.write_bytes(TTN_TEXT.replace("\n", "\r\n").encode("utf-8"))
    doc = data(TTN_TEXT)
    doc["label"] = "TTN"
    text = plan({"ttn-sensors": ttn}, {"ttn-sensors": doc}, ttn.parent).write[ttn]
    assert "\n" not in text.replace("\r\n", "")
    assert changes(TTN_TEXT, text.replace("\r\n", "\n")) == ["-label: TTN sensors -> InfluxDB", "+label: TTN"]


# -- atomic writes -------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_file_and_no_temp_file(ttn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(ttn, "id: half\n")
    assert ttn.read_text(encoding="utf-8") == TTN_TEXT
    assert sorted(p.name for p in ttn.parent.iterdir()) == ["ttn-sensors.yaml"]


def test_a_failed_fsync_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write(tmp_path / "new.yaml", "id: new\n")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_permission_bits_and_bytes(ttn: Path) -> None:
    ttn.chmod(0o640)
    atomic_write(ttn, "id: a\r\nnodes: []\r\n")
    assert stat.S_IMODE(ttn.stat().st_mode) == 0o640
    assert ttn.read_bytes() == b"id: a\r\nnodes: []\r\n"


def test_a_new_file_gets_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "sub" / "n.yaml", "id: n\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "n.yaml").stat().st_mode) == 0o640


def test_atomic_write_through_a_symlink_replaces_the_target(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("id: old\n", encoding="utf-8")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    atomic_write(link, "id: new\n")
    assert link.is_symlink()
    assert real.read_text(encoding="utf-8") == "id: new\n"


def test_render_does_not_change_the_document(ttn: Path) -> None:
    doc = data(TTN_TEXT)
    doc["nodes"].reverse()
    before = copy.deepcopy(doc)
    render(doc, TTN_TEXT, ttn)
    assert doc == before


# -- through the supervisor ----------------------------------------------------------------------


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_a_deploy_of_an_edited_flow_keeps_the_files_comments(tmp_path: Path) -> None:
    from engine.supervisor import Supervisor

    text = (
        "# ticks for the garden\n"
        "id: garden\n"
        "nodes:\n"
        "  # every hour, on the hour\n"
        "  - id: tick\n"
        "    type: inject\n"
        "    interval: 1h  # slow on purpose\n"
        "    wires: [show]\n"
        "\n"
        "  - id: show\n"
        "    type: debug\n"
    )
    path = tmp_path / "flows" / "garden.yaml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    sup = Supervisor([path.parent], data_dir=tmp_path / "data")
    await sup.start()
    try:
        doc = data(text)
        doc["nodes"][0]["interval"] = "30m"
        result = await sup.deploy({"garden": doc}, base_revision=sup.revision)
        assert result.ok, result.issues
        assert path.read_text(encoding="utf-8") == text.replace("interval: 1h ", "interval: 30m")
        assert names(path.parent) == ["garden.yaml"]  # no temporary file left
    finally:
        await sup.stop()
