"""Property tests: no flow document, however malformed, makes loading or validation raise.

The editor API feeds whatever a browser sends into the same two functions, so they must
turn every input into either a validated deployment or error issues.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.validation import load_documents, validate_deployment
from tests.flowkit import test_registry

REGISTRY = test_registry()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["${X}", "${X:-1}", "${file:nope}", "$${X}", "${", "5s", "500ms", "* * * * *", "$timestamp"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

NODE_IDS = ["a", "b", "c", "d", "", "a b", "1"]
node_ids = st.one_of(st.sampled_from(NODE_IDS), st.integers(0, 3), st.none())
node_types = st.sampled_from(
    ["inject", "debug", "catch", "status", "collect", "injekt", "", "mqtt-in", "change"]
)
config_keys = st.sampled_from(
    [
        "payload",
        "topic",
        "once",
        "once_delay",
        "interval",
        "cron",
        "repeat",
        "property",
        "keep",
        "level",
        "scope",
        "classes",
        "inbox",
        "disabled",
        "name",
        "info",
        "bogus",
    ]
)
wires = st.one_of(
    st.lists(node_ids, max_size=3),
    st.dictionaries(st.sampled_from(["out", "error", "x", ""]), st.lists(node_ids, max_size=3), max_size=3),
    node_ids,
    json_values,
)


SENSIBLE_CONFIG: dict[str, list[Any]] = {
    "inject": [{}, {"once": True}, {"interval": "5s"}, {"cron": "0 6 * * *"}, {"interval": 0}, {"cron": "x"}],
    "debug": [{}, {"property": "payload.t"}, {"keep": 3}, {"keep": -1}, {"level": "loud"}],
    "catch": [{}, {"scope": ["n0"]}, {"classes": ["DecodeError"]}, {"scope": "n0"}],
    "status": [{}, {"scope": ["n1"]}],
    "collect": [{}, {"bogus": 1}],
}


@st.composite
def sensible_flows(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid flows: unique ids, known types, wires among them (cycles, bad ports, sources)."""
    count = draw(st.integers(1, 5))
    ids = [f"n{i}" for i in range(count)]
    nodes: list[dict[str, Any]] = []
    for node_id in ids:
        node_type = draw(st.sampled_from(sorted(SENSIBLE_CONFIG)))
        node: dict[str, Any] = {"id": node_id, "type": node_type}
        node.update(draw(st.sampled_from(SENSIBLE_CONFIG[node_type])))
        targets = draw(st.lists(st.sampled_from([*ids, "nx"]), max_size=2, unique=True))
        if draw(st.booleans()):
            node["wires"] = targets
        else:
            node["wires"] = {draw(st.sampled_from(["out", "error", "bad"])): targets}
        nodes.append(node)
    return {"id": "s", "nodes": nodes}


@st.composite
def near_valid_flows(draw: st.DrawFn) -> dict[str, Any]:
    """Flows with every part possibly malformed: ids, types, wires, config values, top-level keys."""
    nodes: list[Any] = []
    for _ in range(draw(st.integers(0, 5))):
        node: dict[str, Any] = {"id": draw(node_ids)}
        if draw(st.integers(0, 9)):
            node["type"] = draw(node_types)
        if draw(st.booleans()):
            node["wires"] = draw(wires)
        for key in draw(st.lists(config_keys, max_size=4)):
            node[key] = draw(json_values)
        nodes.append(node if draw(st.integers(0, 9)) else draw(json_values))
    doc: dict[str, Any] = {"id": draw(st.sampled_from(["f", "g", "", "bad id"])), "nodes": nodes}
    if draw(st.booleans()):
        doc["env"] = draw(st.dictionaries(st.sampled_from(["X", "Y", "1"]), json_values, max_size=2))
    if draw(st.booleans()):
        doc["connections"] = draw(json_values)
    if not draw(st.integers(0, 9)):
        doc[draw(st.sampled_from(["label", "extra", "nodes", "id"]))] = draw(json_values)
    return doc


def check_never_raises(documents: list[tuple[str, str]]) -> None:
    deployment, issues = load_documents(documents)
    validated, all_issues = validate_deployment(deployment, REGISTRY, environ={"Y": "2"}, prior_issues=issues)
    errors = [i for i in all_issues if i.severity == "error"]
    if validated is None:
        assert errors, "rejected without an error issue"
    else:
        assert not errors
        assert set(validated.node_configs) == set(validated.graph.nodes)
    for issue in all_issues:
        assert isinstance(issue.format(), str)


SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@SETTINGS
@given(json_values)
def test_random_json_documents_never_crash(doc: Any) -> None:
    check_never_raises([("random.json", json.dumps(doc))])


@SETTINGS
@given(
    st.lists(st.one_of(sensible_flows(), near_valid_flows()), min_size=1, max_size=2),
    st.sampled_from([".json", ".yaml"]),
)
def test_near_valid_flows_never_crash(docs: list[dict[str, Any]], suffix: str) -> None:
    text_docs = [(f"flow{i}{suffix}", json.dumps(d, indent=1)) for i, d in enumerate(docs)]
    check_never_raises(text_docs)


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(
            st.sampled_from(
                [
                    "id: f",
                    "nodes:",
                    "  - id: a",
                    "    type: inject",
                    "    wires: [b]",
                    "  - {id: b, type: debug}",
                    "&x [*x]",
                    "- *x",
                    "a: &a [1]",
                    "b: *a",
                    "  : ",
                    "\t",
                    "---",
                    "!!binary x",
                    "!foo y",
                    '"\\ud800"',
                    "? [a]",
                    "<<: *a",
                    "{",
                    "]",
                ]
            ),
            max_size=10,
        ).map("\n".join),
    )
)
def test_random_yaml_text_never_crashes(text: str) -> None:
    check_never_raises([("random.yaml", text)])
