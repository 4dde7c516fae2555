"""The shipped importer flows (groundwater, DWD means, statistics), run as shipped over the real files.

Each flow file runs in a real Engine with its `watch` pointed at a directory of real files
(environment variables, as an admin would set them) and writes into a real InfluxDB; the
`klimaflow import` tests run the CLI as a subprocess, as an admin loads a file by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.supervisor import Supervisor
from tests.flowkit import run_flow
from tests.nodes.opendata.helpers import count, long_shards
from tests.services.api import api_server
from tests.services.influxdb import InfluxDB
from tests.shared_data import REPO, shared_path

FLOWS = REPO / "flows"
KLIMAFLOW = str(Path(sys.executable).with_name("klimaflow"))
APW = ("klima-dashboard", "Auskunftsplattform Wasser Land Brandenburg")
LATIN1_CRLF = "38413470,52.145030,12.634290.csv"
UTF8_LF = "38404690,52.157338,12.607846.csv"
DWD_SAMPLE = REPO / "tests" / "data" / "dwd" / "mittelwerte_historisch.csv"


@pytest.fixture
def influxdb(influxdb: InfluxDB) -> InfluxDB:
    """Year-long shard groups, as docs/flows/groundwater.md recommends for historical imports."""
    long_shards(influxdb)
    return influxdb


def influx_env(influx: InfluxDB, **dirs: str) -> dict[str, str]:
    return {"INFLUX_URL": influx.url, "INFLUX_DB": "klima", **dirs}


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def run_shipped(flow: str, environ: dict[str, str], done: Callable[[], bool]) -> list[str]:
    """Run flows/``flow`` until ``done``; returns the messages of every error event."""
    errors: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("kind") == "error":
            errors.append(event["error"]["message"])

    text = (FLOWS / flow).read_text(encoding="utf-8")
    async with run_flow(text, environ=environ, drain_timeout=30) as h:
        h.engine.subscribe(on_event)
        await until(done, f"{flow} to store its points")
        await h.idle(30)
    return errors


async def test_groundwater_flow_imports_csv_and_zip_from_its_directory(
    tmp_path: Path, influxdb: InfluxDB
) -> None:
    shutil.copy(shared_path(*APW, LATIN1_CRLF), tmp_path / LATIN1_CRLF)
    with zipfile.ZipFile(tmp_path / "38404690,52.157338,12.607846.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(shared_path(*APW, UTF8_LF), "38404690.csv")
    (tmp_path / "README.md").write_text("not a station file\n")
    errors = await run_shipped(
        "groundwater.yaml",
        influx_env(influxdb, GROUNDWATER_DIR=str(tmp_path)),
        lambda: count(influxdb, "groundwater", "depth_below_surface_cm") >= 1089 + 678,
    )
    assert errors == []
    assert count(influxdb, "groundwater", "depth_below_surface_cm", "station = '38413470'") == 1089
    assert count(influxdb, "groundwater", "depth_below_surface_cm", "station = '38404690'") == 678


async def test_statistics_flow_imports_the_real_directories(influxdb: InfluxDB) -> None:
    environ = influx_env(
        influxdb,
        ENERGY_DIR=str(shared_path("klima-dashboard", "Energieagentur Brandenburg")),
        FOREST_DIR=str(shared_path("klima-dashboard", "Forst Brandenburg")),
        AGRICULTURE_DIR=str(shared_path("klima-dashboard", "Statistik Berlin-Brandenburg")),
    )
    expected = {
        ("energy_profile", "einwohner_gesamt_anzahl"): 11,
        ("renewable_generation", "einwohner_gesamt_anzahl"): 11,
        ("renewable_co2_savings", "einwohner_gesamt_anzahl"): 11,
        ("forest_crown_defoliation", "mean_percent"): 32,
        ("forest_damage_classes", "class_0_percent"): 8,
        ("agricultural_holdings", "count"): 9,
    }

    def stored() -> dict[tuple[str, str], int]:
        return {key: count(influxdb, *key) for key in expected}

    errors = await run_shipped("statistics.yaml", environ, lambda: stored() == expected)
    assert errors == []
    assert stored() == expected


async def test_dwd_flow_imports_the_means(influxdb: InfluxDB) -> None:
    errors = await run_shipped(
        "dwd-climate-means.yaml",
        influx_env(influxdb, DWD_DIR=str(DWD_SAMPLE.parent)),
        lambda: count(influxdb, "climate_means", "year") >= 4,
    )
    assert errors == []
    assert count(influxdb, "climate_means", "year") == 4


def test_shipped_data_are_the_real_files() -> None:
    """data/ holds byte-exact copies of the shared real files (and the DWD sample of tests/data)."""
    pairs = [
        (REPO / "data" / "groundwater", shared_path(*APW)),
        (
            REPO / "data" / "statistics" / "energieagentur",
            shared_path("klima-dashboard", "Energieagentur Brandenburg"),
        ),
        (REPO / "data" / "statistics" / "forst", shared_path("klima-dashboard", "Forst Brandenburg")),
        (
            REPO / "data" / "statistics" / "statistik-berlin-brandenburg",
            shared_path("klima-dashboard", "Statistik Berlin-Brandenburg"),
        ),
        (REPO / "data" / "dwd", DWD_SAMPLE.parent),
    ]

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.csv")}

    for shipped, original in pairs:
        assert digests(shipped), shipped
        assert digests(shipped) == digests(original), shipped


# -- klimaflow import ------------------------------------------------------------------------


def klimaflow_import(influx: InfluxDB, flow: str, *files: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
    env.update(influx_env(influx))
    return subprocess.run(
        [KLIMAFLOW, "import", str(FLOWS / flow), *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_import_groundwater_file_by_hand(tmp_path: Path, influxdb: InfluxDB) -> None:
    real = shared_path(*APW, LATIN1_CRLF)
    r = klimaflow_import(influxdb, "groundwater.yaml", real)
    assert (r.returncode, r.stdout) == (0, "1089 points stored from 1 file, 0 rows rejected\n")
    assert count(influxdb, "groundwater", "depth_below_surface_cm") == 1089
    # The same file again, plus a copy with two bad rows: nothing is duplicated, both rows are named.
    dirty = tmp_path / LATIN1_CRLF
    data = (
        real.read_bytes()
        .replace(b'14.05.1997;"";596;', b'14.05.1997;"";;')
        .replace(b"22.05.2023;", b"22.05.23;")
    )
    dirty.write_bytes(data)
    r = klimaflow_import(influxdb, "groundwater.yaml", dirty)
    assert r.stdout == (
        f"{dirty}:2: Wasserstand: no value\n"
        f"{dirty}:1090: Datum: '22.05.23' is not a date like 25.01.2007\n"
        "1087 points stored from 1 file, 2 rows rejected\n"
    )
    assert r.returncode == 0
    assert count(influxdb, "groundwater", "depth_below_surface_cm") == 1089


def test_import_statistics_files_by_hand(influxdb: InfluxDB) -> None:
    r = klimaflow_import(
        influxdb,
        "statistics.yaml",
        shared_path("klima-dashboard", "Energieagentur Brandenburg", "energiesteckbrief_daten_komplett.csv"),
        shared_path("klima-dashboard", "Forst Brandenburg", "waldzustandsbericht-schadstufen.csv"),
        shared_path(
            "klima-dashboard", "Statistik Berlin-Brandenburg", "landwirtschaftliche_betriebe_brandenburg.csv"
        ),
    )
    assert (r.returncode, r.stdout) == (0, "28 points stored from 3 files, 0 rows rejected\n")
    assert count(influxdb, "energy_profile", "einwohner_gesamt_anzahl") == 11
    readme = shared_path("klima-dashboard", "Forst Brandenburg", "README.md")
    r = klimaflow_import(influxdb, "statistics.yaml", readme)
    assert r.returncode == 1
    assert r.stdout.startswith(f"{readme}: no file rule matches 'README.md' (patterns: ")
    assert r.stdout.endswith("0 points stored from 1 file, 1 row rejected\n")


def test_import_dwd_means_by_hand(influxdb: InfluxDB) -> None:
    r = klimaflow_import(influxdb, "dwd-climate-means.yaml", DWD_SAMPLE)
    assert (r.returncode, r.stdout) == (0, "4 points stored from 1 file, 0 rows rejected\n")
    assert count(influxdb, "climate_means", "year") == 4


def test_import_groundwater_zip_by_hand(tmp_path: Path, influxdb: InfluxDB) -> None:
    archive = tmp_path / "38404690,52.157338,12.607846.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(shared_path(*APW, UTF8_LF), "38404690.csv")
    r = klimaflow_import(influxdb, "groundwater.yaml", archive)
    assert (r.returncode, r.stdout) == (0, "678 points stored from 1 file, 0 rows rejected\n")
    assert count(influxdb, "groundwater", "depth_below_surface_cm", "station = '38404690'") == 678


async def test_a_station_file_uploaded_to_the_groundwater_endpoint_is_stored(
    influxdb: InfluxDB, tmp_path: Path
) -> None:
    """What the town's data repository does when a file changes: POST it to the running engine."""
    empty = tmp_path / "watched"
    empty.mkdir()  # the watch node sees nothing: every point comes through the upload
    flow_dir = tmp_path / "flows"
    flow_dir.mkdir()
    shutil.copy(FLOWS / "groundwater.yaml", flow_dir / "groundwater.yaml")
    sup = Supervisor(
        [flow_dir], data_dir=tmp_path / "data", environ=influx_env(influxdb, GROUNDWATER_DIR=str(empty))
    )
    await sup.start()
    editor, reader = "kf_editor-upload-0123456789abcdef", "kf_reader-upload-0123456789abcdef"
    station = shared_path(*APW, "38413470,52.145030,12.634290.csv")
    url = f"/api/v1/import/groundwater/{station.name}"
    try:
        async with (
            api_server(sup, {"editor": editor, "reader": reader}) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        ):
            body = station.read_bytes()
            headers = {"Content-Type": "application/octet-stream"}
            r = await client.post(url, content=body, headers=headers)
            assert r.status_code == 401
            r = await client.post(url, content=body, headers={**headers, "Authorization": f"Bearer {reader}"})
            assert r.status_code == 403
            r = await client.post(url, content=body, headers={**headers, "Authorization": f"Bearer {editor}"})
            assert r.status_code == 202
            await until(
                lambda: count(influxdb, "groundwater", "depth_below_surface_cm") == 1089, "1089 points"
            )
    finally:
        await sup.stop()
    # Station and coordinates come from the uploaded file's name, as for a watched file.
    assert count(influxdb, "groundwater", "depth_below_surface_cm", "station = '38413470'") == 1089
    [row] = influxdb.rows('SELECT last("latitude"), last("longitude") FROM "groundwater"', "klima")
    assert (row["last"], row["last_1"]) == (52.14503, 12.63429)
