"""The FastAPI application: state shared by the routes, authentication dependencies, errors.

The app is built around a running :class:`~engine.supervisor.Supervisor`; it never holds
its own copy of the flows, so whatever changes them (a saved file, another client's
deploy) is what the next request sees.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from editor_api.auth import Authenticator, AuthError, NoRoleError, Principal, Role
from editor_api.redact import Redactor
from editor_api.streams import EventHub
from engine.supervisor import Supervisor

#: Flow files are a few kilobytes; a megabyte leaves room for large generated flows.
DEFAULT_MAX_BODY = 1024 * 1024


@dataclass
class ApiState:
    """Everything the routes share."""

    supervisor: Supervisor
    auth: Authenticator
    hub: EventHub
    stopping: bool = False
    _follow: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def redactor(self) -> Redactor:
        return self.hub.redactor

    def json(self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
        """A JSON response with every secret the running configs hold masked."""
        return Response(
            self.redactor.dumps(content), status_code, headers=headers, media_type="application/json"
        )

    def relative(self, file: str | None) -> str | None:
        """A flow file's path relative to the flow directory: the API does not show server paths."""
        if not file:
            return file
        path = Path(file)
        for base in (self.supervisor.flow_dir(), *(p.parent for p in self.supervisor.paths)):
            with contextlib.suppress(ValueError):
                return str(path.resolve().relative_to(base.resolve()))
        return path.name

    async def start(self) -> None:
        """Follow engine replacements in the background (the CLI and the ASGI lifespan call this)."""
        if self._follow is None:
            self._follow = asyncio.create_task(self.hub.follow(), name="editor-api:follow")

    async def aclose(self) -> None:
        """End every event stream so the server can shut down without waiting for clients."""
        self.stopping = True
        self.hub.close()
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    state.hub.attach()
    return state


State = Annotated[ApiState, Depends(get_state)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from `POST /api/auth/login`, an API token, an OIDC access token, "
    "or the admin token `klimaflow run` prints when no users are configured.",
)


async def _authenticate(state: ApiState, token: str | None) -> Principal:
    try:
        return await state.auth.authenticate(token)
    except NoRoleError as exc:
        raise HTTPException(403, str(exc)) from None
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


async def principal(
    state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Principal:
    return await _authenticate(state, credentials.credentials if credentials else None)


async def stream_principal(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    access_token: Annotated[
        str | None,
        Query(description="The bearer token, for clients that cannot set headers (browser EventSource)."),
    ] = None,
) -> Principal:
    return await _authenticate(state, credentials.credentials if credentials else access_token)


def _check(who: Principal, role: Role) -> Principal:
    if not who.allows(role):
        raise HTTPException(403, f"this needs the {role} role; {who.subject} has {who.role}")
    return who


async def _reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
    return _check(who, "reader")


async def _editor(who: Annotated[Principal, Depends(principal)]) -> Principal:
    return _check(who, "editor")


async def _admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    return _check(who, "admin")


async def _stream_reader(who: Annotated[Principal, Depends(stream_principal)]) -> Principal:
    return _check(who, "reader")


Reader = Annotated[Principal, Depends(_reader)]
Editor = Annotated[Principal, Depends(_editor)]
Admin = Annotated[Principal, Depends(_admin)]
Authenticated = Annotated[Principal, Depends(principal)]
StreamReader = Annotated[Principal, Depends(_stream_reader)]

#: Documented on every protected route.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an invalid, expired or revoked one."},
    403: {"description": "The token's role does not allow this."},
}


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Malformed JSON is a 400 with the parser's reason; the rejected input is never echoed
    back (it may be a password)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k not in ("input", "ctx", "url")} for e in exc.errors()]
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = bad_json.get("msg", "invalid JSON")
        return JSONResponse({"detail": f"request body is not valid JSON: {reason}"}, status_code=400)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body_unread = any(tuple(e.get("loc", ())) == ("body",) for e in errors)
    if body_unread and ctype != "application/json" and not ctype.endswith("+json"):
        return JSONResponse(
            {"detail": f"send this body as JSON (Content-Type: application/json), not {ctype or 'untyped'}"},
            status_code=415,
        )
    return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)


def create_app(
    supervisor: Supervisor,
    auth: Authenticator | None = None,
    *,
    max_body_size: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """The editor API for a (started or starting) supervisor; ``auth`` defaults to a fresh
    :class:`Authenticator` with nothing configured, which lets nobody in."""
    from editor_api.http_in import install_http_in
    from editor_api.routes import auth as auth_routes
    from editor_api.routes import flows, layout, runtime
    from editor_api.ui import mount_ui

    state = ApiState(supervisor, auth or Authenticator(), EventHub(supervisor))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.aclose()

    app = FastAPI(
        title="klimaflow editor API",
        summary="Read, validate and deploy flows; watch and operate the running engine.",
        version="1",
        max_body_size=max_body_size,
        lifespan=lifespan,
    )
    app.state.api = state
    app.add_exception_handler(RequestValidationError, _request_validation_error)

    async def refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, flows.Refused)
        return state.json(exc.body, 422)

    app.add_exception_handler(flows.Refused, refused)
    app.include_router(flows.router)
    app.include_router(runtime.router)
    app.include_router(auth_routes.router)
    app.include_router(layout.router)
    install_http_in(app, state)
    mount_ui(app)
    return app
