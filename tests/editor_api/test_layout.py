"""Box positions through the API: a file beside the flow, never the flow file, editors only."""

from __future__ import annotations

import json

from tests.editor_api.conftest import FLOW_A, Api, as_role

LAYOUT = {"positions": {"tick": {"x": 10.0, "y": 20.5}, "show": {"x": 300.0, "y": 20.0}}}


async def test_layout_is_empty_until_saved_then_read_back(api: Api) -> None:
    r = await api.client.get("/api/flows/a/layout", headers=as_role("reader"))
    assert (r.status_code, r.json()) == (200, {"positions": {}})

    r = await api.client.put("/api/flows/a/layout", json=LAYOUT, headers=as_role("editor"))
    assert (r.status_code, r.json()) == (200, LAYOUT)

    path = api.flow_dir / "a.layout.json"
    assert json.loads(path.read_text(encoding="utf-8")) == LAYOUT
    assert (api.flow_dir / "a.yaml").read_text(encoding="utf-8") == FLOW_A
    assert sorted(p.name for p in api.flow_dir.iterdir() if not p.name.startswith(".")) == [
        "a.layout.json",
        "a.yaml",
        "b.yaml",
    ]
    r = await api.client.get("/api/flows/a/layout", headers=as_role("reader"))
    assert (r.status_code, r.json()) == (200, LAYOUT)


async def test_saving_a_layout_neither_reloads_nor_changes_the_revision(api: Api) -> None:
    before = api.supervisor.revision
    r = await api.client.put("/api/flows/a/layout", json=LAYOUT, headers=as_role("admin"))
    assert r.status_code == 200
    assert api.supervisor.revision == before
    assert sorted(api.supervisor.flow_files()) == ["a", "b"]


async def test_a_new_layout_replaces_the_old_one(api: Api) -> None:
    await api.client.put("/api/flows/a/layout", json=LAYOUT, headers=as_role("editor"))
    second = {"positions": {"show": {"x": 1.0, "y": 2.0}}}
    r = await api.client.put("/api/flows/a/layout", json=second, headers=as_role("editor"))
    assert r.status_code == 200
    r = await api.client.get("/api/flows/a/layout", headers=as_role("reader"))
    assert r.json() == second


async def test_an_unreadable_layout_file_reads_as_empty(api: Api) -> None:
    (api.flow_dir / "a.layout.json").write_text("{not json", encoding="utf-8")
    r = await api.client.get("/api/flows/a/layout", headers=as_role("reader"))
    assert (r.status_code, r.json()) == (200, {"positions": {}})


async def test_layout_needs_a_token_and_saving_needs_the_editor_role(api: Api) -> None:
    assert (await api.client.get("/api/flows/a/layout")).status_code == 401
    assert (await api.client.put("/api/flows/a/layout", json=LAYOUT)).status_code == 401
    r = await api.client.put("/api/flows/a/layout", json=LAYOUT, headers=as_role("reader"))
    assert r.status_code == 403
    assert r.json()["detail"] == "this needs the editor role; reader-token has reader"
    assert not (api.flow_dir / "a.layout.json").exists()


async def test_layout_of_an_unknown_flow_is_404_and_writes_nothing(api: Api) -> None:
    r = await api.client.get("/api/flows/nope/layout", headers=as_role("reader"))
    assert (r.status_code, r.json()["detail"]) == (404, "no flow 'nope' is running")
    r = await api.client.put("/api/flows/nope/layout", json=LAYOUT, headers=as_role("editor"))
    assert r.status_code == 404
    assert not (api.flow_dir / "nope.layout.json").exists()


async def test_a_malformed_layout_is_refused(api: Api) -> None:
    bad = {"positions": {"tick": {"x": "left"}}}
    r = await api.client.put("/api/flows/a/layout", json=bad, headers=as_role("editor"))
    assert r.status_code == 422
    assert not (api.flow_dir / "a.layout.json").exists()
