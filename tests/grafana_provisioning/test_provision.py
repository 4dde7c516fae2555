"""The file-provisioning layout, secrets as $ENV references, and the CLI (provision, embeds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from ruamel.yaml import YAML

from engine.cli import cli
from grafana_provisioning.provision import embeds, generate, write_provisioning
from tests.grafana_provisioning.helpers import flow_doc, validated, write_registry
from tests.shared_data import REPO

PASSWORD = "pa55-Wort-geheim"
TOKEN = "tok-3n-sehr-geheim"
V1_AUTH = {
    "url": "http://influxdb:8086",
    "database": "klima",
    "username": "grafana",
    "password": "${INFLUX_PASSWORD}",
}
V2 = {
    "version": "auto",
    "url": "http://influxdb:8086",
    "org": "stadt",
    "bucket": "klima",
    "token": "${INFLUX_TOKEN:-}",
}
UIDS = ["klima-store-boden-8d4a6aaf", "klima-store-wetter-d4f9d8d6", "klima-store-funk-d34293ae"]


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def _all_text(out: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(out.rglob("*")) if p.is_file())


def test_v1_layout_documented_structure_and_password_as_env_reference(tmp_path: Path) -> None:
    doc = flow_doc(write_registry(tmp_path), V1_AUTH)
    prov = generate(validated(doc, {"INFLUX_PASSWORD": PASSWORD}))
    out = tmp_path / "provisioning"
    written = write_provisioning(prov, out).written
    assert [p.relative_to(out).as_posix() for p in written] == [
        "datasources/klimaflow.yaml",
        "dashboards/klimaflow.yaml",
        *(f"dashboards/klimaflow/klima/{uid}.json" for uid in UIDS),
    ]
    assert _yaml(out / "datasources" / "klimaflow.yaml") == {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "klimaflow influx",
                "type": "influxdb",
                "uid": "influx-influx-8622a406",
                "access": "proxy",
                "url": "http://influxdb:8086",
                "editable": False,
                "jsonData": {"version": "InfluxQL", "dbName": "klima", "httpMode": "POST"},
                "user": "grafana",
                "secureJsonData": {"password": "${INFLUX_PASSWORD}"},
            }
        ],
    }
    assert _yaml(out / "dashboards" / "klimaflow.yaml") == {
        "apiVersion": 1,
        "providers": [
            {
                "name": "klimaflow",
                "orgId": 1,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {
                    "path": "/etc/grafana/provisioning/dashboards/klimaflow",
                    "foldersFromFilesStructure": True,
                },
            }
        ],
    }
    for d in prov.dashboards:
        stored = json.loads((out / "dashboards" / "klimaflow" / "klima" / f"{d.uid}.json").read_text())
        assert stored == d.to_json()
        # Every panel reads the provisioned datasource.
        assert {p["datasource"]["uid"] for p in stored["panels"]} == {"influx-influx-8622a406"}
    assert PASSWORD not in _all_text(out)


def test_v2_datasource_is_flux_with_token_reference_and_no_literal(tmp_path: Path) -> None:
    doc = flow_doc(write_registry(tmp_path), V2)
    prov = generate(validated(doc, {"INFLUX_TOKEN": TOKEN}))
    out = tmp_path / "provisioning"
    write_provisioning(prov, out)
    [ds] = _yaml(out / "datasources" / "klimaflow.yaml")["datasources"]
    assert ds["jsonData"] == {
        "version": "Flux",
        "organization": "stadt",
        "defaultBucket": "klima",
        "httpMode": "POST",
    }
    # `${INFLUX_TOKEN:-}` in the flow; Grafana knows no `:-` default, so `${INFLUX_TOKEN}`.
    assert ds["secureJsonData"] == {"token": "${INFLUX_TOKEN}"}
    assert TOKEN not in _all_text(out)


def test_cli_provision_writes_the_same_bytes_every_run(tmp_path: Path) -> None:
    flow = tmp_path / "klima.json"
    flow.write_text(json.dumps(flow_doc(write_registry(tmp_path), V2)), encoding="utf-8")
    out = tmp_path / "out"
    runner = CliRunner()
    env = {"INFLUX_TOKEN": TOKEN}
    first = runner.invoke(cli, ["grafana", "provision", str(flow), "--out", str(out)], env=env)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        str(out / "datasources" / "klimaflow.yaml"),
        str(out / "dashboards" / "klimaflow.yaml"),
        *(str(out / "dashboards" / "klimaflow" / "klima" / f"{uid}.json") for uid in UIDS),
    ]
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert json.loads((out / ".klimaflow-manifest.json").read_text()) == {
        "generator": "klimaflow grafana provision",
        "files": sorted(f"klima/{uid}.json" for uid in UIDS),
    }
    again = runner.invoke(cli, ["grafana", "provision", str(flow), "--out", str(out)], env=env)
    assert again.exit_code == 0, again.output
    # Same bytes, and not even rewritten (Grafana's provider sees no change).
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == snapshot
    assert TOKEN not in _all_text(out)


def test_cli_provision_refuses_an_invalid_deployment(tmp_path: Path) -> None:
    doc = flow_doc(write_registry(tmp_path), {"url": "http://influxdb:8086"})  # v1 without database
    flow = tmp_path / "klima.json"
    flow.write_text(json.dumps(doc), encoding="utf-8")
    result = CliRunner().invoke(cli, ["grafana", "provision", str(flow), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "version 1 needs `database`" in result.output
    assert "the deployment is invalid: nothing generated" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_embeds_lists_every_panel_solo_url(tmp_path: Path) -> None:
    flow = tmp_path / "klima.json"
    doc = flow_doc(write_registry(tmp_path), {"url": "http://influxdb:8086", "database": "klima"})
    flow.write_text(json.dumps(doc), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["grafana", "embeds", str(flow), "--base-url", "https://grafana.example.de/"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 32
    assert lines[0] == (
        "Klimasensoren: Boden\tBodenfeuchte\thttps://grafana.example.de/d-solo/klima-store-boden-8d4a6aaf/"
        "klimasensoren-boden?orgId=1&panelId=1&from=now-7d&to=now&theme=light"
    )
    assert lines[-1] == (
        "Klimasensoren: Funk\tSNR (aktuell)\thttps://grafana.example.de/d-solo/klima-store-funk-d34293ae/"
        "klimasensoren-funk?orgId=1&panelId=4&from=now-7d&to=now&theme=light"
    )
    # Each URL's panelId is a panel of that dashboard, and no (dashboard, panel) repeats.
    prov = generate(validated(doc))
    by_uid = {d.uid: {p["id"]: p["title"] for p in d.to_json()["panels"]} for d in prov.dashboards}
    pairs = [(e.dashboard_uid, e.panel_id) for e in embeds(prov.dashboards)]
    assert len(set(pairs)) == len(pairs) == 32
    assert all(pid in by_uid[uid] for uid, pid in pairs)


def test_shipped_ttn_flow_provisions_three_dashboards_over_the_registry_measurements(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(REPO)  # the flow's default registry path is relative to the working directory
    unset: dict[str, str | None] = dict.fromkeys(
        ("INFLUX_URL", "INFLUX_DB", "INFLUX_TOKEN", "INFLUX_BUCKET", "INFLUX_ORG", "TTN_REGISTRY"), None
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["grafana", "provision", str(REPO / "flows" / "ttn-sensors.yaml"), "--out", str(out)], env=unset
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (out / "dashboards" / "klimaflow" / "ttn-sensors").iterdir())
    assert files == [
        "ttn-sensors-ttn-store-boden-6e70c915.json",
        "ttn-sensors-ttn-store-funk-b292d336.json",
        "ttn-sensors-ttn-store-wetter-e17f378e.json",
    ]
    soil = json.loads((out / "dashboards" / "klimaflow" / "ttn-sensors" / files[0]).read_text())
    assert soil["title"] == "TTN sensors -> InfluxDB: Boden"
    assert (
        "FROM /^(?:Demo Burgwiese|Demo Marktplatz|Demo Stadtwald|ttn)$/ WHERE"
        in soil["panels"][0]["targets"][0]["query"]
    )
    [ds] = _yaml(out / "datasources" / "klimaflow.yaml")["datasources"]
    assert ds["jsonData"] == {"version": "InfluxQL", "dbName": "klimadaten", "httpMode": "POST"}
    assert "secureJsonData" not in ds


def test_cli_provision_prunes_only_its_own_stale_files(tmp_path: Path) -> None:
    doc = flow_doc(write_registry(tmp_path), V2)
    doc["dashboards"] = [
        {
            "uid": "uebersicht",
            "title": "Übersicht",
            "folder": "Klima",
            "panels": [{"type": "stat", "title": "Feuchte", "fields": ["water_SOIL"]}],
        }
    ]
    flow = tmp_path / "klima.json"
    flow.write_text(json.dumps(doc), encoding="utf-8")
    out = tmp_path / "out"
    runner = CliRunner()
    env = {"INFLUX_TOKEN": TOKEN}
    args = ["grafana", "provision", str(flow), "--out", str(out)]
    assert runner.invoke(cli, args, env=env).exit_code == 0
    root = out / "dashboards" / "klimaflow"
    foreign = root / "klima" / "hand-made.json"
    foreign.write_text("{}", encoding="utf-8")

    # Without radio fields and without the declared dashboard: two stale files.
    doc["nodes"][0]["radio"] = False
    del doc["dashboards"]
    flow.write_text(json.dumps(doc), encoding="utf-8")
    kept = runner.invoke(cli, [*args, "--no-prune"], env=env)
    assert kept.exit_code == 0, kept.output
    assert (root / "Klima" / "uebersicht.json").is_file()
    assert json.loads((out / ".klimaflow-manifest.json").read_text())["files"] == [
        "Klima/uebersicht.json",
        *(f"klima/{uid}.json" for uid in sorted(UIDS)),
    ]

    pruned = runner.invoke(cli, args, env=env)
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stderr.splitlines()[:2] == [
        f"removed {root / 'Klima' / 'uebersicht.json'}",
        f"removed {root / 'klima' / f'{UIDS[2]}.json'}",
    ]
    assert (
        sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))
        == [
            "klima/hand-made.json",  # never klimaflow's: untouched
            *(f"klima/{uid}.json" for uid in sorted(UIDS[:2])),
        ]
    )
    assert not (root / "Klima").exists()  # emptied folder directory removed
