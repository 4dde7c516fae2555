"""Flows through the API: read as written, validate, deploy (real files, real reloads), conflicts."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import cli
from tests.editor_api.conftest import FLOW_A, SECRET, Api, as_role

YAML = "application/yaml"


def files(flow_dir: Path) -> dict[str, str]:
    return {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted(flow_dir.iterdir())
        if not p.name.startswith(".")
    }


async def revision(api: Api) -> str:
    r = await api.client.get("/api/flows", headers=as_role("reader"))
    assert r.status_code == 200
    rev = r.json()["revision"]
    assert rev == api.supervisor.revision
    return str(rev)


async def test_list_flows_returns_documents_as_written_with_revision(api: Api) -> None:
    r = await api.client.get("/api/flows", headers=as_role("reader"))
    assert r.status_code == 200
    body = r.json()
    assert body["revision"] == api.supervisor.revision
    assert r.headers["etag"] == f'"{api.supervisor.revision}"'
    by_id = {f["id"]: f for f in body["flows"]}
    assert sorted(by_id) == ["a", "b"]
    assert by_id["a"]["text"] == FLOW_A  # comments and all
    assert by_id["a"]["file"] == "a.yaml"
    # The reference as written, never the resolved value.
    assert by_id["b"]["document"]["connections"]["store"]["password"] == "${INFLUX_PASSWORD}"
    assert SECRET not in r.text


async def test_get_one_flow_and_404(api: Api) -> None:
    r = await api.client.get("/api/flows/a", headers=as_role("reader"))
    assert r.status_code == 200
    assert r.json()["document"]["nodes"][0]["id"] == "tick"
    assert r.json()["revision"] == api.supervisor.revision
    r = await api.client.get("/api/flows/nope", headers=as_role("reader"))
    assert r.status_code == 404
    assert r.json() == {"detail": "no flow 'nope' is running"}


async def test_deploy_with_stale_revision_is_409_and_changes_nothing(api: Api) -> None:
    before = files(api.flow_dir)
    running = api.supervisor.revision
    r = await api.client.post(
        "/api/deploy",
        headers=as_role("admin"),
        json={"revision": "0000000000000000", "flows": [{"text": FLOW_A.replace("21.5", "30")}]},
    )
    assert r.status_code == 409
    body = r.json()
    assert body["revision"] == running
    assert body["base_revision"] == "0000000000000000"
    assert "reload the flows" in body["detail"]
    assert files(api.flow_dir) == before
    assert api.supervisor.revision == running


async def test_deploy_writes_the_file_and_the_engine_runs_the_new_revision(api: Api) -> None:
    rev = await revision(api)
    new_text = FLOW_A.replace("payload: {temperature: 21.5}", "payload: {temperature: 30}")
    r = await api.client.post(
        "/api/deploy", headers=as_role("admin"), json={"revision": rev, "flows": [{"text": new_text}]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True
    assert body["revision"] == api.supervisor.revision != rev
    assert body["result"]["diff"]["changed"] == ["tick"]
    assert (api.flow_dir / "a.yaml").read_text(encoding="utf-8") == new_text
    # The running engine has the new config, and the old revision is now stale.
    assert api.supervisor.engine is not None
    assert api.supervisor.engine.runtimes["tick"].node.config.payload == {"temperature": 30}  # type: ignore[attr-defined]
    again = await api.client.post(
        "/api/deploy", headers=as_role("admin"), json={"revision": rev, "flows": [{"text": FLOW_A}]}
    )
    assert again.status_code == 409


async def test_invalid_deploy_returns_the_cli_report_and_leaves_files_and_flows(api: Api) -> None:
    rev = await revision(api)
    before = files(api.flow_dir)
    bad = FLOW_A.replace("type: debug", "type: debgu")
    r = await api.client.post(
        "/api/deploy", headers=as_role("admin"), json={"revision": rev, "flows": [{"text": bad}]}
    )
    assert r.status_code == 422
    body = r.json()
    assert body["ok"] is False
    errors = [i for i in body["issues"] if i["severity"] == "error"]
    assert errors == [
        {
            "severity": "error",
            "message": "unknown node type 'debgu'; did you mean 'debug'?",
            "code": "unknown-type",
            "file": "a.yaml",
            "line": 11,
            "flow": "a",
            "node": "show",
            "connection": None,
            "field": "type",
        }
    ]
    assert body["summary"] == {
        "valid": False,
        "errors": 1,
        "warnings": body["summary"]["warnings"],
        "flows": 2,
        "nodes": 4,
        "load_errors": {},
    }
    assert files(api.flow_dir) == before
    assert api.supervisor.revision == rev
    assert api.supervisor.engine is not None
    assert api.supervisor.engine.runtimes["show"].spec.type == "debug"

    # The same issue, in the same shape, as `klimaflow validate --format json` prints for that file.
    (api.flow_dir.parent / "cli").mkdir()
    (api.flow_dir.parent / "cli" / "a.yaml").write_text(bad, encoding="utf-8")
    (api.flow_dir.parent / "cli" / "b.yaml").write_text(
        (api.flow_dir / "b.yaml").read_text(), encoding="utf-8"
    )
    out = CliRunner(env={"INFLUX_PASSWORD": SECRET}).invoke(
        cli, ["validate", "--format", "json", str(api.flow_dir.parent / "cli")]
    )
    cli_report = json.loads(out.stdout)
    cli_errors = [i for i in cli_report["issues"] if i["severity"] == "error"]
    assert [{**i, "file": Path(i["file"]).name} for i in cli_errors] == errors
    assert cli_report["summary"] == body["summary"]


async def test_put_yaml_keeps_comments_and_if_match_is_the_revision(api: Api) -> None:
    rev = await revision(api)
    text = FLOW_A.replace("# Flow A", "# Flow A (edited)").replace("21.5", "19")
    r = await api.client.put(
        "/api/flows/a",
        headers={**as_role("admin"), "Content-Type": YAML, "If-Match": f'"{rev}"'},
        content=text,
    )
    assert r.status_code == 200, r.text
    assert (api.flow_dir / "a.yaml").read_text(encoding="utf-8") == text
    got = await api.client.get("/api/flows/a", headers=as_role("reader"))
    assert got.json()["text"] == text
    assert got.json()["revision"] == r.json()["revision"]


async def test_put_json_document_and_rename_in_place(api: Api) -> None:
    rev = await revision(api)
    doc = {
        "id": "a",
        "nodes": [{"id": "tick", "type": "inject", "wires": ["show"]}, {"id": "show", "type": "debug"}],
    }
    r = await api.client.put(
        "/api/flows/a", headers=as_role("admin"), json={"revision": rev, "document": doc}
    )
    assert r.status_code == 200, r.text
    assert api.supervisor.validated is not None
    flow = api.supervisor.validated.deployment.flow("a")
    assert flow is not None
    assert flow.document == doc
    # A document with another id renames the flow; it keeps its file.
    renamed = {**doc, "id": "a2"}
    r = await api.client.put(
        "/api/flows/a", headers=as_role("admin"), json={"revision": r.json()["revision"], "document": renamed}
    )
    assert r.status_code == 200, r.text
    assert api.supervisor.flow_files() == {"a2": api.flow_dir / "a.yaml", "b": api.flow_dir / "b.yaml"}
    r = await api.client.put(
        "/api/flows/a2",
        headers=as_role("admin"),
        json={"revision": r.json()["revision"], "id": "zz", "text": "id: zz"},
    )
    assert r.status_code == 400
    assert r.json() == {"detail": "id 'zz' does not match the URL's 'a2'"}


async def test_write_without_revision_is_428(api: Api) -> None:
    r = await api.client.put(
        "/api/flows/a", headers={**as_role("admin"), "Content-Type": YAML}, content=FLOW_A
    )
    assert r.status_code == 428


async def test_create_and_delete_a_flow(api: Api) -> None:
    rev = await revision(api)
    text = "# new\nid: c\nnodes:\n  - id: c-tick\n    type: inject\n    wires: [c-show]\n  - id: c-show\n    type: debug\n"
    r = await api.client.post(
        f"/api/flows?revision={rev}", headers={**as_role("admin"), "Content-Type": YAML}, content=text
    )
    assert r.status_code == 201, r.text
    assert (api.flow_dir / "c.yaml").read_text(encoding="utf-8") == text
    assert api.supervisor.engine is not None
    assert "c-tick" in api.supervisor.engine.runtimes
    # Creating it again is a conflict, not an overwrite.
    again = await api.client.post(
        f"/api/flows?revision={r.json()['revision']}",
        headers={**as_role("admin"), "Content-Type": YAML},
        content=text,
    )
    assert again.status_code == 409
    r = await api.client.delete(
        "/api/flows/c", headers={**as_role("admin"), "If-Match": r.json()["revision"]}
    )
    assert r.status_code == 200, r.text
    assert not (api.flow_dir / "c.yaml").exists()
    assert "c-tick" not in api.supervisor.engine.runtimes
    assert r.json()["result"]["diff"]["removed"] == ["c-show", "c-tick"]


async def test_create_refuses_to_overwrite_a_file_holding_another_flow(api: Api) -> None:
    (api.flow_dir / "x.yaml").write_text(FLOW_A.replace("Flow A", "Flow A in x.yaml"), encoding="utf-8")
    (api.flow_dir / "a.yaml").unlink()
    assert (await api.supervisor.reload("file")).ok
    assert api.supervisor.flow_files()["a"] == api.flow_dir / "x.yaml"
    rev = await revision(api)
    before = files(api.flow_dir)
    r = await api.client.post(
        "/api/flows",
        headers=as_role("admin"),
        json={"revision": rev, "document": {"id": "b", "nodes": []}},
    )
    assert r.status_code == 409  # b exists
    r = await api.client.post(
        "/api/flows",
        headers=as_role("admin"),
        json={"revision": rev, "text": "id: x\nnodes: []\n"},
    )
    assert r.status_code == 409
    assert r.json() == {"detail": "x.yaml holds flow a; flow x needs another file"}
    assert files(api.flow_dir) == before


async def test_full_deploy_deletes_flows_not_listed(api: Api) -> None:
    rev = await revision(api)
    r = await api.client.post(
        "/api/deploy",
        headers=as_role("admin"),
        json={"revision": rev, "mode": "full", "flows": [{"text": FLOW_A}]},
    )
    assert r.status_code == 200, r.text
    assert sorted(files(api.flow_dir)) == ["a.yaml"]
    assert api.supervisor.flow_files().keys() == {"a"}


async def test_validate_reports_without_deploying(api: Api) -> None:
    rev = await revision(api)
    before = files(api.flow_dir)
    r = await api.client.post(
        "/api/validate",
        headers={**as_role("editor"), "Content-Type": YAML},
        content=FLOW_A.replace("debug", "debgu"),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["summary"]["valid"] is False
    assert [i["code"] for i in body["issues"] if i["severity"] == "error"] == ["unknown-type"]
    ok = await api.client.post(
        "/api/validate", headers={**as_role("editor"), "Content-Type": YAML}, content=FLOW_A
    )
    assert ok.json()["summary"]["valid"] is True
    several = await api.client.post(
        "/api/validate", headers=as_role("editor"), json={"mode": "full", "flows": [{"text": FLOW_A}]}
    )
    assert several.json()["summary"] == {
        "valid": True,
        "errors": 0,
        "warnings": 0,
        "flows": 1,
        "nodes": 2,
        "load_errors": {},
    }
    assert files(api.flow_dir) == before
    assert api.supervisor.revision == rev


async def test_yaml_syntax_error_is_a_located_422(api: Api) -> None:
    rev = await revision(api)
    r = await api.client.put(
        "/api/flows/a",
        headers={**as_role("admin"), "Content-Type": YAML, "If-Match": rev},
        content="id: a\nnodes:\n  - id: x\n   type: [\n",
    )
    assert r.status_code == 422
    issue = r.json()["issues"][0]
    assert issue["code"] == "load"
    assert issue["file"] == "a.yaml"
    assert issue["line"] == 4


async def test_malformed_and_large_bodies_are_clear_4xx(api: Api) -> None:
    rev = await revision(api)
    r = await api.client.post(
        "/api/deploy", headers={**as_role("admin"), "Content-Type": "application/json"}, content=b"{nope"
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("request body is not valid JSON")
    r = await api.client.put(
        "/api/flows/a", headers={**as_role("admin"), "Content-Type": "application/json"}, content=b"[1, 2"
    )
    assert r.status_code == 400
    r = await api.client.put(
        "/api/flows/a", headers={**as_role("admin"), "Content-Type": "text/csv"}, content=b"a,b"
    )
    assert r.status_code == 415
    r = await api.client.post(
        "/api/deploy", headers=as_role("admin"), json={"revision": rev, "flows": "nope"}
    )
    assert r.status_code == 422
    r = await api.client.post(
        "/api/deploy", headers={**as_role("admin"), "Content-Type": YAML}, content=b"revision: x"
    )
    assert r.status_code == 415
    assert r.json() == {
        "detail": "send this body as JSON (Content-Type: application/json), not application/yaml"
    }
    r = await api.client.post(
        "/api/deploy",
        headers=as_role("admin"),
        json={"revision": rev, "flows": [{"id": "../../etc/x", "text": "nodes: []"}]},
    )
    assert r.status_code == 400
    assert "invalid flow id" in r.json()["detail"]
    big = "# " + "x" * (1024 * 1024) + "\n" + FLOW_A
    r = await api.client.put(
        "/api/flows/a", headers={**as_role("admin"), "Content-Type": YAML, "If-Match": rev}, content=big
    )
    assert r.status_code == 413
    assert (api.flow_dir / "a.yaml").read_text(encoding="utf-8") == FLOW_A
    assert sorted(p.name for p in api.flow_dir.iterdir()) == ["a.yaml", "b.yaml"]  # no temp files left
