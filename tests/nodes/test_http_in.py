"""http-in and http-response, served by the real editor API (uvicorn on a free port) over a real
Supervisor and Engine; live reloads add and remove endpoints."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import nodes.http
from engine.message import Message
from engine.supervisor import Supervisor
from tests.editor_api.test_cli_api import _read_until, _start
from tests.flowkit import CollectNode, test_registry, validate_doc
from tests.services.api import api_server

IMPORT_TOKEN = "imp-0123456789abcdef"
EDITOR = "kf_editor-token-0123456789abcdef"
READER = "kf_reader-token-0123456789abcdef"

IMPORT_FLOW = """\
id: imports
nodes:
  - id: import-in
    type: http-in
    path: /api/v1/import/{name}
    auth: token
    token: ${IMPORT_TOKEN}
    max_body: 64
    wires: [import-seen]
  - id: import-seen
    type: collect
"""

ECHO_FLOW = """\
id: echo
nodes:
  - id: echo-in
    type: http-in
    method: PUT
    path: /hooks/echo/{box}
    role: editor
    wires: [echo-seen, echo-out]
  - id: echo-seen
    type: collect
  - id: big-in
    type: http-in
    path: /hooks/big
    max_body: 3000000
    wires: [big-seen]
  - id: big-seen
    type: collect
  - id: echo-out
    type: http-response
    status: 201
    headers: {X-Flow: echo}
"""

#: A request held longer than the response timeout, and one dropped by a filter.
SLOW_FLOW = """\
id: slow
nodes:
  - id: slow-in
    type: http-in
    path: /hooks/slow
    response_timeout: 300ms
    wires: [slow-wait]
  - id: slow-wait
    type: delay
    delay: 3s
    wires: [slow-out]
  - id: slow-out
    type: http-response
  - id: drop-in
    type: http-in
    path: /hooks/drop
    wires: [drop-filter]
  - id: drop-filter
    type: switch
    rules: [{port: keep, property: payload.keep, op: eq, value: true}]
    wires: {keep: [drop-out]}
  - id: drop-out
    type: http-response
"""


#: Errors: one answered by a catch node with 422, one nobody handles (500 with the reason).
ERRORS_FLOW = """\
id: errs
nodes:
  - id: render-in
    type: http-in
    path: /hooks/render
    wires: [render]
  - id: render
    type: template
    template: "Bodenfeuchte {{ payload.value }} %"
    wires: [render-out]
  - id: render-out
    type: http-response
  - id: render-caught
    type: catch
    scope: [render]
    wires: [render-error-out]
  - id: render-error-out
    type: http-response
    status: 422
  - id: fail-in
    type: http-in
    path: /hooks/fail
    wires: [fail-render]
  - id: fail-render
    type: template
    template: "{{ payload.value }}"
    wires: [fail-out]
  - id: fail-out
    type: http-response
"""


@dataclass
class Served:
    supervisor: Supervisor
    client: httpx.AsyncClient
    flow_dir: Path

    def received(self, node_id: str) -> list[Message]:
        assert self.supervisor.engine is not None
        node = self.supervisor.engine.node(node_id)
        assert isinstance(node, CollectNode)
        return node.messages


async def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    flow_dir = tmp_path / "flows"
    flow_dir.mkdir()
    (flow_dir / "imports.yaml").write_text(IMPORT_FLOW)
    (flow_dir / "echo.yaml").write_text(ECHO_FLOW)
    (flow_dir / "slow.yaml").write_text(SLOW_FLOW)
    (flow_dir / "errs.yaml").write_text(ERRORS_FLOW)
    sup = Supervisor(
        [flow_dir],
        data_dir=tmp_path / "data",
        drain_timeout=1.0,
        registry=test_registry(),
        environ={"IMPORT_TOKEN": IMPORT_TOKEN},
    )
    await sup.start()
    try:
        async with (
            api_server(sup, {"editor": EDITOR, "reader": READER}) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        ):
            yield Served(sup, client, flow_dir)
    finally:
        await sup.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_endpoint_accepts_json_and_answers_202_without_http_response(served: Served) -> None:
    url = "/api/v1/import/groundwater?source=repo&source=manual"
    r = await served.client.post(url, json={"file": "Wasserstand.csv"})
    assert (r.status_code, r.json()) == (401, {"detail": "POST /api/v1/import/{name}: no bearer token"})
    assert r.headers["www-authenticate"] == "Bearer"
    r = await served.client.post(url, json={"file": "x"}, headers=bearer("imp-wrong"))
    assert (r.status_code, r.json()) == (401, {"detail": "POST /api/v1/import/{name}: wrong token"})
    # An editor API token is not the endpoint's token.
    r = await served.client.post(url, json={"file": "x"}, headers=bearer(EDITOR))
    assert r.status_code == 401
    assert served.received("import-seen") == []

    r = await served.client.post(
        url, json={"file": "Wasserstand.csv"}, headers={**bearer(IMPORT_TOKEN), "X-Repo": "klima-dashboard"}
    )
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] is True
    await wait_until(lambda: len(served.received("import-seen")) == 1)
    [msg] = served.received("import-seen")
    assert msg.id == body["id"]
    assert msg.payload == {"file": "Wasserstand.csv"}
    http = msg.meta["http"]
    assert (http["method"], http["path"], http["params"]) == (
        "POST",
        "/api/v1/import/groundwater",
        {"name": "groundwater"},
    )
    assert http["query"] == {"source": ["repo", "manual"]}
    assert http["headers"]["x-repo"] == "klima-dashboard"
    assert http["headers"]["content-type"] == "application/json"
    assert "authorization" not in http["headers"]
    assert len(http["request_id"]) == 32


async def test_body_size_content_types_and_methods(served: Served) -> None:
    url = "/api/v1/import/dwd"
    auth = bearer(IMPORT_TOKEN)
    r = await served.client.post(url, content=b"x" * 65, headers=auth)
    assert (r.status_code, r.text) == (413, "Content Too Large")

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b"x" * 40
        yield b"x" * 40

    r = await served.client.post(url, content=body(), headers=auth)
    assert (r.status_code, r.json()) == (413, {"detail": "request body larger than 64 bytes"})
    r = await served.client.post(url, content=b'{"a": ', headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("request body is not valid JSON: ")
    r = await served.client.post(
        url,
        content="Größe;1".encode("latin-1"),
        headers={**auth, "Content-Type": "text/csv; charset=latin-1"},
    )
    assert r.status_code == 202
    r = await served.client.post(
        url, content=b"\x00\x01", headers={**auth, "Content-Type": "application/zip"}
    )
    assert r.status_code == 202
    r = await served.client.post(url, data={"file": ["a.csv", "b.csv"], "note": ""}, headers=auth)
    assert r.status_code == 202
    r = await served.client.get(url, headers=auth)
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    await wait_until(lambda: len(served.received("import-seen")) == 3)
    assert [m.payload for m in served.received("import-seen")] == [
        "Größe;1",
        b"\x00\x01",
        {"file": ["a.csv", "b.csv"], "note": ""},
    ]


async def test_api_auth_roles_and_http_response(served: Served) -> None:
    url = "/hooks/echo/raben"
    r = await served.client.put(url, json={"temp": 21.5})
    assert r.status_code == 401
    r = await served.client.put(url, json={"temp": 21.5}, headers=bearer(READER))
    assert (r.status_code, r.json()) == (403, {"detail": "this needs the editor role; reader has reader"})
    r = await served.client.put(url, json={"temp": 21.5}, headers=bearer(EDITOR))
    assert r.status_code == 201
    assert r.json() == {"temp": 21.5}
    assert r.headers["x-flow"] == "echo"
    assert r.headers["content-type"] == "application/json"
    [msg] = served.received("echo-seen")
    assert msg.meta["http"]["params"] == {"box": "raben"}
    # An endpoint's max_body overrides the editor API's 1 MiB limit for flow files.
    big = bytes(range(256)) * 8000  # 2 048 000 bytes
    r = await served.client.post("/hooks/big", content=big, headers=bearer(EDITOR))
    assert r.status_code == 202
    await wait_until(lambda: len(served.received("big-seen")) == 1)
    assert served.received("big-seen")[0].payload == big
    r = await served.client.post("/hooks/big", content=big + big, headers=bearer(EDITOR))
    assert (r.status_code, r.text) == (413, "Content Too Large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(4):
            yield big

    r = await served.client.post("/hooks/big", content=chunks(), headers=bearer(EDITOR))
    assert (r.status_code, r.json()) == (413, {"detail": "request body larger than 3000000 bytes"})
    # The editor API's own routes are untouched.
    r = await served.client.get("/api/status", headers=bearer(READER))
    assert r.status_code == 200


async def test_504_when_no_answer_in_time_and_500_when_the_flow_drops_the_request(served: Served) -> None:
    r = await served.client.post("/hooks/slow", headers=bearer(EDITOR), json={})
    assert (r.status_code, r.json()) == (504, {"detail": "no http-response answered within 0.3s"})
    r = await served.client.post("/hooks/drop", headers=bearer(EDITOR), json={"keep": False})
    assert r.status_code == 500
    assert r.json() == {"detail": "the flow finished without answering (the message was dropped or filtered)"}
    r = await served.client.post("/hooks/drop", headers=bearer(EDITOR), json={"keep": True})
    assert (r.status_code, r.json()) == (200, {"keep": True})


async def test_errors_answered_by_a_catch_node_or_as_500_with_the_reason(served: Served) -> None:
    r = await served.client.post("/hooks/render", headers=bearer(EDITOR), json={"value": 11.36})
    assert (r.status_code, r.text) == (200, "Bodenfeuchte 11.36 %")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    r = await served.client.post("/hooks/render", headers=bearer(EDITOR), json={"wert": 11.36})
    assert (r.status_code, r.json()) == (422, {"wert": 11.36})
    r = await served.client.post("/hooks/fail", headers=bearer(EDITOR), json={"wert": 11.36})
    assert r.status_code == 500
    assert r.json() == {
        "detail": "the flow finished without answering: fail-render: ExpressionError: "
        "template render failed at line 1: 'dict object' has no attribute 'value'"
    }


async def test_endpoints_follow_live_reloads(served: Served) -> None:
    url = "/api/v1/import/groundwater"
    assert (await served.client.post(url, json={}, headers=bearer(IMPORT_TOKEN))).status_code == 202
    (served.flow_dir / "imports.yaml").unlink()
    result = await served.supervisor.reload()
    assert result.ok, result.message
    assert result.diff is not None
    assert "import-in" in result.diff.removed
    r = await served.client.post(url, json={}, headers=bearer(IMPORT_TOKEN))
    assert r.status_code == 404

    # Back, on another path.
    (served.flow_dir / "imports.yaml").write_text(IMPORT_FLOW.replace("/api/v1/import/", "/api/v1/load/"))
    result = await served.supervisor.reload()
    assert result.ok, result.message
    assert (await served.client.post(url, json={}, headers=bearer(IMPORT_TOKEN))).status_code == 404
    r = await served.client.post("/api/v1/load/dwd", json={}, headers=bearer(IMPORT_TOKEN))
    assert r.status_code == 202


def test_path_and_token_validation() -> None:
    def errors(node: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
        doc = {"id": "f", "nodes": [{"id": "in", "type": "http-in", **node}]}
        _v, issues = validate_doc(doc, environ=environ)
        return [i.message for i in issues if i.severity == "error"]

    assert errors({"path": "/api/v1/import/{name}", "auth": "token", "token": "${T}"}, {"T": "x" * 20}) == []
    [msg] = errors({"path": "/api/flows"})
    assert "path '/api/flows' belongs to the editor API; use a path under /api/v1/" in msg
    [msg] = errors({"path": "/api/v1/x", "auth": "token"})
    assert "auth: token needs a non-empty token (e.g. token: ${IMPORT_TOKEN})" in msg
    [msg] = errors({"path": "/api/v1/x", "auth": "token", "token": "written-into-the-file"})
    assert "secrets must not be written into flow files" in msg


async def test_without_the_api_server_the_node_says_it_needs_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.collect()  # API apps of earlier tests are stopped; make sure none is counted
    monkeypatch.setattr(nodes.http, "SERVER_GRACE", 0.2)
    flow_dir = tmp_path / "flows"
    flow_dir.mkdir()
    (flow_dir / "imports.yaml").write_text(IMPORT_FLOW)
    sup = Supervisor(
        [flow_dir], data_dir=tmp_path / "data", registry=test_registry(), environ={"IMPORT_TOKEN": "t" * 16}
    )
    await sup.start()
    try:
        assert sup.engine is not None
        rt = sup.engine.runtimes["import-in"]
        await wait_until(lambda: rt.status.level == "error")
        assert rt.status.text == (
            "POST /api/v1/import/{name} is not served: http-in needs the editor API's HTTP server, "
            "run klimaflow with --api HOST:PORT"
        )
    finally:
        await sup.stop()


def test_klimaflow_run_with_api_serves_the_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real command: `klimaflow run FLOW --api`, a POST from outside, the message in the log."""
    (tmp_path / "imports.yaml").write_text(
        IMPORT_FLOW.replace("type: collect", "type: debug"), encoding="utf-8"
    )
    monkeypatch.setenv("IMPORT_TOKEN", IMPORT_TOKEN)  # inherited by the process _start launches
    proc = _start(tmp_path, "imports.yaml", "--api", "127.0.0.1:0")
    try:
        m, _seen = _read_until(proc, r"editor API on (http://\S+)")
        r = httpx.post(
            f"{m.group(1)}/api/v1/import/groundwater", json={"n": 1}, headers=bearer(IMPORT_TOKEN), timeout=10
        )
        assert r.status_code == 202
        _m, seen = _read_until(proc, r"node\.import-seen: \[/api/v1/import/groundwater\] \{\"n\": 1\}")
        assert "is not served" not in seen
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


async def test_two_nodes_on_one_endpoint_first_answers_and_the_conflict_is_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    (served.flow_dir / "twin.yaml").write_text(
        IMPORT_FLOW.replace("id: imports", "id: twin").replace("import-", "twin-"), encoding="utf-8"
    )
    result = await served.supervisor.reload()
    assert result.ok, result.message
    r = await served.client.post("/api/v1/import/dwd", json={}, headers=bearer(IMPORT_TOKEN))
    assert r.status_code == 202
    await wait_until(lambda: len(served.received("import-seen")) == 1)
    assert served.received("twin-seen") == []
    assert (
        "http-in nodes import-in and twin-in both serve POST /api/v1/import/dwd; import-in answers"
        in caplog.messages
    )
