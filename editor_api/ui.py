"""The visual editor: the browser app built from ``editor/`` (``scripts/setup.sh`` runs
``npm ci`` and the build), served at ``/editor/`` beside the API it talks to.

The build writes into this package (``editor_api/static/``), so a wheel carries the editor as
package data and an installed klimaflow serves it without Node.js on the machine."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

#: Where ``npm run build`` in ``editor/`` puts the app: inside the package, shipped in the wheel.
PACKAGED = Path(__file__).resolve().parent / "static"
#: Where builds before the assets moved into the package put it (a checkout built back then).
CHECKOUT = Path(__file__).resolve().parent.parent / "editor" / "dist"


def find_dist(*candidates: Path) -> Path:
    """The first folder holding a built editor (default: the packaged one, then a checkout's);
    the first candidate when none does (then the page says how to build it)."""
    folders = candidates or (PACKAGED, CHECKOUT)
    for folder in folders:
        if (folder / "index.html").is_file():
            return folder
    return folders[0]


#: The editor served by default.
DIST = find_dist()


def mount_ui(app: FastAPI, dist: Path | None = None) -> None:
    """Serve the built editor at ``/editor/`` and send ``/`` there. Without a build the page
    says how to make one, instead of a bare 404."""
    folder = dist if dist is not None else find_dist()

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/editor/")

    if (folder / "index.html").is_file():
        app.mount("/editor", StaticFiles(directory=folder, html=True), name="editor")
        return

    @app.get("/editor/", include_in_schema=False)
    async def not_built() -> PlainTextResponse:
        return PlainTextResponse(
            "The visual editor is not built: run scripts/setup.sh (npm ci and npm run build in editor/, "
            "which writes editor_api/static/), or install a klimaflow wheel that includes it.",
            status_code=503,
        )
