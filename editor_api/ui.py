"""The visual editor: the browser app built from ``editor/`` (``scripts/setup.sh`` runs
``npm ci`` and the build), served at ``/editor/`` beside the API it talks to."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

#: Where ``npm run build`` in ``editor/`` puts the app.
DIST = Path(__file__).resolve().parent.parent / "editor" / "dist"


def mount_ui(app: FastAPI, dist: Path = DIST) -> None:
    """Serve the built editor at ``/editor/`` and send ``/`` there. Without a build the page
    says how to make one, instead of a bare 404."""

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/editor/")

    if (dist / "index.html").is_file():
        app.mount("/editor", StaticFiles(directory=dist, html=True), name="editor")
        return

    @app.get("/editor/", include_in_schema=False)
    async def not_built() -> PlainTextResponse:
        return PlainTextResponse(
            "The visual editor is not built: run scripts/setup.sh (npm ci and npm run build in editor/).",
            status_code=503,
        )
