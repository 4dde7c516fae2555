"""The HTTP push against a loopback server answering as Grafana's documented API does."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from engine.cli import cli
from grafana_provisioning.provision import generate
from grafana_provisioning.push import Change, PushError, folder_uid, push
from tests.grafana_provisioning.helpers import flow_doc, validated, write_registry
from tests.services.grafana_fake import GrafanaFake

PASSWORD = "pa55-Wort-geheim"
GRAFANA_TOKEN = "glsa_sehr-geheim"
V1_AUTH = {
    "url": "http://influxdb:8086",
    "database": "klima",
    "username": "grafana",
    "password": "${INFLUX_PASSWORD}",
}
UIDS = ["klima-store-boden-8d4a6aaf", "klima-store-wetter-d4f9d8d6", "klima-store-funk-d34293ae"]
TITLES = ["Klimasensoren: Boden", "Klimasensoren: Wetter", "Klimasensoren: Funk"]
DS_UID = "influx-influx-8622a406"
ENV = {"INFLUX_PASSWORD": PASSWORD}
BEARER = f"Bearer {GRAFANA_TOKEN}"


@pytest.fixture
def fake() -> Iterator[GrafanaFake]:
    f = GrafanaFake(token=GRAFANA_TOKEN, basic=("admin", "admin-pw")).start()
    yield f
    f.stop()


def _doc(tmp_path: Path, *, radio: bool = True) -> dict[str, Any]:
    doc = flow_doc(write_registry(tmp_path), V1_AUTH)
    doc["nodes"][0]["radio"] = radio
    return doc


def _calls(fake: GrafanaFake) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests]


async def test_first_push_creates_folder_datasource_and_dashboards_with_exact_requests(
    tmp_path: Path, fake: GrafanaFake
) -> None:
    prov = generate(validated(_doc(tmp_path), ENV))
    changes = await push(prov, fake.url, GRAFANA_TOKEN, environ=ENV)

    assert changes == [
        Change("folder", "klima", "created"),
        Change("datasource", "klimaflow influx", "created"),
        *(Change("dashboard", t, "created") for t in TITLES),
    ]
    fuid = folder_uid("klima")
    assert _calls(fake) == [
        ("GET", f"/api/folders/{fuid}"),
        ("POST", "/api/folders"),
        ("GET", f"/api/datasources/uid/{DS_UID}"),
        ("POST", "/api/datasources"),
        *(
            call
            for uid in UIDS
            for call in (("GET", f"/api/dashboards/uid/{uid}"), ("POST", "/api/dashboards/db"))
        ),
        ("GET", "/api/search"),  # prune: klimaflow's dashboards, none stale
    ]
    assert fake.requests[-1].query == {"tag": ["klimaflow"], "type": ["dash-db"], "limit": ["5000"]}
    assert {r.headers["authorization"] for r in fake.requests} == {BEARER}
    writes = fake.writes()
    assert writes[0].body == {"title": "klima", "uid": fuid}
    assert writes[1].body == {
        "name": "klimaflow influx",
        "type": "influxdb",
        "uid": DS_UID,
        "access": "proxy",
        "url": "http://influxdb:8086",
        "jsonData": {"version": "InfluxQL", "dbName": "klima", "httpMode": "POST"},
        "user": "grafana",
        "secureJsonData": {"password": PASSWORD},
    }
    for req, d in zip(writes[2:], prov.dashboards, strict=True):
        expected = d.to_json()
        assert req.body["folderUid"] == fuid
        assert req.body["overwrite"] is True
        sent = req.body["dashboard"]
        assert sent["uid"] == d.uid
        assert sent["title"] == d.title
        assert sent["id"] is None
        assert sent["panels"] == expected["panels"]
        assert [p["id"] for p in sent["panels"]] == list(range(1, len(expected["panels"]) + 1))
    assert [d["uid"] for d, _ in fake.dashboards.values()] == UIDS
    assert fake.datasources[DS_UID]["secureJsonData"] == {"password": PASSWORD}


async def test_second_push_of_unchanged_flows_sends_no_writes(tmp_path: Path, fake: GrafanaFake) -> None:
    prov = generate(validated(_doc(tmp_path), ENV))
    await push(prov, fake.url, GRAFANA_TOKEN, environ=ENV)
    fake.requests.clear()

    changes = await push(prov, fake.url, GRAFANA_TOKEN, environ=ENV)

    assert [c.action for c in changes] == ["unchanged"] * 5
    assert fake.writes() == []
    assert [r.method for r in fake.requests] == ["GET"] * 6


async def test_changed_flow_updates_exactly_one_dashboard(tmp_path: Path, fake: GrafanaFake) -> None:
    doc = _doc(tmp_path)
    pegel = {
        "id": "pegel",
        "type": "influxdb-out",
        "server": "influx",
        "measurement": "pegel",
        "fields": {"level": "payload.level"},
    }
    doc["nodes"].append(pegel)
    await push(generate(validated(doc, ENV)), fake.url, GRAFANA_TOKEN, environ=ENV)
    assert len(fake.dashboards) == 4
    pegel_uid = list(fake.dashboards)[3]
    fake.requests.clear()

    pegel["fields"] = {"level": "payload.level", "water_temp": "payload.temp"}
    changes = await push(generate(validated(doc, ENV)), fake.url, GRAFANA_TOKEN, environ=ENV)

    assert changes == [
        Change("folder", "klima", "unchanged"),
        Change("datasource", "klimaflow influx", "unchanged"),
        *(Change("dashboard", t, "unchanged") for t in TITLES),
        Change("dashboard", "Klimasensoren: pegel", "updated"),
    ]
    assert [(r.method, r.path) for r in fake.writes()] == [("POST", "/api/dashboards/db")]
    sent = fake.writes()[0].body["dashboard"]
    assert sent["uid"] == pegel_uid
    assert [p["title"] for p in sent["panels"]] == [
        "level",
        "level (aktuell)",
        "water_temp",
        "water_temp (aktuell)",
    ]
    assert fake.dashboards[pegel_uid][0]["version"] == 2


async def test_dashboard_edited_in_grafana_is_put_back(tmp_path: Path, fake: GrafanaFake) -> None:
    prov = generate(validated(_doc(tmp_path), ENV))
    await push(prov, fake.url, GRAFANA_TOKEN, environ=ENV)
    fake.dashboards[UIDS[1]][0]["panels"][0]["title"] = "von Hand geändert"
    fake.requests.clear()

    changes = await push(prov, fake.url, GRAFANA_TOKEN, environ=ENV)

    assert [c.action for c in changes] == ["unchanged", "unchanged", "unchanged", "updated", "unchanged"]
    assert fake.dashboards[UIDS[1]][0]["panels"][0]["title"] == "Lufttemperatur"


async def test_basic_auth_is_sent_as_basic_header(tmp_path: Path, fake: GrafanaFake) -> None:
    prov = generate(validated(_doc(tmp_path), ENV))
    changes = await push(prov, fake.url, ("admin", "admin-pw"), environ=ENV)
    assert len(changes) == 5
    expected = "Basic " + base64.b64encode(b"admin:admin-pw").decode()
    assert {r.headers["authorization"] for r in fake.requests} == {expected}


async def test_wrong_token_is_a_clear_error_and_nothing_written(tmp_path: Path, fake: GrafanaFake) -> None:
    prov = generate(validated(_doc(tmp_path), ENV))
    with pytest.raises(PushError) as err:
        await push(prov, fake.url, "falsch", environ=ENV)
    assert str(err.value) == f"Grafana at {fake.url} refused the credentials (401 Unauthorized)"
    assert _calls(fake) == [("GET", f"/api/folders/{folder_uid('klima')}")]


async def test_viewer_token_gets_403_with_grafanas_message(tmp_path: Path, fake: GrafanaFake) -> None:
    fake.viewer_token = "viewer"
    prov = generate(validated(_doc(tmp_path), ENV))
    with pytest.raises(PushError) as err:
        await push(prov, fake.url, "viewer", environ=ENV)
    assert str(err.value) == (
        f"Grafana at {fake.url} answered 403: You'll need additional permissions to perform this action. "
        "Permissions needed: folders:create"
    )


def test_fake_answers_dashboard_conflicts_as_documented(fake: GrafanaFake) -> None:
    """Without overwrite, a stale version is 412 version-mismatch and a taken title 412 name-exists."""
    headers = {"Authorization": BEARER}
    with httpx.Client(base_url=fake.url, headers=headers) as c:
        first = c.post("/api/dashboards/db", json={"dashboard": {"uid": "a", "title": "T"}, "folderUid": "f"})
        assert first.json()["version"] == 1
        stale = c.post("/api/dashboards/db", json={"dashboard": {"uid": "a", "title": "T", "version": 0}})
        assert (stale.status_code, stale.json()["status"]) == (412, "version-mismatch")
        taken = c.post("/api/dashboards/db", json={"dashboard": {"uid": "b", "title": "T"}, "folderUid": "f"})
        assert (taken.status_code, taken.json()["status"]) == (412, "name-exists")
        current = c.post(
            "/api/dashboards/db",
            json={"dashboard": {"uid": "a", "title": "T", "version": 1}, "folderUid": "f"},
        )
        assert current.json()["version"] == 2
        assert c.get("/api/dashboards/uid/zzz").status_code == 404
        assert httpx.get(f"{fake.url}/api/folders/x").status_code == 401


async def test_unreachable_grafana_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prov = generate(validated(_doc(tmp_path), ENV))
    with pytest.raises(PushError) as err:
        await push(prov, f"http://127.0.0.1:{port}", GRAFANA_TOKEN, environ=ENV, timeout=2)
    assert str(err.value) == f"cannot reach Grafana at http://127.0.0.1:{port}: ConnectionError"


async def test_missing_secret_variable_is_named_and_nothing_written(
    tmp_path: Path, fake: GrafanaFake
) -> None:
    prov = generate(validated(_doc(tmp_path), ENV))
    with pytest.raises(PushError) as err:
        await push(prov, fake.url, GRAFANA_TOKEN, environ={})
    assert (
        str(err.value)
        == "datasource klimaflow influx: environment variable INFLUX_PASSWORD (password) is not set"
    )
    assert fake.datasources == {}


def test_cli_push_prints_summary_twice_and_never_the_secrets(tmp_path: Path, fake: GrafanaFake) -> None:
    flow = tmp_path / "klima.json"
    flow.write_text(json.dumps(_doc(tmp_path)), encoding="utf-8")
    env = {**ENV, "GRAFANA_TOKEN": GRAFANA_TOKEN}
    args = ["grafana", "push", str(flow), "--url", fake.url, "--token-env", "GRAFANA_TOKEN"]
    runner = CliRunner()
    first = runner.invoke(cli, args, env=env)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        "created\tfolder\tklima",
        "created\tdatasource\tklimaflow influx",
        *(f"created\tdashboard\t{t}" for t in TITLES),
    ]
    assert first.stderr.strip() == "5 created, 0 updated, 0 unchanged, 0 deleted"
    again = runner.invoke(cli, args, env=env)
    assert again.exit_code == 0, again.output
    assert again.stderr.strip() == "0 created, 0 updated, 5 unchanged, 0 deleted"
    for out in (first.output, again.output):
        assert PASSWORD not in out
        assert GRAFANA_TOKEN not in out


def test_cli_push_wrong_token_is_one_line_and_exit_1(tmp_path: Path, fake: GrafanaFake) -> None:
    flow = tmp_path / "klima.json"
    flow.write_text(json.dumps(_doc(tmp_path)), encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["grafana", "push", str(flow), "--url", fake.url, "--token-env", "GT"],
        env={**ENV, "GT": "falsch"},
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"klimaflow: error: Grafana at {fake.url} refused the credentials (401 Unauthorized)"
    ]


async def test_prune_deletes_only_klimaflows_stale_dashboards(tmp_path: Path, fake: GrafanaFake) -> None:
    prov = generate(validated(_doc(tmp_path), ENV))
    await push(prov, fake.url, GRAFANA_TOKEN, environ=ENV)
    fuid = folder_uid("klima")
    # Others' dashboards: untagged in klimaflow's folder, tagged "klimaflow" in a hand-made folder.
    fake.folders["team"] = {
        "id": 90,
        "uid": "team",
        "title": "Team",
        "version": 1,
        "url": "/dashboards/f/team/",
    }
    others = {
        "hand-made": ({"id": 91, "uid": "hand-made", "title": "Handarbeit", "tags": [], "version": 1}, fuid),
        "look-alike": (
            {"id": 92, "uid": "look-alike", "title": "Kopie", "tags": ["klimaflow"], "version": 1},
            "team",
        ),
    }
    fake.dashboards.update(others)
    fake.requests.clear()

    changes = await push(
        generate(validated(_doc(tmp_path, radio=False), ENV)), fake.url, GRAFANA_TOKEN, environ=ENV
    )

    assert changes[-1] == Change("dashboard", "Klimasensoren: Funk", "deleted")
    assert [c.action for c in changes[:-1]] == ["unchanged"] * 4
    assert [(r.method, r.path) for r in fake.writes()] == [("DELETE", f"/api/dashboards/uid/{UIDS[2]}")]
    assert sorted(fake.dashboards) == sorted([*UIDS[:2], "hand-made", "look-alike"])


async def test_no_prune_leaves_stale_dashboards(tmp_path: Path, fake: GrafanaFake) -> None:
    await push(generate(validated(_doc(tmp_path), ENV)), fake.url, GRAFANA_TOKEN, environ=ENV)
    fake.requests.clear()
    changes = await push(
        generate(validated(_doc(tmp_path, radio=False), ENV)),
        fake.url,
        GRAFANA_TOKEN,
        environ=ENV,
        prune=False,
    )
    assert "deleted" not in [c.action for c in changes]
    assert fake.writes() == []
    assert "/api/search" not in [r.path for r in fake.requests]
    assert sorted(fake.dashboards) == sorted(UIDS)


def test_cli_push_no_prune_counts_without_deleted(tmp_path: Path, fake: GrafanaFake) -> None:
    flow = tmp_path / "klima.json"
    flow.write_text(json.dumps(_doc(tmp_path)), encoding="utf-8")
    args = ["grafana", "push", str(flow), "--url", fake.url, "--token-env", "GT", "--no-prune"]
    result = CliRunner().invoke(cli, args, env={**ENV, "GT": GRAFANA_TOKEN})
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "5 created, 0 updated, 0 unchanged"
