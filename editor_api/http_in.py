"""Serving ``http-in`` endpoints from the editor API's HTTP server.

Endpoints come and go with the flows, so they are not FastAPI routes (those are fixed when
the app is built): a small ASGI middleware looks each request up among the ``http-in``
nodes of the engine that runs *now* (``supervisor.engine``), which makes a live reload add
or remove an endpoint without any bookkeeping. The editor API's own routes always win; the
node config already refuses paths under them.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import networkx as nx
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from editor_api.auth import AuthError, NoRoleError
from nodes.http import HttpAnswer, HttpInNode, HttpResponseNode, json_answer, register_http_server

if TYPE_CHECKING:
    from editor_api.app import ApiState
    from engine.runtime import Engine

log = logging.getLogger("klimaflow.api.http_in")

#: Pairs of http-in node ids already reported as serving the same request.
_conflicts_logged: set[tuple[str, str]] = set()

#: Request headers that never reach the flow.
HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class BodyTooLarge(Exception):
    pass


def expects_response(engine: Engine, node_id: str) -> bool:
    """Whether an ``http-response`` can answer what ``node_id`` emits: downstream of it, or of
    a ``catch`` node of the same flow (errors may be answered there)."""
    graph = engine.validated.graph
    runtimes = engine.runtimes
    if node_id not in graph:
        return False
    reach = set(nx.descendants(graph, node_id))
    flow = runtimes[node_id].flow_id
    for nid, rt in runtimes.items():
        if rt.flow_id == flow and rt.spec.type == "catch" and nid in graph:
            reach |= {nid, *nx.descendants(graph, nid)}
    return any(nid in runtimes and isinstance(runtimes[nid].node, HttpResponseNode) for nid in reach)


def _find(
    engine: Engine | None, method: str, path: str
) -> tuple[HttpInNode, dict[str, Any]] | list[str] | None:
    """The endpoint for a request; the methods allowed on the path if only the method is wrong.

    Two nodes serving the same request: the first in the engine's order answers, and the
    conflict is logged once.
    """
    if engine is None:
        return None
    allowed: list[str] = []
    found: tuple[HttpInNode, dict[str, Any]] | None = None
    for rt in list(engine.runtimes.values()):
        node = rt.node
        if not isinstance(node, HttpInNode):
            continue
        params = node.match(path)
        if params is None:
            continue
        if node.config.method != method:
            allowed.append(node.config.method)
        elif found is None:
            found = node, params
        else:
            pair = (found[0].ctx.node_id, node.ctx.node_id)
            if pair not in _conflicts_logged:
                _conflicts_logged.add(pair)
                log.warning(
                    "http-in nodes %s and %s both serve %s %s; %s answers", *pair, method, path, pair[0]
                )
    return found or sorted(set(allowed)) or None


def _too_large(limit: int) -> HttpAnswer:
    return json_answer(413, {"detail": f"request body larger than {limit} bytes"})


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
    except HTTPException as exc:  # the body limit middleware stopped reading
        if exc.status_code == 413:
            raise BodyTooLarge from None
        raise
    return b"".join(chunks)


def _multi(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Query or form fields as a dict; a repeated field becomes a list of its values."""
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def parse_body(body: bytes, content_type: str) -> Any:
    """JSON for JSON types, a dict for form data, text for ``text/*``, else the bytes; None if empty.

    Raises ValueError with the reason for a body that does not match its content type.
    """
    if not body:
        return None
    ctype, _, params = content_type.partition(";")
    ctype = ctype.strip().lower()
    charset = "utf-8"
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"')
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"request body is not valid JSON: {exc}") from None
    if ctype.startswith("text/") or ctype == "application/x-www-form-urlencoded":
        try:
            text = body.decode(charset)
        except (LookupError, UnicodeDecodeError) as exc:
            raise ValueError(f"request body is not {charset} text: {exc}") from None
        if ctype.startswith("text/"):
            return text
        return _multi(parse_qsl(text, keep_blank_values=True))
    return body


class HttpInMiddleware:
    """Answers requests for ``http-in`` endpoints; passes everything else to the editor API."""

    def __init__(self, app: ASGIApp, state: ApiState, api: FastAPI) -> None:
        self.app = app
        self.state = state
        self.api = api

    def _own_route(self, scope: Scope) -> bool:
        for route in self.api.router.routes:
            if isinstance(route, Mount):
                continue
            if route.matches(scope)[0] == Match.FULL:
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.state.stopping:
            await self.app(scope, receive, send)
            return
        found = _find(self.state.supervisor.engine, scope["method"], scope["path"])
        if found is None or self._own_route(scope):
            await self.app(scope, receive, send)
            return
        if isinstance(found, list):
            answer = json_answer(
                405, {"detail": f"{scope['method']} is not allowed here"}, {"allow": ", ".join(found)}
            )
            await Response(answer.body, answer.status, headers=answer.headers)(scope, receive, send)
            return
        node, params = found

        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            answer = await self._handle(Request(scope, receive), node, params)
            await Response(answer.body, answer.status, headers=answer.headers)(scope, receive, send)

        # The endpoint's own limit replaces the editor API's (1 MiB, sized for flow files); a
        # declared Content-Length above it is answered by Starlette's plain "Content Too Large".
        await RequestBodyLimitMiddleware(endpoint, max_body_size=node.config.max_body)(scope, receive, send)

    async def _authorize(self, request: Request, node: HttpInNode) -> HttpAnswer | None:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
        challenge = {"www-authenticate": "Bearer"}
        c = node.config
        if c.auth == "token":
            assert c.token is not None
            expected = c.token.get_secret_value().encode("utf-8")
            if token is None or not hmac.compare_digest(token.encode("utf-8"), expected):
                why = "no bearer token" if token is None else "wrong token"
                return json_answer(401, {"detail": f"{node.route}: {why}"}, challenge)
            return None
        try:
            who = await self.state.auth.authenticate(token)
        except NoRoleError as exc:
            return json_answer(403, {"detail": str(exc)})
        except AuthError as exc:
            return json_answer(401, {"detail": str(exc)}, challenge)
        if not who.allows(c.role):
            return json_answer(403, {"detail": f"this needs the {c.role} role; {who.subject} has {who.role}"})
        return None

    async def _handle(self, request: Request, node: HttpInNode, params: dict[str, Any]) -> HttpAnswer:
        denied = await self._authorize(request, node)
        if denied is not None:
            return denied
        limit = node.config.max_body
        try:
            body = await _read_body(request, limit)
        except BodyTooLarge:
            return _too_large(limit)
        try:
            payload = parse_body(body, request.headers.get("content-type", ""))
        except ValueError as exc:
            return json_answer(400, {"detail": str(exc)})
        http = {
            "method": request.method,
            "path": request.url.path,
            "params": params,
            "query": _multi(request.query_params.multi_items()),
            "headers": {k: v for k, v in request.headers.items() if k not in HIDDEN_HEADERS},
        }
        engine = self.state.supervisor.engine
        expects = engine is not None and expects_response(engine, node.ctx.node_id)
        return await node.handle(payload, http, expects)


def install_http_in(app: FastAPI, state: ApiState) -> None:
    """Serve the running flows' ``http-in`` endpoints from ``app`` (called by create_app)."""
    app.add_middleware(HttpInMiddleware, state=state, api=app)
    register_http_server(state)
