"""The ``klimaflow`` command line, through click's runner and (for ``run``) a real subprocess."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.registry import default_registry

REPO = Path(__file__).resolve().parents[2]

GOOD_FLOW = """\
id: small
label: Small flow
nodes:
  - id: tick
    type: inject
    once: true
    once_delay: 0
    topic: t/1
    payload: {temperature: 21.5}
    wires: [show]
  - id: show
    type: debug
"""

BAD_FLOW = """\
id: bad
nodes:
  - id: tick
    type: inject
    interval: 2x
    wires: {out: [show], nope: [show]}
  - id: show
    type: debgu
  - id: log
    type: debug
    wires: [ghost]
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_good_flow_exits_0_with_summary(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "small.yaml", GOOD_FLOW)
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "0 errors, 0 warnings in 1 flow (2 nodes)\n"


def test_validate_bad_flow_prints_every_issue_sorted_by_line_and_exits_1(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = write(tmp_path, "bad.yaml", BAD_FLOW)
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    f = str(path)
    assert result.stdout.splitlines() == [
        f"{f}:5: node tick: interval: invalid duration '2x': use seconds (e.g. 5) or a string like "
        "'500ms', '5s', '1m', '1h'",
        f"{f}:6: node tick: wires.nope: node type 'inject' has no output port 'nope' (ports: out, error)",
        f"{f}:8: node show: type: unknown node type 'debgu'; did you mean 'debug'?",
        f"{f}:9: node log: warning: not reachable from any source (no inject, mqtt-in, catch, ... feeds it)",
        f"{f}:11: node log: wires.out: node type 'debug' has no output port 'out' (ports: error)",
        "4 errors, 1 warning in 1 flow (3 nodes)",
    ]


def test_validate_warnings_alone_exit_0(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", "id: w\nnodes:\n  - id: tick\n    type: inject\n")
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{path}:3: node tick: wires: warning: source whose output goes nowhere",
        "0 errors, 1 warning in 1 flow (1 node)",
    ]


def test_validate_json_lists_issue_dicts_and_summary(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD_FLOW)
    result = runner.invoke(cli, ["validate", "--format", "json", str(path)])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["summary"] == {
        "valid": False,
        "errors": 4,
        "warnings": 1,
        "flows": 1,
        "nodes": 3,
        "load_errors": {},
    }
    assert data["issues"][2] == {
        "severity": "error",
        "message": "unknown node type 'debgu'; did you mean 'debug'?",
        "code": "unknown-type",
        "file": str(path),
        "line": 8,
        "flow": "bad",
        "node": "show",
        "connection": None,
        "field": "type",
    }
    assert [i["code"] for i in data["issues"]] == [
        "config",
        "unknown-port",
        "unknown-type",
        "unreachable",
        "unknown-port",
    ]


def test_validate_directory_is_one_deployment(runner: CliRunner, tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD_FLOW)
    write(tmp_path, "b.yaml", GOOD_FLOW.replace("id: small", "id: other"))
    write(tmp_path, "a.layout.json", '{"tick": {"x": 10, "y": 20}}')
    result = runner.invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert result.stdout.splitlines() == [
        f"{second}:4: node tick: id: duplicate node id (first defined at {first}:4)",
        f"{second}:11: node show: id: duplicate node id (first defined at {first}:11)",
        "2 errors, 0 warnings in 2 flows (4 nodes)",
    ]


def test_nonexistent_path_is_one_line_without_traceback(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(cli, ["validate", str(missing)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"klimaflow validate: error: Invalid value for 'PATH...': Path '{missing}' does not exist. "
        "(see 'klimaflow validate --help')\n"
    )


def test_unknown_option_is_one_line(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["graph", "--format", "png", "flows"])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        "klimaflow graph: error: Invalid value for '--format': 'png' is not one of"
    )


def test_nodes_json_lists_inject_and_debug_with_ports(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["nodes", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    by_type = {n["type"]: n for n in data["nodes"]}
    assert by_type["inject"]["inputs"] == 0
    assert by_type["inject"]["outputs"] == ["out"]
    assert by_type["debug"]["inputs"] == 1
    assert by_type["debug"]["outputs"] == []
    assert set(by_type) == set(default_registry().nodes)


def test_nodes_text_shows_summary_ports_and_fields(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["nodes", "inject", "debug"])
    assert result.exit_code == 0
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert lines[0].startswith("debug (common)  Log a message (or part of it)")
    assert "  1 input; output ports: error" in lines
    assert "  no input (source); output ports: out, error" in lines
    interval = next(line for line in lines if line.lstrip().startswith("interval"))
    assert interval.split()[:5] == ["interval", "duration", "|", "null", "="]


def test_nodes_unknown_type_is_an_error(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["nodes", "injekt"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "klimaflow: error: unknown node type 'injekt'"


def test_nodes_markdown_documents_every_registered_type(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "out" / "nodes.md"
    result = runner.invoke(cli, ["nodes", "--markdown", str(target)])
    assert result.exit_code == 0
    text = target.read_text(encoding="utf-8")
    for name in default_registry().nodes:
        assert f"\n### {name}\n" in text
    for name in default_registry().connections:
        assert f"\n### {name}\n" in text
    assert "| `interval` | duration \\| null | `null` | Fire every interval (e.g. `10s`, `5m`). |" in text
    assert "- Inputs: none (source)\n- Output ports: `out`, `error`\n" in text
    assert text.startswith("# Node reference\n")


def test_schema_is_valid_json_schema_accepting_good_and_rejecting_bad_flows(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "id": "f",
        "nodes": [
            {"id": "a", "type": "inject", "interval": "5s", "once": True, "wires": ["b"]},
            {"id": "b", "type": "debug", "property": "payload"},
        ],
    }
    assert list(validator.iter_errors(good)) == []
    unknown_key = {"id": "f", "nodes": [{"id": "a", "type": "inject", "bogus": 1}]}
    assert not validator.is_valid(unknown_key)
    unknown_type = {"id": "f", "nodes": [{"id": "a", "type": "injekt"}]}
    assert not validator.is_valid(unknown_type)
    wrong_value = {"id": "f", "nodes": [{"id": "a", "type": "debug", "level": "loud"}]}
    assert not validator.is_valid(wrong_value)


def test_schema_output_file(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "flow.schema.json"
    result = runner.invoke(cli, ["schema", "--output", str(target)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads(target.read_text(encoding="utf-8"))["title"] == "klimaflow flow"


def test_graph_mermaid_exact(runner: CliRunner, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "g.yaml",
        """\
id: g
label: Graph "test"
nodes:
  - {id: tick, type: inject, name: Every 5 s, wires: [fix]}
  - {id: fix, type: change, rules: [{set: payload.unit, to: C}], wires: {out: [show], error: [oops]}}
  - {id: show, type: debug}
  - {id: oops, type: debug}
  - {id: end, type: debug}
  - {id: a-b, type: debug}
  - {id: a_b, type: debug}
""",
    )
    result = runner.invoke(cli, ["graph", "--format", "mermaid", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "flowchart LR\n"
        '  subgraph flow_g["Graph #quot;test#quot;"]\n'
        '    tick["Every 5 s<br/><i>inject</i>"]\n'
        '    fix["fix<br/><i>change</i>"]\n'
        '    show["show<br/><i>debug</i>"]\n'
        '    oops["oops<br/><i>debug</i>"]\n'
        '    n_end["end<br/><i>debug</i>"]\n'
        '    a_b["a-b<br/><i>debug</i>"]\n'
        '    a_b_2["a_b<br/><i>debug</i>"]\n'
        "  end\n"
        "  tick -->|out| fix\n"
        "  fix -->|out| show\n"
        "  fix -.->|error| oops\n"
    )


def test_graph_text_and_dot(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "small.yaml", GOOD_FLOW)
    text = runner.invoke(cli, ["graph", str(path)])
    assert (
        text.stdout
        == f"flow small (Small flow)  [{path}]\n  tick [inject]\n    out -> show\n  show [debug]\n"
    )
    dot = runner.invoke(cli, ["graph", "--format", "dot", str(path)])
    assert '  "tick" -> "show" [label="out"];\n' in dot.stdout
    assert dot.stdout.startswith("digraph klimaflow {\n")
    assert dot.stdout.endswith("}\n")


def test_graph_of_unparsable_file_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "id: x\nnodes: [\n")
    result = runner.invoke(cli, ["graph", str(path)])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"klimaflow: error: {path}:")
    assert "Traceback" not in result.output


# -- run, as a real process ------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.pop("KLIMAFLOW_DATA", None)
    return env


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """Read the process's stderr until ``needle`` shows up (or fail after ``timeout``)."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            pytest.fail(f"{needle!r} not logged within {timeout}s; got:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen


def test_run_logs_debug_output_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    path = write(tmp_path, "small.yaml", GOOD_FLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(path), "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        early = _read_until(proc, b'INFO    node.show: [t/1] {"temperature": 21.5}', timeout=20)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=15)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (early + rest).decode()
    assert proc.returncode == 0, log
    assert "cli: SIGTERM received" in log
    assert "engine: deployment" in log
    assert log.rstrip().endswith("stopped")
    assert "Traceback" not in log


def test_run_invalid_flow_prints_issues_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD_FLOW)
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(path)],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert f"{path}:8: node show: type: unknown node type 'debgu'; did you mean 'debug'?" in lines
    assert lines[-1] == "klimaflow: error: 4 errors: deployment not started"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".klimaflow").exists()


def test_types_that_failed_to_import_are_explained(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = default_registry().copy()
    registry.load_errors["node:weather"] = "ModuleNotFoundError: No module named 'weather_plugin'"
    monkeypatch.setattr("engine.cli.default_registry", lambda: registry)
    path = write(tmp_path, "w.yaml", GOOD_FLOW.replace("type: debug", "type: weather"))
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{path}:12: node show: type: unknown node type 'weather'")
    assert lines[1:] == [
        "warning: node type 'weather' is installed but could not be loaded: "
        "ModuleNotFoundError: No module named 'weather_plugin'",
        "1 error, 0 warnings in 1 flow (2 nodes)",
    ]
    listing = runner.invoke(cli, ["nodes", "--json"])
    assert listing.exit_code == 0
    assert json.loads(listing.stdout)["load_errors"] == {
        "node:weather": "ModuleNotFoundError: No module named 'weather_plugin'"
    }
    assert listing.stderr == (
        "warning: node type 'weather' is installed but could not be loaded: "
        "ModuleNotFoundError: No module named 'weather_plugin'\n"
    )


def test_api_options_without_api_are_refused(runner: CliRunner, tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "id: a\nnodes: []\n")
    result = runner.invoke(cli, ["run", str(tmp_path), "--trusted-proxies", "10.0.0.0/8"])
    assert result.exit_code == 2
    assert "--auth-config, --no-auth and --trusted-proxies need --api" in result.stderr
