"""A loopback HTTP server that answers like InfluxDB 2.x's documented API, and records requests.

No InfluxDB 2.x can be installed on these machines (see ../shared/COMPONENTS.md), so the
v2 protocol is checked against this fake, written from InfluxData's API docs:

* ``POST /api/v2/write?org=&bucket=&precision=`` with ``Authorization: Token T``, body of
  line protocol (``Content-Encoding: gzip`` optional): 204 on success; 401
  ``{"code":"unauthorized","message":"unauthorized access"}`` on a wrong or missing
  token; 404 ``{"code":"not found","message":"bucket \\"b\\" not found"}``; 400
  ``{"code":"invalid","message":"...","line":N}`` for a malformed line, and then
  *nothing* of the request is written (2.x writes all or nothing on a parse error).
* ``POST /api/v2/query?org=`` (JSON ``{"query": ..., "type": "flux"}``): answers
  :attr:`InfluxV2Fake.flux_response` (annotated CSV) or its error.
* ``GET /ping``: 204.

Tests can make the next answers fail (``fail_next``) to exercise retries.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass
class InfluxV2Fake:
    port: int = 0
    token: str = "test-token"
    org: str = "klima"
    bucket: str = "sensors"
    flux_response: str = ""
    requests: list[Request] = field(default_factory=list)
    #: Accepted line-protocol lines, in order.
    lines: list[str] = field(default_factory=list)
    #: (status, json body, headers) answers to give to the next write requests before normal handling.
    fail_next: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _conns: set[socket.socket] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/api/v2/write"]

    def start(self) -> InfluxV2Fake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._conns.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._conns.discard(self.connection)
                super().finish()

            def _answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = (
                    b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                )
                self.send_response(status)
                if body is not None:
                    ctype = "text/csv; charset=utf-8" if isinstance(body, bytes) else "application/json"
                    self.send_header("Content-Type", ctype)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> Request:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = raw
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(raw)
                req = Request(
                    self.command,
                    url.path,
                    {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    raw,
                    body,
                )
                with fake._lock:
                    fake.requests.append(req)
                return req

            def _authorized(self, req: Request) -> bool:
                if req.headers.get("authorization") != f"Token {fake.token}":
                    self._answer(401, {"code": "unauthorized", "message": "unauthorized access"})
                    return False
                return True

            def do_GET(self) -> None:
                req = self._record()
                if req.path in ("/ping", "/health"):
                    self._answer(
                        204 if req.path == "/ping" else 200,
                        None if req.path == "/ping" else {"status": "pass"},
                    )
                else:
                    self._answer(404, {"code": "not found", "message": "path not found"})

            def do_POST(self) -> None:
                req = self._record()
                if req.path == "/api/v2/write":
                    self._write(req)
                elif req.path == "/api/v2/query":
                    self._query(req)
                else:
                    self._answer(404, {"code": "not found", "message": "path not found"})

            def _write(self, req: Request) -> None:
                with fake._lock:
                    failure = fake.fail_next.pop(0) if fake.fail_next else None
                if failure is not None:
                    self._answer(*failure)
                    return
                if not self._authorized(req):
                    return
                if req.params.get("org") != fake.org:
                    self._answer(
                        404,
                        {
                            "code": "not found",
                            "message": f'organization name "{req.params.get("org")}" not found',
                        },
                    )
                    return
                if req.params.get("bucket") != fake.bucket:
                    self._answer(
                        404,
                        {"code": "not found", "message": f'bucket "{req.params.get("bucket")}" not found'},
                    )
                    return
                lines = [ln for ln in req.text.split("\n") if ln and not ln.startswith("#")]
                for n, line in enumerate(lines, 1):
                    problem = _check_line(line)
                    if problem:
                        self._answer(
                            400,
                            {"code": "invalid", "message": f"unable to parse '{line}': {problem}", "line": n},
                        )
                        return
                with fake._lock:
                    fake.lines.extend(lines)
                self._answer(204)

            def _query(self, req: Request) -> None:
                if not self._authorized(req):
                    return
                try:
                    spec = json.loads(req.text)
                except ValueError:
                    spec = {"query": req.text}
                if not spec.get("query"):
                    self._answer(400, {"code": "invalid", "message": "query must not be empty"})
                    return
                self._answer(200, fake.flux_response.encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="influx2-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections, as a stopped server would."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _check_line(line: str) -> str | None:
    """A coarse syntax check: measurement, at least one field ``k=v``, optional integer timestamp."""
    parts = line.replace("\\ ", "\x00").split(" ")
    parts = [p for p in parts if p != ""]
    if len(parts) < 2:
        return "missing fields"
    if len(parts) > 3 and '"' not in line:
        return "invalid field format"
    fields = parts[1]
    if "=" not in fields or fields.startswith("=") or fields.endswith("="):
        return "missing field value"
    if len(parts) == 3 and '"' not in line and not parts[2].lstrip("-").isdigit():
        return "bad timestamp"
    return None
