"""http-request against a real HTTP server (uvicorn on a free loopback port, started here)."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.message import Message
from nodes.http import retry_after_seconds
from tests.flowkit import FlowHarness, run_flow, validate_doc


async def wait_for(h: FlowHarness, node: str, n: int, timeout: float = 10.0) -> list[Message]:
    deadline = time.monotonic() + timeout
    while len(h.received(node)) < n:
        assert time.monotonic() < deadline, f"only {len(h.received(node))} of {n} messages arrived at {node}"
        await asyncio.sleep(0.01)
    return h.received(node)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop; yields its base URL."""
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done(), "test server did not start"
        assert time.monotonic() < deadline, "test server did not start in time"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class Upstream:
    """A small web API whose misbehaviour the tests script."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = defaultdict(list)
        self.failures: dict[str, int] = {}
        self.app = Starlette(
            routes=[
                Route("/json", self.json),
                Route("/text", self.text),
                Route("/bytes", self.bytes_),
                Route("/echo/{name}", self.echo, methods=["GET", "POST", "PUT", "DELETE"]),
                Route("/flaky/{key}", self.flaky),
                Route("/limited/{key}", self.limited),
                Route("/slow", self.slow),
                Route("/missing", self.missing),
                Route("/badjson", self.badjson),
            ]
        )

    def hit(self, request: Request) -> None:
        self.hits[request.url.path].append(time.monotonic())

    async def json(self, request: Request) -> Response:
        self.hit(request)
        return JSONResponse({"temperature": "21.5", "sensors": [1, 2]})

    async def text(self, request: Request) -> Response:
        self.hit(request)
        return PlainTextResponse("Bodenfeuchte: 11,36 %")

    async def bytes_(self, request: Request) -> Response:
        self.hit(request)
        return Response(b"PK\x03\x04\x00\xff", media_type="application/zip")

    async def echo(self, request: Request) -> Response:
        self.hit(request)
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "name": request.path_params["name"],
                "query": dict(request.query_params.multi_items()),
                "authorization": request.headers.get("authorization"),
                "x-box": request.headers.get("x-box"),
                "content_type": request.headers.get("content-type"),
                "body": body.decode("utf-8"),
            }
        )

    async def flaky(self, request: Request) -> Response:
        """503 for the first ``failures[key]`` requests, then 200."""
        self.hit(request)
        key = request.path_params["key"]
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            return PlainTextResponse("database restarting", status_code=503)
        return JSONResponse({"ok": key})

    async def limited(self, request: Request) -> Response:
        """429 with Retry-After: 1 for the first request, then 200."""
        self.hit(request)
        if len(self.hits[request.url.path]) == 1:
            return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "1"})
        return JSONResponse({"ok": True})

    async def slow(self, request: Request) -> Response:
        self.hit(request)
        await asyncio.sleep(1)
        return JSONResponse({"late": True})

    async def missing(self, request: Request) -> Response:
        self.hit(request)
        return JSONResponse({"code": "NotFound", "message": "Box not found"}, status_code=404)

    async def badjson(self, request: Request) -> Response:
        self.hit(request)
        return Response(b'{"broken": ', media_type="application/json")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    async with serve(up.app) as url:
        yield up, url


def request_flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "req", "type": "http-request", "wires": {"out": ["out"], "error": ["bad"]}, **config},
            {"id": "out", "type": "collect"},
            {"id": "bad", "type": "collect"},
        ],
    }


async def one_result(config: dict[str, Any], payload: Any = None, **meta: Any) -> tuple[str, Message]:
    """Send one message through an http-request node; ("out"|"bad", message)."""
    async with run_flow(request_flow(**config)) as h:
        await h.send("req", payload, **meta)
        deadline = time.monotonic() + 15
        while not h.received("out") and not h.received("bad"):
            assert time.monotonic() < deadline, "no result from http-request"
            await asyncio.sleep(0.01)
        return ("out", h.received("out")[0]) if h.received("out") else ("bad", h.received("bad")[0])


# -- results --------------------------------------------------------------------------------------


async def test_json_text_and_bytes_results_by_content_type(upstream: tuple[Upstream, str]) -> None:
    _up, url = upstream
    port, msg = await one_result({"url": f"{url}/json"})
    assert port == "out"
    assert msg.payload == {"temperature": "21.5", "sensors": [1, 2]}
    info = msg.meta["http_request"]
    assert (info["method"], info["url"], info["status"], info["attempts"]) == ("GET", f"{url}/json", 200, 1)
    assert info["headers"]["content-type"] == "application/json"

    port, msg = await one_result({"url": f"{url}/text"})
    assert (port, msg.payload) == ("out", "Bodenfeuchte: 11,36 %")

    port, msg = await one_result({"url": f"{url}/bytes"})
    assert (port, msg.payload) == ("out", b"PK\x03\x04\x00\xff")

    # Forced modes: JSON kept as text, text as bytes.
    port, msg = await one_result({"url": f"{url}/json", "result": "text"})
    assert msg.payload == '{"temperature":"21.5","sensors":[1,2]}'
    port, msg = await one_result({"url": f"{url}/text", "result": "bytes"})
    assert msg.payload == b"Bodenfeuchte: 11,36 %"


async def test_invalid_json_answer_is_a_decode_error(upstream: tuple[Upstream, str]) -> None:
    _up, url = upstream
    port, msg = await one_result({"url": f"{url}/badjson"})
    assert port == "bad"
    assert msg.meta["error"]["class"] == "DecodeError"
    assert msg.meta["error"]["message"].startswith(f"GET {url}/badjson: the answer is not valid JSON: ")


async def test_url_query_and_headers_are_rendered_from_the_message(upstream: tuple[Upstream, str]) -> None:
    _up, url = upstream
    config = {
        "method": "POST",
        "url": url + "/echo/{{ payload.box_id }}",
        "query": {"from-date": "{{ payload.from or '' }}", "format": "json", "box": "{{ box }}"},
        "headers": {"X-Box": "{{ payload.box_id }}"},
    }
    port, msg = await one_result(config, {"box_id": "6332e3ca1b5cff001b7f1abe", "from": None}, box="Raben")
    assert port == "out"
    assert msg.payload == {
        "method": "POST",
        "name": "6332e3ca1b5cff001b7f1abe",
        # the empty from-date is left out
        "query": {"format": "json", "box": "Raben"},
        "authorization": None,
        "x-box": "6332e3ca1b5cff001b7f1abe",
        "content_type": "application/json",
        "body": '{"box_id":"6332e3ca1b5cff001b7f1abe","from":null}',
    }


async def test_bearer_and_basic_auth_headers(upstream: tuple[Upstream, str]) -> None:
    _up, url = upstream
    env = {"API_TOKEN": "tok-123456", "API_PASSWORD": "pässwort"}
    doc = request_flow(url=f"{url}/echo/a", bearer_token="${API_TOKEN}")
    async with run_flow(doc, environ=env) as h:
        await h.send("req", None)
        [msg] = await wait_for(h, "out", 1)
    assert msg.payload["authorization"] == "Bearer tok-123456"
    assert msg.payload["body"] == ""  # GET sends no body

    doc = request_flow(url=f"{url}/echo/b", username="klima", password="${API_PASSWORD}")
    async with run_flow(doc, environ=env) as h:
        await h.send("req", None)
        [msg] = await wait_for(h, "out", 1)
    expected = base64.b64encode("klima:pässwort".encode()).decode()
    assert msg.payload["authorization"] == f"Basic {expected}"


def test_secrets_must_not_be_written_into_the_flow() -> None:
    validated, issues = validate_doc(request_flow(url="http://x.test/", bearer_token="literal-token"))
    assert validated is None
    assert [(i.code, i.message) for i in issues if i.severity == "error"] == [
        (
            "literal-secret",
            "secrets must not be written into flow files; use ${ENV_VAR} or ${file:/run/secrets/NAME}",
        )
    ]


def test_config_errors_are_clear() -> None:
    validated, issues = validate_doc(request_flow(url="ftp://example.org/x"))
    assert validated is None
    assert any("url must start with http:// or https://" in i.message for i in issues)
    validated, issues = validate_doc(request_flow(url="http://x.test/{{ payload.id "))
    assert validated is None
    assert any("url: template syntax error on line 1" in i.message for i in issues)


# -- retries --------------------------------------------------------------------------------------


async def test_5xx_is_retried_with_backoff_until_it_succeeds(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    up.failures["a"] = 2
    port, msg = await one_result({"url": f"{url}/flaky/a", "retries": 3, "retry_backoff": "10ms"})
    assert (port, msg.payload) == ("out", {"ok": "a"})
    assert msg.meta["http_request"]["attempts"] == 3
    assert len(up.hits["/flaky/a"]) == 3


async def test_5xx_after_all_retries_goes_to_the_error_port(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    up.failures["b"] = 10
    port, msg = await one_result({"url": f"{url}/flaky/b", "retries": 2, "retry_backoff": "10ms"})
    assert port == "bad"
    assert msg.meta["error"]["class"] == "ServiceUnavailable"
    assert msg.meta["error"]["classes"][:3] == ["ServiceUnavailable", "TransientError", "NodeError"]
    assert msg.meta["error"]["message"] == (
        f"GET {url}/flaky/b answered 503 Service Unavailable: database restarting (gave up after 3 attempts)"
    )
    assert msg.meta["http_request"]["status"] == 503
    assert len(up.hits["/flaky/b"]) == 3


async def test_429_waits_as_long_as_retry_after_says(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    # The backoff alone would retry after 10 ms; Retry-After: 1 must win.
    port, msg = await one_result({"url": f"{url}/limited/x", "retries": 1, "retry_backoff": "10ms"})
    assert (port, msg.payload) == ("out", {"ok": True})
    first, second = up.hits["/limited/x"]
    assert second - first >= 0.95


async def test_retry_after_longer_than_max_backoff_fails_at_once(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    port, msg = await one_result({"url": f"{url}/limited/y", "retries": 3, "max_backoff": "500ms"})
    assert port == "bad"
    assert msg.meta["error"]["class"] == "TransientError"
    assert msg.meta["error"]["message"] == (
        f"GET {url}/limited/y answered 429 Too Many Requests: slow down "
        "(the server asks to retry after 1s, more than max_backoff 0.5s)"
    )
    assert len(up.hits["/limited/y"]) == 1


def test_retry_after_as_http_date() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_seconds("soon") is None


async def test_4xx_is_not_retried(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    port, msg = await one_result({"url": f"{url}/missing", "retries": 3, "retry_backoff": "10ms"})
    assert port == "bad"
    assert msg.meta["error"]["class"] == "HttpStatusError"
    assert "MessageError" in msg.meta["error"]["classes"]
    assert msg.meta["error"]["message"] == (
        f'GET {url}/missing answered 404 Not Found: {{"code":"NotFound","message":"Box not found"}}'
    )
    assert len(up.hits["/missing"]) == 1


async def test_timeout_is_a_transient_error(upstream: tuple[Upstream, str]) -> None:
    _up, url = upstream
    port, msg = await one_result(
        {"url": f"{url}/slow", "timeout": "200ms", "retries": 1, "retry_backoff": "10ms"}
    )
    assert port == "bad"
    assert msg.meta["error"]["class"] == "TransientError"
    assert msg.meta["error"]["message"] == (
        f"GET {url}/slow: timed out after 0.2s (ReadTimeout) (gave up after 2 attempts)"
    )


async def test_connection_refused_is_service_unavailable() -> None:
    sock = free_socket()  # bound, never listening: connections are refused
    port_no = sock.getsockname()[1]
    try:
        port, msg = await one_result(
            {"url": f"http://127.0.0.1:{port_no}/x", "retries": 1, "retry_backoff": "10ms"}
        )
    finally:
        sock.close()
    assert port == "bad"
    assert msg.meta["error"]["class"] == "ServiceUnavailable"
    assert msg.meta["error"]["message"].startswith(f"GET http://127.0.0.1:{port_no}/x: cannot connect: ")
    assert msg.meta["error"]["message"].endswith("(gave up after 2 attempts)")


async def test_a_server_that_hangs_up_is_service_unavailable() -> None:
    accepted = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port_no = server.sockets[0].getsockname()[1]
    try:
        port, msg = await one_result(
            {"url": f"http://127.0.0.1:{port_no}/x", "retries": 1, "retry_backoff": "10ms"}
        )
    finally:
        server.close()
        await server.wait_closed()
    assert port == "bad"
    assert msg.meta["error"]["class"] == "ServiceUnavailable"
    assert msg.meta["error"]["message"] == (
        f"GET http://127.0.0.1:{port_no}/x: RemoteProtocolError: Server disconnected without sending a "
        "response. (gave up after 2 attempts)"
    )
    assert accepted == 2


async def test_credentials_in_the_url_are_sent_but_not_shown(upstream: tuple[Upstream, str]) -> None:
    _up, url = upstream
    with_user = url.replace("http://", "http://klima:geheim@")
    port, msg = await one_result({"url": f"{with_user}/echo/u"})
    assert port == "out"
    expected = base64.b64encode(b"klima:geheim").decode()
    assert msg.payload["authorization"] == f"Basic {expected}"
    assert msg.meta["http_request"]["url"] == f"{url}/echo/u"
    port, msg = await one_result({"url": f"{with_user}/missing", "retries": 0})
    assert "geheim" not in msg.meta["error"]["message"]
    assert msg.meta["error"]["message"].startswith(f"GET {url}/missing answered 404")
