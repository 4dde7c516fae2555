"""Provisioning on every applied deployment: the real Supervisor with a flow directory and the
Grafana post-apply hooks (file provisioning, push to the fake Grafana)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.supervisor import Supervisor
from grafana_provisioning.deploy_hook import grafana_hooks, provision_hook, push_hook
from tests.grafana_provisioning.helpers import flow_doc, write_registry
from tests.services.grafana_fake import GrafanaFake

TOKEN = "glsa_deploy"
#: A closed port: influxdb-out spools while InfluxDB is away; the dashboards do not need it.
INFLUX = {"url": "http://127.0.0.1:9", "database": "klima"}
GENERATED = ["klima-store-boden-8d4a6aaf", "klima-store-wetter-d4f9d8d6", "klima-store-funk-d34293ae"]
DECLARED = {
    "uid": "klima-uebersicht",
    "title": "Übersicht",
    "folder": "Klima",
    "panels": [{"type": "stat", "title": "Bodenfeuchte", "fields": ["water_SOIL"]}],
}


@pytest.fixture
def fake() -> Iterator[GrafanaFake]:
    f = GrafanaFake(token=TOKEN).start()
    yield f
    f.stop()


def _write(flows: Path, doc: dict[str, Any]) -> None:
    (flows / "klima.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")


def _files(out: Path) -> list[str]:
    root = out / "dashboards" / "klimaflow"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))


async def test_start_and_reload_rewrite_the_provisioning_and_prune_what_is_gone(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    doc = flow_doc(write_registry(tmp_path), INFLUX)
    _write(flows, doc)
    out = tmp_path / "provisioning"
    foreign = out / "dashboards" / "klimaflow" / "klima" / "hand-made.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text('{"title": "from someone else"}', encoding="utf-8")
    sup = Supervisor(
        [flows], data_dir=tmp_path / "data", post_apply=[("grafana-provision", provision_hook(out))]
    )
    started = await sup.start()
    try:
        assert started.post_apply == {"grafana-provision": {"state": "pending", "message": ""}}
        await sup.post_apply_idle()
        assert started.post_apply == {
            "grafana-provision": {
                "state": "ok",
                "message": f"3 dashboards in {out}: 5 files changed, 0 removed",
            }
        }
        assert _files(out) == sorted(["klima/hand-made.json", *(f"klima/{u}.json" for u in GENERATED)])

        # The edit: no radio fields any more (the Funk dashboard goes), a declared dashboard comes.
        doc["nodes"][0]["radio"] = False
        doc["dashboards"] = [DECLARED]
        _write(flows, doc)
        reloaded = await sup.reload("file")
        assert reloaded.ok, reloaded.to_dict()
        await sup.post_apply_idle()
        assert reloaded.to_dict()["post_apply"] == {
            "grafana-provision": {
                "state": "ok",
                "message": f"3 dashboards in {out}: 1 files changed, 1 removed",
            }
        }
        assert _files(out) == [
            "Klima/klima-uebersicht.json",
            "klima/hand-made.json",  # not klimaflow's: never touched
            "klima/klima-store-boden-8d4a6aaf.json",
            "klima/klima-store-wetter-d4f9d8d6.json",
        ]
        assert foreign.read_text(encoding="utf-8") == '{"title": "from someone else"}'
        declared = json.loads(
            (out / "dashboards" / "klimaflow" / "Klima" / "klima-uebersicht.json").read_text()
        )
        assert (declared["title"], [p["title"] for p in declared["panels"]]) == (
            "Übersicht",
            ["Bodenfeuchte"],
        )
    finally:
        await sup.stop()


async def test_api_deploy_pushes_and_a_failing_hook_never_blocks_the_deploy(
    tmp_path: Path, fake: GrafanaFake
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    doc = flow_doc(write_registry(tmp_path), INFLUX)
    _write(flows, doc)
    out = tmp_path / "provisioning"
    hooks = [
        ("grafana-push", push_hook(fake.url, TOKEN)),
        ("grafana-push-wrong-token", push_hook(fake.url, "falsch")),
        ("grafana-provision", provision_hook(out)),
    ]
    sup = Supervisor([flows], data_dir=tmp_path / "data", post_apply=hooks)
    await sup.start()
    try:
        await sup.post_apply_idle()
        assert sorted(fake.dashboards) == sorted(GENERATED)

        doc["nodes"][0]["radio"] = False
        doc["dashboards"] = [DECLARED]
        result = await sup.deploy({"klima": json.dumps(doc)}, base_revision=sup.revision)
        assert result.ok, result.to_dict()
        assert sup.engine is not None
        assert sup.engine.running
        await sup.post_apply_idle()
        assert result.post_apply == {
            "grafana-push": {
                "state": "ok",
                # created: folder Klima and its dashboard; unchanged: folder klima, datasource, two dashboards
                "message": f"pushed to {fake.url}: 2 created, 0 updated, 1 deleted, 4 unchanged",
            },
            "grafana-push-wrong-token": {
                "state": "failed",
                "message": f"PushError: Grafana at {fake.url} refused the credentials (401 Unauthorized)",
            },
            "grafana-provision": {
                "state": "ok",
                "message": f"3 dashboards in {out}: 1 files changed, 1 removed",
            },
        }
        assert sorted(fake.dashboards) == sorted([*GENERATED[:2], "klima-uebersicht"])
        deletes = [(r.method, r.path) for r in fake.requests if r.method == "DELETE"]
        assert deletes == [("DELETE", f"/api/dashboards/uid/{GENERATED[2]}")]
        # The failure is in GET /api/status's result as well.
        assert sup.last_result is result
        assert result.to_dict()["post_apply"]["grafana-push-wrong-token"]["state"] == "failed"
    finally:
        await sup.stop()


def test_run_options_choose_the_hooks(tmp_path: Path) -> None:
    assert grafana_hooks(None) == []
    names = [n for n, _ in grafana_hooks(tmp_path, url="http://grafana:3000", token="t")]
    assert names == ["grafana-provision", "grafana-push"]
    with pytest.raises(
        ValueError,
        match=r"^--grafana-push http://grafana:3000: GRAFANA_TOKEN \(a service account token\) is not set$",
    ):
        grafana_hooks(None, url="http://grafana:3000", token=None)


def test_cli_run_refuses_a_push_without_token(tmp_path: Path) -> None:
    flow = tmp_path / "klima.json"
    flow.write_text(json.dumps(flow_doc(write_registry(tmp_path), INFLUX)), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["run", str(flow), "--grafana-push", "http://grafana:3000"], env={"GRAFANA_TOKEN": ""}
    )
    assert result.exit_code == 2
    assert (
        "--grafana-push http://grafana:3000: GRAFANA_TOKEN (a service account token) is not set"
        in result.output
    )
