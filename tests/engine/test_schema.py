"""The published flow-file JSON Schema (for editors) and per-type descriptions."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from engine.registry import default_registry
from engine.schema import describe_node_type, envelope_schema, flow_file_schema
from nodes.inject import InjectNode
from tests.flowkit import test_registry


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = flow_file_schema(test_registry())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, doc: Any) -> list[str]:
    return sorted(e.message for e in validator.iter_errors(doc))


VALID = {
    "$schema": "https://klimaflow.invalid/schema/flow.json",
    "id": "townhall",
    "label": "Town hall",
    "env": {"EVERY": "5s", "ONCE": True},
    "nodes": [
        {"id": "tick", "type": "inject", "interval": "10s", "payload": {"t": 1}, "wires": ["show"]},
        {"id": "show", "type": "debug", "property": "payload.t", "keep": 5, "wires": {"error": ["c"]}},
        {"id": "c", "type": "collect", "inbox": 10},
    ],
}


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(envelope_schema())
    Draft202012Validator.check_schema(flow_file_schema(default_registry()))


def test_a_valid_flow_validates(validator: Draft202012Validator) -> None:
    assert errors(validator, VALID) == []


def test_wrong_config_field_and_value_are_rejected(validator: Draft202012Validator) -> None:
    doc = {"id": "f", "nodes": [{"id": "tick", "type": "inject", "intervall": "10s"}]}
    assert errors(validator, doc) == ["Additional properties are not allowed ('intervall' was unexpected)"]
    doc = {"id": "f", "nodes": [{"id": "d", "type": "debug", "keep": "many"}]}
    assert len(errors(validator, doc)) == 1
    doc = {"id": "f", "nodes": [{"id": "x", "type": "no-such-type"}]}
    assert len(errors(validator, doc)) == 1


def test_env_references_are_allowed_for_numbers_and_booleans(validator: Draft202012Validator) -> None:
    doc: dict[str, Any] = {
        "id": "f",
        "nodes": [
            {
                "id": "tick",
                "type": "inject",
                "interval": "${EVERY}",
                "once": "${ONCE:-true}",
                "repeat": "${N}",
            },
            {"id": "d", "type": "debug", "keep": "${KEEP}"},
        ],
    }
    assert errors(validator, doc) == []
    doc["nodes"][1]["keep"] = "12"  # a plain string is still not a number
    assert len(errors(validator, doc)) == 1


def test_structure_errors_in_the_envelope(validator: Draft202012Validator) -> None:
    assert errors(validator, {"id": "f"}) == ["'nodes' is a required property"]
    assert errors(validator, {"id": "f", "nodes": [], "extra": 1}) == [
        "Additional properties are not allowed ('extra' was unexpected)"
    ]
    assert errors(validator, {"id": "f", "nodes": [{"id": "a", "type": "inject", "wires": "b"}]}) != []


def test_describe_node_type() -> None:
    info = describe_node_type(InjectNode)
    assert {k: info[k] for k in ("type", "category", "inputs", "outputs", "dynamic_outputs", "icon")} == {
        "type": "inject",
        "category": "common",
        "inputs": 0,
        "outputs": ["out"],
        "dynamic_outputs": False,
        "icon": "inject",
    }
    assert info["summary"] == "Inject a message on start, every interval, on a cron schedule, or by button."
    props = info["config_schema"]["properties"]
    assert set(props) == {"payload", "topic", "once", "once_delay", "interval", "cron", "repeat"}
    assert all(p.get("description") for p in props.values())
