"""``klimaflow import``: a real importer flow, a real InfluxDB, the real command line.

The flow: watch (*.csv, *.zip) -> zip -> csv -> python (tests/engine/importer_parser.py,
which raises RecordRejected for bad rows) -> influxdb-out.
"""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.importer import ImportSetupError, choose_entry, run_import
from engine.registry import default_registry
from engine.validation import load_and_validate
from tests.services._proc import free_port
from tests.services.influxdb import InfluxDB

REPO = Path(__file__).resolve().parents[2]

FLOW = """\
id: import-test
label: importer test flow
connections:
  import-test-influx:
    type: influxdb
    version: 1
    url: ${INFLUX_URL}
    database: ${INFLUX_DB:-klima}
nodes:
  - id: import-test-files
    type: watch
    paths: ["${IMPORT_TEST_DIR:-/nonexistent-import-dir}/*.csv", "${IMPORT_TEST_DIR:-/nonexistent-import-dir}/*.zip"]
    wires: [import-test-unzip]
  - id: import-test-unzip
    type: zip
    members: "*.csv"
    wires: [import-test-csv]
  - id: import-test-csv
    type: csv
    separator: ";"
    output: messages
    wires: [import-test-parse]
  - id: import-test-parse
    type: python
    function: tests.engine.importer_parser:reading
    input: message
    wires: [import-test-store]
  - id: import-test-store
    type: influxdb-out
    server: import-test-influx
    batch_interval: 50ms
"""

T_2024_01_01 = 1_704_067_200_000_000_000
DAY = 86_400_000_000_000


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """One CSV with two bad rows, one ZIP whose CSV member has a malformed line."""
    a = tmp_path / "38404690.csv"
    a.write_text("date;level\n01.01.2024;35.5\n02.01.2024;abc\n03.01.2024;35.7\n32.01.2024;36.0\n")
    z = tmp_path / "st2.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("st2.csv", "date;level\n01.01.2024;10\n02.01.2024;11;extra\n")
        zf.writestr("readme.txt", "not a csv")
    z.write_bytes(buf.getvalue())
    bad = tmp_path / "only-bad.csv"
    bad.write_text("date;level\n01.01.2024;x\n")
    flow = tmp_path / "import-test.yaml"
    flow.write_text(FLOW)
    return {"a": a, "zip": z, "bad": bad, "flow": flow}


def expected_rejected(a: Path) -> list[str]:
    return [
        f"{a}:3: level 'abc' is not a number",
        f"{a}:5: date '32.01.2024' is not DD.MM.YYYY",
    ]


def stored(influxdb: InfluxDB) -> list[tuple[int, str, float]]:
    rows = influxdb.rows('SELECT "level" FROM "gw_test" GROUP BY "station"', "klima")
    return sorted((r["time"], r["station"], r["level"]) for r in rows)


EXPECTED_POINTS = [
    (T_2024_01_01, "38404690", 35.5),
    (T_2024_01_01, "st2", 10.0),
    (T_2024_01_01 + 2 * DAY, "38404690", 35.7),
]


async def test_import_stores_points_reports_rejected_rows_and_reimports_without_duplicates(
    files: dict[str, Path], influxdb: InfluxDB, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INFLUX_URL", influxdb.url)
    monkeypatch.setenv("INFLUX_DB", "klima")
    monkeypatch.setenv("IMPORT_TEST_DIR", str(tmp_path))  # the watch must not scan it itself
    validated = load_and_validate([files["flow"]], default_registry())
    progress: list[tuple[int, int, int]] = []
    result = await run_import(validated, [files["a"], files["zip"]], progress=lambda *a: progress.append(a))
    assert stored(influxdb) == EXPECTED_POINTS
    assert result.points == 3
    assert result.files == [str(files["a"]), str(files["zip"])]
    assert result.rejected == expected_rejected(files["a"])
    assert result.errors == [
        "node import-test-csv: DecodeError: CSV line 3: expected 2 fields, got 3",
    ]
    assert result.exit_code == 0
    assert result.lines()[-1] == "3 points stored from 2 files, 2 rows rejected"
    assert sorted(progress)[-1] == (2, 2, 3)
    assert len(progress) == 2

    again = await run_import(validated, [files["zip"], files["a"]])
    assert again.points == 3
    assert stored(influxdb) == EXPECTED_POINTS  # same timestamps and tags: overwritten, not duplicated


def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def test_command_in_a_subprocess_prints_rejected_rows_and_summary(
    files: dict[str, Path], influxdb: InfluxDB
) -> None:
    env = dict(os.environ, INFLUX_URL=influxdb.url, INFLUX_DB="klima", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [str(REPO / ".venv/bin/klimaflow"), "import", str(files["flow"]), str(files["a"]), str(files["zip"])],
        env=env,
        cwd=files["flow"].parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        *expected_rejected(files["a"]),
        "error: node import-test-csv: DecodeError: CSV line 3: expected 2 fields, got 3",
        "3 points stored from 2 files, 2 rows rejected",
    ]
    assert stored(influxdb) == EXPECTED_POINTS


def test_nothing_imported_exits_1(files: dict[str, Path]) -> None:
    # Nothing is ever written: the InfluxDB URL may point nowhere.
    env = {"INFLUX_URL": f"http://127.0.0.1:{free_port()}", "INFLUX_DB": "klima"}
    missing = files["a"].parent / "missing.csv"
    code, out, _err = run_cli("import", str(files["flow"]), str(files["bad"]), str(missing), env=env)
    assert code == 1
    assert out.splitlines() == [
        f"{files['bad']}:2: level 'x' is not a number",
        f"error: cannot read {missing}: No such file or directory",
        "0 points stored from 1 file, 1 row rejected",
    ]


def test_invalid_flow_exits_2_with_the_validators_error(files: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(FLOW.replace("batch_interval: 50ms", "batch_interval: soon"))
    code, out, err = run_cli("import", str(broken), str(files["a"]), env={"INFLUX_URL": "http://127.0.0.1:1"})
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"{broken}:31: node import-test-store: batch_interval: invalid duration 'soon': "
        "use seconds (e.g. 5) or a string like '500ms', '5s', '1m', '1h'",
        f"klimaflow: error: {broken}: invalid flow, nothing imported",
    ]


def test_flow_without_or_with_several_entry_nodes_exits_2(files: dict[str, Path], tmp_path: Path) -> None:
    no_entry = tmp_path / "no-entry.yaml"
    no_entry.write_text(
        "id: x\nnodes:\n  - {id: tick, type: inject, wires: [show]}\n  - {id: show, type: debug}\n"
    )
    code, _out, err = run_cli("import", str(no_entry), str(files["a"]), env={})
    assert code == 2
    assert err == (
        f"klimaflow: error: {no_entry}: the flow has no entry node for files (a watch, file-in, http-in node)\n"
    )

    two = tmp_path / "two.yaml"
    two.write_text(
        FLOW.replace(
            "  - id: import-test-unzip\n",
            "  - id: import-test-read\n    type: file-in\n    wires: [import-test-unzip]\n"
            "  - id: import-test-unzip\n",
        )
    )
    env = {"INFLUX_URL": "http://127.0.0.1:1"}
    code, _out, err = run_cli("import", str(two), str(files["a"]), env=env)
    assert code == 2
    assert err == (
        f"klimaflow: error: {two}: the flow has several entry nodes "
        "(import-test-files, import-test-read): choose one with --entry NODE_ID\n"
    )
    code, _out, err = run_cli("import", str(two), str(files["a"]), "--entry", "import-test-csv", env=env)
    assert code == 2
    assert "a csv node cannot take files" in err


def test_choose_entry_picks_the_named_file_in_node(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUX_URL", "http://127.0.0.1:1")
    validated = load_and_validate([files["flow"]], default_registry())
    assert choose_entry(validated, None) == "import-test-files"
    with pytest.raises(ImportSetupError, match="--entry nope: no node with this id in the flow"):
        choose_entry(validated, "nope")


def test_points_influxdb_did_not_take_count_as_not_imported(files: dict[str, Path]) -> None:
    flow = files["flow"].parent / "no-retries.yaml"
    flow.write_text(FLOW + "    max_retries: 0\n")
    env = {"INFLUX_URL": f"http://127.0.0.1:{free_port()}", "INFLUX_DB": "klima"}
    code, out, _err = run_cli("import", str(flow), str(files["a"]), env=env)
    assert code == 1
    assert out.splitlines() == [
        *expected_rejected(files["a"]),
        "error: 2 points could not be written (InfluxDB unreachable) and were not stored",
        "0 points stored from 1 file, 2 rows rejected",
    ]


def test_the_command_leaves_logging_as_it_was(files: dict[str, Path]) -> None:
    import logging

    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("klimaflow.node").level)
    run_cli("import", str(files["flow"]), str(files["bad"]), env={"INFLUX_URL": "http://127.0.0.1:1"})
    assert (list(root.handlers), root.level, logging.getLogger("klimaflow.node").level) == before
