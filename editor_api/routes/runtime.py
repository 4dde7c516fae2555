"""The running engine: node types, status, live events, debug switches, inject, metrics, health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from editor_api.app import AUTH_RESPONSES, Admin, ApiState, Editor, Reader, State, StreamReader
from editor_api.metrics import CONTENT_TYPE, render_metrics
from editor_api.models import DebugNodeState, DebugToggle, Detail, InjectRequest, NodeTypes, Status
from editor_api.streams import EVENT_KINDS, Event, set_debug_active
from engine.cli import node_infos
from engine.node import Node
from engine.schema import describe_connection_type

router = APIRouter(tags=["runtime"])

#: How many recent reload results ``/api/status`` lists.
HISTORY = 10


@router.get("/api/nodes", response_model=NodeTypes, responses=AUTH_RESPONSES, summary="Node types")
async def list_node_types(state: State, _who: Reader) -> Response:
    reg = state.supervisor.registry
    return state.json(
        {
            "nodes": node_infos(reg),
            "connections": [describe_connection_type(reg.connections[n]) for n in sorted(reg.connections)],
            "load_errors": dict(sorted(reg.load_errors.items())),
        }
    )


def readiness(state: ApiState) -> tuple[bool, str, list[dict[str, Any]]]:
    """(ready, reason, failing nodes): ready once the flows run and no node is broken."""
    engine = state.supervisor.engine
    if state.stopping:
        return False, "stopping", []
    if engine is None or state.supervisor.revision is None:
        return False, "the flows are not running yet", []
    failing: list[dict[str, Any]] = []
    for rt in list(engine.runtimes.values()):
        if rt.worker is not None and rt.worker.done():
            failing.append({"flow": rt.flow_id, "node": rt.node_id, "reason": "its worker stopped"})
        elif rt.status.level == "error":
            failing.append({"flow": rt.flow_id, "node": rt.node_id, "reason": rt.status.text})
    if failing:
        flows = sorted({f["flow"] for f in failing})
        return False, f"failing flow{'s' if len(flows) > 1 else ''}: {', '.join(flows)}", failing
    return True, "ok", []


@router.get("/api/status", response_model=Status, responses=AUTH_RESPONSES, summary="Engine status")
async def status(state: State, _who: Reader) -> Response:
    sup = state.supervisor
    snap = sup.engine.snapshot() if sup.engine is not None else {}
    ready, _reason, _failing = readiness(state)
    history = [r.to_dict() for r in list(sup.history)[-HISTORY:]][::-1]
    return state.json(
        {
            "revision": sup.revision,
            "ready": ready,
            "reloads": sup.reloads,
            "last_result": sup.last_result.to_dict() if sup.last_result else None,
            "history": history,
            "unhandled_errors": snap.get("unhandled_errors", 0),
            "undrained": snap.get("undrained", 0),
            "nodes": snap.get("nodes", []),
        }
    )


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@dataclass(frozen=True)
class EventFilter:
    kinds: list[str]
    nodes: list[str] | None


async def _event_filter(
    kinds: Annotated[str | None, Query(description="Comma-separated: debug, status, error, reload.")] = None,
    nodes: Annotated[str | None, Query(description="Comma-separated node ids (default: all).")] = None,
) -> EventFilter:
    """Checked before the stream starts: once it runs, a 400 can no longer be sent."""
    wanted = _csv(kinds) or list(EVENT_KINDS)
    unknown = [k for k in wanted if k not in EVENT_KINDS]
    if unknown:
        raise HTTPException(400, f"unknown event kind {unknown[0]!r} (kinds: {', '.join(EVENT_KINDS)})")
    return EventFilter(wanted, _csv(nodes))


@router.get(
    "/api/events",
    response_class=EventSourceResponse,
    responses={**AUTH_RESPONSES, 400: {"model": Detail}},
    summary="Live events (Server-Sent Events)",
)
async def events(
    state: State, _who: StreamReader, which: Annotated[EventFilter, Depends(_event_filter)]
) -> AsyncIterator[ServerSentEvent]:
    """One SSE event per engine event; `event:` is the kind, `data:` its JSON
    (`{kind, node, flow, time, ...}`). A client that falls behind gets a `dropped` event
    with the number of events it missed."""
    sub = state.hub.subscribe(which.kinds, which.nodes)
    try:
        # A first comment so clients (and proxies) see the stream is open before any event.
        yield ServerSentEvent(comment="klimaflow events")
        async for item in sub.events():
            if isinstance(item, Event):
                yield ServerSentEvent(raw_data=item.data, event=item.kind, id=str(item.seq))
            else:
                yield ServerSentEvent(raw_data=json.dumps({"dropped": item}), event="dropped")
    finally:
        state.hub.unsubscribe(sub)


def _debug_nodes(state: ApiState) -> list[dict[str, Any]]:
    from nodes.debug import DebugNode

    engine = state.supervisor.engine
    out = []
    for rt in list(engine.runtimes.values()) if engine is not None else []:
        if isinstance(rt.node, DebugNode):
            out.append({"id": rt.node_id, "flow": rt.flow_id, "active": rt.node.active})
    return out


@router.get(
    "/api/debug", response_model=list[DebugNodeState], responses=AUTH_RESPONSES, summary="Debug nodes"
)
async def debug_nodes(state: State, _who: Reader) -> Response:
    return state.json(_debug_nodes(state))


@router.post(
    "/api/debug/{node_id}",
    response_model=DebugNodeState,
    responses={**AUTH_RESPONSES, 404: {"model": Detail}},
    summary="Switch a debug node on or off",
)
async def toggle_debug(node_id: str, body: DebugToggle, state: State, _who: Editor) -> Response:
    """A runtime switch (the node's `active` flag is only its default): kept across reloads while
    the node exists, not written to the flow file."""
    engine = state.supervisor.engine
    rt = engine.runtimes.get(node_id) if engine is not None else None
    if rt is None or not set_debug_active(rt.node, body.active):
        raise HTTPException(404, f"no running debug node {node_id!r}")
    state.hub.debug_active[node_id] = body.active
    return state.json({"id": node_id, "flow": rt.flow_id, "active": body.active})


@router.post(
    "/api/inject/{node_id}",
    responses={**AUTH_RESPONSES, 404: {"model": Detail}, 409: {"model": Detail}},
    summary="Trigger an inject node",
)
async def inject(node_id: str, state: State, _who: Admin, body: InjectRequest | None = None) -> Response:
    """Like the button on an inject node: sends its message (or `payload`, if given) now."""
    engine = state.supervisor.engine
    rt = engine.runtimes.get(node_id) if engine is not None else None
    if rt is None:
        raise HTTPException(404, f"no running node {node_id!r}")
    if type(rt.node).trigger is Node.trigger:
        raise HTTPException(409, f"node {node_id!r} ({rt.spec.type}) cannot be triggered")
    payload = body.payload if body is not None else None
    try:
        await asyncio.wait_for(rt.node.trigger(payload), timeout=10)
    except TimeoutError:
        raise HTTPException(503, f"node {node_id!r}: the flow did not take the message within 10 s") from None
    return state.json({"ok": True, "node": node_id})


@router.get(
    "/metrics",
    responses={**AUTH_RESPONSES, 200: {"content": {"text/plain": {}}}},
    summary="Prometheus metrics",
    tags=["operations"],
)
async def metrics(state: State, _who: Reader) -> Response:
    return Response(
        state.redactor.text(render_metrics(state.supervisor, state.hub).decode()), media_type=CONTENT_TYPE
    )


@router.get("/healthz", summary="Liveness: the process answers", tags=["operations"])
async def healthz() -> dict[str, str]:
    """No authentication, for probes."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the flows run",
    tags=["operations"],
    responses={503: {"description": "Not ready; `reason` names the failing flows."}},
)
async def readyz(state: State) -> Response:
    """No authentication, for probes. 503 until the flows run, while stopping, and while a node is
    broken (status `error`, or its worker ended); `failing` names the flows and nodes."""
    ready, reason, failing = readiness(state)
    body = {
        "ready": ready,
        "reason": reason,
        "revision": state.supervisor.revision,
        "failing": failing,
    }
    return state.json(body, 200 if ready else 503)
