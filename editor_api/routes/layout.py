"""Where a person put the boxes of a flow in the visual editor.

Positions live in ``<flow file stem>.layout.json`` beside the flow file, never in the flow
itself: moving a box is not an edit of the flow, so it neither deploys nor needs a
revision, and the loader skips ``*.layout.*`` files. Editors may save it (it changes how a
flow looks, not what runs).
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

from editor_api.app import AUTH_RESPONSES, ApiState, Editor, Reader, State
from editor_api.models import Detail
from engine.flowfiles import atomic_write

router = APIRouter(prefix="/api", tags=["layout"])


class Position(BaseModel):
    """Top-left corner of a node's box, in editor canvas pixels."""

    x: float = Field(description="Distance from the canvas's left edge.")
    y: float = Field(description="Distance from the canvas's top edge.")


class Layout(BaseModel):
    """A flow's box positions by node id; nodes not listed are placed automatically."""

    positions: dict[str, Position] = Field(default_factory=dict, description="Node id -> position.")


def layout_path(flow_file: Path) -> Path:
    return flow_file.with_name(f"{flow_file.stem}.layout.json")


def _flow_file(state: ApiState, flow_id: str) -> Path:
    path = state.supervisor.flow_files().get(flow_id)
    if path is None:
        raise HTTPException(404, f"no flow {flow_id!r} is running")
    return path


@router.get(
    "/flows/{flow_id}/layout",
    response_model=Layout,
    responses={**AUTH_RESPONSES, 404: {"model": Detail}},
    summary="A flow's box positions",
)
async def get_layout(flow_id: str, state: State, _who: Reader) -> Response:
    """Empty positions when nothing was saved yet, or the file is unreadable (then the editor lays
    the flow out itself rather than failing to open it)."""
    path = layout_path(_flow_file(state, flow_id))
    try:
        layout = Layout.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        layout = Layout()
    return state.json(layout.model_dump())


@router.put(
    "/flows/{flow_id}/layout",
    response_model=Layout,
    responses={**AUTH_RESPONSES, 404: {"model": Detail}},
    summary="Save a flow's box positions",
)
async def put_layout(flow_id: str, layout: Layout, state: State, _who: Editor) -> Response:
    """Replaces the layout file. Nodes added in the editor but not deployed yet keep their place too,
    so positions are not checked against the running flow."""
    path = layout_path(_flow_file(state, flow_id))
    try:
        atomic_write(path, json.dumps(layout.model_dump(), indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise HTTPException(500, f"cannot write the layout: {exc.strerror or exc}") from None
    return state.json(layout.model_dump())
