"""The committed reference docs are what the node types generate: nobody edits them by hand."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import cli, nodes_markdown
from engine.registry import default_registry
from engine.schema import flow_file_schema

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = "regenerate with `klimaflow nodes --markdown docs/nodes.md` and `klimaflow schema --output docs/flow.schema.json`"


def test_nodes_md_is_up_to_date() -> None:
    assert (DOCS / "nodes.md").read_text(encoding="utf-8") == nodes_markdown(default_registry()), REGENERATE


def test_flow_schema_json_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = CliRunner().invoke(cli, ["schema", "--output", str(out)])
    assert result.exit_code == 0, result.output
    committed = json.loads((DOCS / "flow.schema.json").read_text(encoding="utf-8"))
    assert committed == json.loads(out.read_text(encoding="utf-8")), REGENERATE
    assert committed == json.loads(json.dumps(flow_file_schema(default_registry())))
