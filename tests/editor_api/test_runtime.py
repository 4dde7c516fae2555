"""The running engine through the API: node types, status, inject, live events (over a real
uvicorn server: httpx's ASGI transport buffers whole responses), debug switches, metrics, readiness."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from editor_api import create_app
from editor_api.server import ApiServer, bind
from engine.node import NodeStatus
from engine.supervisor import Supervisor
from nodes.debug import DebugNode
from nodes.influxdb import InfluxOutNode
from tests.editor_api.conftest import ENVIRON, FLOW_A, SECRET, TOKENS, Api, as_role


async def test_node_types_with_config_schema(api: Api) -> None:
    r = await api.client.get("/api/nodes", headers=as_role("reader"))
    assert r.status_code == 200
    nodes = {n["type"]: n for n in r.json()["nodes"]}
    inject = nodes["inject"]
    assert inject["summary"] == "Inject a message on start, every interval, on a cron schedule, or by button."
    assert inject["inputs"] == 0
    assert inject["outputs"] == ["out"]
    assert inject["config_schema"]["properties"]["once"]["type"] == "boolean"
    assert inject["config_schema"]["additionalProperties"] is False
    assert nodes["debug"]["outputs"] == []
    assert "influxdb" in [c["type"] for c in r.json()["connections"]]


async def test_inject_runs_the_flow_and_status_counts_it(api: Api) -> None:
    r = await api.client.post("/api/inject/tick", headers=as_role("admin"), json={"payload": {"n": 7}})
    assert r.status_code == 200
    assert api.supervisor.engine is not None
    assert await api.supervisor.engine.wait_idle(5)
    status = (await api.client.get("/api/status", headers=as_role("reader"))).json()
    assert status["revision"] == api.supervisor.revision
    assert status["ready"] is True
    assert status["last_result"]["trigger"] == "start"
    nodes = {n["id"]: n for n in status["nodes"]}
    assert nodes["tick"]["counters"]["sent"] == 1
    assert nodes["show"]["counters"]["received"] == 1
    assert nodes["show"]["flow"] == "a"
    show = api.supervisor.engine.runtimes["show"].node
    assert [rec["value"] for rec in show.recent] == [{"n": 7}]  # type: ignore[attr-defined]
    r = await api.client.post("/api/inject/show", headers=as_role("admin"))
    assert r.status_code == 409
    assert r.json() == {"detail": "node 'show' (debug) cannot be triggered"}
    assert (await api.client.post("/api/inject/ghost", headers=as_role("admin"))).status_code == 404


async def test_status_reports_the_last_deploy_with_its_diff(api: Api) -> None:
    rev = api.supervisor.revision
    r = await api.client.post(
        "/api/deploy",
        headers=as_role("admin"),
        json={"revision": rev, "flows": [{"text": FLOW_A.replace("log: false", "log: false\n    keep: 5")}]},
    )
    assert r.status_code == 200, r.text
    status = (await api.client.get("/api/status", headers=as_role("reader"))).json()
    last = status["last_result"]
    assert last["ok"] is True
    assert last["trigger"] == "api"
    assert last["previous_revision"] == rev
    assert last["revision"] == status["revision"] == api.supervisor.revision
    assert last["diff"]["changed"] == ["show"]
    assert last["errors"] == []
    assert last["duration"] >= 0
    assert [h["trigger"] for h in status["history"]][:2] == ["api", "start"]
    assert status["reloads"] == 1


async def test_metrics_expose_per_node_counters_spool_and_reloads(api: Api) -> None:
    await api.client.post("/api/inject/tick", headers=as_role("admin"))
    assert api.supervisor.engine is not None
    assert await api.supervisor.engine.wait_idle(5)
    rev = api.supervisor.revision
    await api.client.post(
        "/api/deploy",
        headers=as_role("admin"),
        json={"revision": rev, "flows": [{"text": FLOW_A + "# more\n"}]},
    )
    await api.client.post(
        "/api/deploy",
        headers=as_role("admin"),
        json={"revision": api.supervisor.revision, "flows": [{"text": FLOW_A.replace("debug", "nope")}]},
    )
    r = await api.client.get("/metrics", headers=as_role("reader"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    lines = set(r.text.splitlines())
    for line in (
        'klimaflow_node_received_messages_total{flow="a",node="show",type="debug"} 1.0',
        'klimaflow_node_sent_messages_total{flow="a",node="tick",type="inject"} 1.0',
        'klimaflow_node_errors_total{flow="a",node="tick",type="inject"} 0.0',
        'klimaflow_node_inbox_messages{flow="b",node="b-out",type="influxdb-out"} 0.0',
        'klimaflow_node_inbox_capacity{flow="b",node="b-out",type="influxdb-out"} 1000.0',
        'klimaflow_node_stat_total{flow="b",node="b-out",stat="written",type="influxdb-out"} 0.0',
        'klimaflow_spool_bytes{flow="b",node="b-out",type="influxdb-out"} 0.0',
        'klimaflow_node_stat_total{flow="b",node="b-out",stat="write_seconds",type="influxdb-out"} 0.0',
        'klimaflow_node_stat_last{flow="b",node="b-out",stat="last_write_seconds",type="influxdb-out"} 0.0',
        'klimaflow_reloads_total{outcome="applied"} 0.0',
        'klimaflow_reloads_total{outcome="refused"} 1.0',
        "klimaflow_last_reload_ok 0.0",
        f'klimaflow_deployment_info{{revision="{api.supervisor.revision}"}} 1.0',
    ):
        assert line in lines, line
    # last_* stats go up and down: gauges, never counters (rate() would read a drop as a reset).
    assert not [line for line in lines if line.startswith("klimaflow_node_stat_total") and "last_" in line]
    # A comment-only change is the same revision: not a reload that changed anything.
    assert 'klimaflow_reloads_total{outcome="unchanged"} 1.0' in lines
    assert any(
        line.startswith('klimaflow_node_processing_seconds_total{flow="a",node="show"') for line in lines
    )


async def test_metrics_export_what_the_spool_holds(api: Api) -> None:
    # b-out's InfluxDB (port 9) is unreachable: the injected point goes to the spool.
    assert api.supervisor.engine is not None
    node = api.supervisor.engine.node("b-out")
    assert isinstance(node, InfluxOutNode)
    r = await api.client.post("/api/inject/b-tick", headers=as_role("admin"), json={"payload": {"t": 1.5}})
    assert r.status_code == 200
    deadline = asyncio.get_running_loop().time() + 5
    while node.spool_stats().points == 0:
        assert asyncio.get_running_loop().time() < deadline, "nothing spooled"
        await asyncio.sleep(0.02)
    spool = node.spool_stats()
    segments = list((Path(api.supervisor.engine.data_dir) / "nodes" / "b-out" / "spool").iterdir())
    assert spool.bytes == sum(p.stat().st_size for p in segments) > 0
    lines = set((await api.client.get("/metrics", headers=as_role("reader"))).text.splitlines())
    assert 'klimaflow_spool_points{flow="b",node="b-out",type="influxdb-out"} 1.0' in lines
    assert f'klimaflow_spool_bytes{{flow="b",node="b-out",type="influxdb-out"}} {float(spool.bytes)}' in lines


async def test_debug_switch_survives_a_reload_of_other_flows(api: Api) -> None:
    r = await api.client.post("/api/debug/show", headers=as_role("editor"), json={"active": False})
    assert r.json() == {"id": "show", "flow": "a", "active": False}
    assert (await api.client.get("/api/debug", headers=as_role("reader"))).json() == [
        {"id": "show", "flow": "a", "active": False}
    ]
    await api.client.post("/api/inject/tick", headers=as_role("admin"))
    assert api.supervisor.engine is not None
    assert await api.supervisor.engine.wait_idle(5)
    show = api.supervisor.engine.runtimes["show"].node
    assert isinstance(show, DebugNode)
    assert list(show.recent) == []
    # A runtime switch: the node's configuration still says what the flow file says.
    assert (show.active, show.config.active) == (False, True)
    assert show.config is api.supervisor.engine.validated.node_configs["show"]
    # Flow a is restarted by a deploy: the switch stays off.
    r = await api.client.post(
        "/api/deploy",
        headers=as_role("admin"),
        json={"revision": api.supervisor.revision, "flows": [{"text": FLOW_A.replace("21.5", "1")}]},
    )
    assert r.status_code == 200, r.text
    assert (await api.client.get("/api/debug", headers=as_role("reader"))).json()[0]["active"] is False
    r = await api.client.post("/api/debug/tick", headers=as_role("editor"), json={"active": False})
    assert r.status_code == 404
    r = await api.client.post("/api/debug/show", headers=as_role("editor"), json={"active": "maybe"})
    assert r.status_code == 422


async def test_readyz_waits_for_the_flows_and_names_a_failing_flow(flow_dir: Path, tmp_path: Path) -> None:
    sup = Supervisor([flow_dir], data_dir=tmp_path / "data", environ=ENVIRON)
    app = create_app(sup)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {
            "ready": False,
            "reason": "the flows are not running yet",
            "revision": None,
            "failing": [],
        }
        await sup.start()
        try:
            r = await client.get("/readyz")
            assert r.status_code == 200
            assert r.json()["ready"] is True
            assert sup.engine is not None
            sup.engine.runtimes["b-out"].set_status(NodeStatus("error", "writer failed: boom"))
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["reason"] == "failing flow: b"
            assert r.json()["failing"] == [{"flow": "b", "node": "b-out", "reason": "writer failed: boom"}]
            sup.engine.runtimes["b-out"].set_status(NodeStatus("ok", "0 written"))
            assert (await client.get("/readyz")).status_code == 200
        finally:
            await sup.stop()


# -- live events over a real server ---------------------------------------------------------------


@pytest.fixture
async def server(api: Api) -> AsyncIterator[ApiServer]:
    srv = ApiServer(api.app, bind("127.0.0.1", 0))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def _next_event(lines: AsyncIterator[str]) -> dict[str, Any]:
    """The next complete SSE event (comments skipped)."""
    event: dict[str, Any] = {}
    async for line in lines:
        if not line:
            if "data" in event:
                return event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            event[key] = value.removeprefix(" ")
    raise AssertionError("stream ended")


async def test_event_stream_delivers_debug_and_status_redacted(api: Api, server: ApiServer) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream(
            "GET", "/api/events", params={"kinds": "debug,status", "access_token": TOKENS["reader"]}
        ) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.aiter_lines()
        assert await anext(lines) == ": klimaflow events"  # subscribed from here on
        r = await client.post("/api/inject/tick", headers=as_role("admin"))
        assert r.status_code == 200
        event = await asyncio.wait_for(_next_event(lines), 5)
        assert event["event"] == "debug"
        data = json.loads(event["data"])
        assert data["kind"] == "debug"
        assert data["node"] == "show"
        assert data["flow"] == "a"
        assert data["topic"] == "t/1"
        assert data["value"] == {"temperature": 21.5}
        assert api.supervisor.engine is not None
        api.supervisor.engine.runtimes["b-out"].set_status(NodeStatus("warning", f"auth {SECRET} refused"))
        event = await asyncio.wait_for(_next_event(lines), 5)
        assert event["event"] == "status"
        assert json.loads(event["data"])["text"] == "auth *** refused"
        assert SECRET not in event["data"]
    for _ in range(100):  # the server notices the closed stream and drops the subscription
        if api.app.state.api.hub.clients == 0:
            break
        await asyncio.sleep(0.02)
    assert api.app.state.api.hub.clients == 0


async def test_event_stream_node_filter_and_debug_switch(api: Api, server: ApiServer) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10, headers=as_role("reader")) as client,
        client.stream("GET", "/api/events", params={"kinds": "debug", "nodes": "show"}) as resp,
    ):
        lines = resp.aiter_lines()
        await anext(lines)
        await client.post("/api/debug/show", headers=as_role("editor"), json={"active": False})
        await client.post("/api/inject/tick", headers=as_role("admin"), json={"payload": "hidden"})
        assert api.supervisor.engine is not None
        assert await api.supervisor.engine.wait_idle(5)
        await client.post("/api/debug/show", headers=as_role("editor"), json={"active": True})
        await client.post("/api/inject/tick", headers=as_role("admin"), json={"payload": "shown"})
        event = await asyncio.wait_for(_next_event(lines), 5)
        assert json.loads(event["data"])["value"] == "shown"
    async with httpx.AsyncClient(base_url=server.url, headers=as_role("reader")) as client:
        bad = await client.get("/api/events", params={"kinds": "gossip"})
    assert bad.status_code == 400
    assert bad.json() == {"detail": "unknown event kind 'gossip' (kinds: debug, status, error, reload)"}
