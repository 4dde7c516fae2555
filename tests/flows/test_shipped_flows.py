"""Every flow shipped in flows/ validates with its defaults, alone and as the one deployment it forms."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from engine.loader import flow_files, parse_text, read_document
from engine.registry import default_registry
from engine.schema import flow_file_schema
from engine.validation import load_deployment, load_documents, validate_deployment

FLOWS = Path(__file__).resolve().parents[2] / "flows"
SHIPPED = flow_files([FLOWS])


def _errors(paths: list[Path]) -> list[str]:
    deployment, issues = load_deployment(paths)
    # An empty environment: shipped flows must work from their own defaults.
    _validated, issues = validate_deployment(deployment, default_registry(), environ={}, prior_issues=issues)
    return [i.format() for i in issues if i.severity == "error"]


def test_flows_directory_is_not_empty() -> None:
    assert any(p.name == "demo.yaml" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_flow_validates(path: Path) -> None:
    assert _errors([path]) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_flow_matches_the_editor_schema(path: Path) -> None:
    """What VS Code checks through `klimaflow schema` must accept what validation accepts."""
    data, _ = read_document(path)
    validator = jsonschema.Draft202012Validator(flow_file_schema(default_registry()))
    assert [e.message for e in validator.iter_errors(data)] == []


def test_shipped_flows_validate_together() -> None:
    assert _errors([FLOWS]) == []


def _doc_examples() -> tuple[str, str]:
    """The YAML and JSON flow examples of docs/flow-format.md (the blocks that define a flow id)."""
    text = (FLOWS.parent / "docs" / "flow-format.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(yaml|json)\n(.*?)^```$", text, flags=re.S | re.M)
    yaml_doc = next(body for lang, body in blocks if lang == "yaml" and re.search(r"^id: ", body, re.M))
    json_doc = next(body for lang, body in blocks if lang == "json" and '"id"' in body)
    return yaml_doc, json_doc


def test_flow_format_examples_validate_and_agree() -> None:
    yaml_doc, json_doc = _doc_examples()
    yaml_data, _ = parse_text(yaml_doc, "example.yaml")
    json_data = json.loads(json_doc)
    assert {k: v for k, v in json_data.items() if k != "$schema"} == yaml_data
    validator = jsonschema.Draft202012Validator(flow_file_schema(default_registry()))
    assert [e.message for e in validator.iter_errors(json_data)] == []
    for name, text in (("example.yaml", yaml_doc), ("example.json", json_doc)):
        deployment, issues = load_documents([(name, text)])
        validated, issues = validate_deployment(
            deployment, default_registry(), environ={"TTN_API_KEY": "k"}, prior_issues=issues
        )
        assert [i.format() for i in issues] == []
        assert validated is not None
        assert sorted(validated.node_configs) == [
            "bad-reading",
            "connection-trouble",
            "reading",
            "show",
            "trouble-log",
            "uplinks",
        ]


def test_readme_example_validates() -> None:
    text = (FLOWS.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"^```yaml\n(.*?)^```$", text, flags=re.S | re.M)
    assert example is not None
    deployment, issues = load_documents([("readme.yaml", example.group(1))])
    validated, issues = validate_deployment(deployment, default_registry(), environ={}, prior_issues=issues)
    assert [i.format() for i in issues] == []
    assert validated is not None
    assert sorted(validated.node_configs) == ["reading", "show", "tick"]
