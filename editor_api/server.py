"""Serving the editor API with uvicorn inside klimaflow's own event loop.

One loop for flows and API: the API reads engine state directly and deploys through the
same supervisor, without threads or locks. uvicorn's own signal handling is switched off,
because ``klimaflow run`` handles SIGINT/SIGTERM itself (first: drain, second: exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI

from editor_api.app import ApiState
from engine.errors import KlimaflowError

log = logging.getLogger("klimaflow.api")


class ListenError(KlimaflowError):
    """The API address is malformed, or cannot be listened on."""


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (loopback)."""
    text = value.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    else:
        m = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]]*):(?P<port>\d+)", text)
        if m is None:
            raise ListenError(f"invalid API address {value!r}: use HOST:PORT, e.g. 127.0.0.1:1880")
        host = m.group("v6") or m.group("host") or "127.0.0.1"
        port_text = m.group("p6") or m.group("port")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ListenError(f"invalid API port {port}")
    return host, port


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def bind(host: str, port: int) -> socket.socket:
    """Listen before the flows start, so a taken port fails fast with one clear line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _name, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _QueryTokenFilter(logging.Filter):
    """Access log lines must not carry ``?access_token=`` (browser event streams send it)."""

    _TOKEN = re.compile(r"(access_token=)[^&\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = self._TOKEN.sub(r"\1***", record.msg)
        return True


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # klimaflow's handlers stop everything in order; see engine.cli._stop_on_signals


@dataclass
class ApiServer:
    """uvicorn serving ``app`` on an already bound socket, as a task of the running loop."""

    app: FastAPI
    sock: socket.socket
    shutdown_timeout: float = 3.0
    #: Reverse proxies (addresses, networks, ``*``) whose ``X-Forwarded-For``/``-Proto`` are
    #: believed; None: uvicorn's default (``$FORWARDED_ALLOW_IPS``, else loopback only).
    trusted_proxies: str | None = None
    _server: _EmbeddedServer | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return url_of(self.sock)

    @property
    def state(self) -> ApiState:
        state: ApiState = self.app.state.api
        return state

    async def start(self) -> None:
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, _QueryTokenFilter) for f in access.filters):
            access.addFilter(_QueryTokenFilter())
        config = uvicorn.Config(
            self.app,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=int(self.shutdown_timeout),
            server_header=False,
            proxy_headers=True,
            forwarded_allow_ips=self.trusted_proxies,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]), name="editor-api")
        while not self._server.started:
            if self._task.done():
                exc = self._task.exception() if not self._task.cancelled() else None
                raise ListenError(f"the editor API did not start: {exc!r}")
            await asyncio.sleep(0.01)
        log.info("editor API listening on %s", self.url)

    async def stop(self) -> None:
        """End event streams, then let uvicorn finish open requests (bounded) and close."""
        await self.state.aclose()
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.shutdown_timeout + 2)
        except (TimeoutError, Exception, SystemExit) as exc:
            if not isinstance(exc, TimeoutError):
                log.error("editor API stopped with %s: %s", type(exc).__name__, exc)
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        finally:
            self.sock.close()
