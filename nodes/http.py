"""HTTP nodes: ``http-request`` (call a web API) and ``http-in`` / ``http-response`` (serve one).

``http-request`` is what the open-data pollers build on (openSenseMap): one pooled
``httpx.AsyncClient`` per node, the URL, query and headers rendered from the message with
the same sandboxed Jinja2 as the ``template`` node (``{{ payload.box_id }}``), and retries
with exponential backoff for what is worth retrying: network errors, timeouts, 5xx, and
429 (whose ``Retry-After`` is honoured). Anything else non-2xx is the message's fault and
goes to the error path at once.

``http-in`` endpoints are served by the editor API's HTTP server (``klimaflow run --api``,
see :mod:`editor_api.http_in`); the node itself knows nothing of ASGI. A request becomes a
message; an ``http-response`` node downstream answers it through the request id in
``meta.http``. Without an ``http-response`` behind it, an endpoint answers 202 as soon as
the flow accepted the message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import re
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import jinja2
from pydantic import Field, SecretStr, field_validator, model_validator
from starlette.convertors import Convertor
from starlette.routing import compile_path

from engine.errors import DecodeError, ExpressionError, MessageError, ServiceUnavailable, TransientError
from engine.message import Delivery, Message
from engine.node import Node
from engine.types import Duration, NodeConfig
from nodes.template import make_environment

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Role = Literal["reader", "editor", "admin"]

_env = make_environment(strict=True)


def _compile_template(value: str) -> jinja2.Template | None:
    """None for plain text: most URLs and headers have nothing to render."""
    if "{{" not in value and "{%" not in value:
        return None
    return _env.from_string(value)


def _check_template(value: str, what: str) -> None:
    try:
        _compile_template(value)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"{what}: template syntax error on line {exc.lineno}: {exc.message}") from None


class _Rendered:
    """A config text that may be a Jinja2 template over the message."""

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.template = _compile_template(text)

    def render(self, view: dict[str, Any]) -> str:
        if self.template is None:
            return self.text
        try:
            return self.template.render(view)
        except Exception as exc:
            detail = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
            raise ExpressionError(f"{self.what}: template render failed: {detail}") from exc


# -- http-request ---------------------------------------------------------------------------------


class HttpRequestConfig(NodeConfig):
    """The request to make for every message.

    `url`, `query` values and `headers` values are Jinja2 templates over the message
    (as in the `template` node: `payload`, `topic`, every `meta` key, and `msg`),
    e.g. `https://api.opensensemap.org/boxes/{{ payload.box_id }}`. Values inserted into the
    URL path are not escaped: use `{{ value | urlencode }}` for free text. A query value that
    renders empty is left out. Secrets (`password`, `bearer_token`) only from `${VAR}` or
    `${file:...}`.
    """

    method: Method = Field(default="GET", description="HTTP method.")
    url: str = Field(description="URL (template), `http://` or `https://`.")
    query: dict[str, str] = Field(
        default_factory=dict, description="Query parameters (values are templates; empty ones are left out)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers (values are templates)."
    )
    body: Literal["auto", "json", "form", "text", "none"] = Field(
        default="auto",
        description="What to send: `auto` sends the payload with POST/PUT/PATCH (dict/list as JSON, text as "
        "text, bytes as they are) and nothing with GET/DELETE; `json`, `form` (a dict as "
        "`application/x-www-form-urlencoded`), `text`, or `none`.",
    )
    username: str | None = Field(default=None, description="Basic auth user name.")
    password: SecretStr | None = Field(default=None, description="Basic auth password (`${VAR}`).")
    bearer_token: SecretStr | None = Field(
        default=None, description="Sent as `Authorization: Bearer ...` (`${VAR}`)."
    )
    result: Literal["auto", "json", "text", "bytes"] = Field(
        default="auto",
        description="How the answer becomes `msg.payload`: `auto` parses JSON content types, decodes text "
        "types and keeps anything else as bytes.",
    )
    timeout: Duration = Field(default=30.0, description="Timeout of one attempt (connect, read, write).")
    retries: int = Field(
        default=3, ge=0, le=20, description="Retries after a network error, timeout, 5xx or 429 (0: none)."
    )
    retry_backoff: Duration = Field(default=1.0, description="First retry delay; doubles per retry.")
    max_backoff: Duration = Field(
        default=60.0,
        description="Longest wait between attempts; a `Retry-After` asking for more fails at once.",
    )
    follow_redirects: bool = Field(default=True, description="Follow 3xx redirects.")
    verify_tls: bool = Field(default=True, description="Check the server's TLS certificate.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        _check_template(value, "url")
        if _compile_template(value) is None and not re.match(r"(?i)https?://[^/\s]", value):
            raise ValueError(f"url must start with http:// or https:// and name a host, not {value!r}")
        return value

    @field_validator("query", "headers")
    @classmethod
    def _check_values(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            _check_template(text, key)
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> HttpRequestConfig:
        if self.bearer_token is not None and (self.username is not None or self.password is not None):
            raise ValueError("set either username/password (basic auth) or bearer_token, not both")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self


class HttpStatusError(MessageError):
    """The server answered with a status that retrying will not change (4xx other than 408/429)."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _default_type(headers: dict[str, str], content_type: str) -> None:
    """Set Content-Type unless the config's headers set it (in any spelling)."""
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type


def _is_json_type(content_type: str) -> bool:
    ctype = content_type.split(";")[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


def _is_text_type(content_type: str) -> bool:
    ctype = content_type.split(";")[0].strip().lower()
    return ctype.startswith("text/") or ctype in (
        "application/xml",
        "application/javascript",
        "application/csv",
    )


class HttpRequestNode(Node):
    """Make an HTTP request per message (retries, auth, JSON/text/bytes result into `payload`).

    The answer's status, headers and final URL go to `meta.http_request`
    (`{method, url, status, headers, attempts}`). Errors: `HttpStatusError` (a `MessageError`)
    for 4xx, `ServiceUnavailable` when the server cannot be reached or answers 502/503/504, and
    `TransientError` for timeouts, other 5xx and 429, each after the configured retries.
    """

    type_name = "http-request"
    category = "network"
    Config = HttpRequestConfig
    outputs = ("out",)
    color = "#e7e7ae"
    icon = "http"
    config: HttpRequestConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        self._url = _Rendered(c.url, "url")
        self._query = {k: _Rendered(v, f"query.{k}") for k, v in c.query.items()}
        self._headers = {k: _Rendered(v, f"headers.{k}") for k, v in c.headers.items()}
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        c = self.config
        auth: httpx.Auth | None = None
        if c.username is not None:
            auth = httpx.BasicAuth(c.username, c.password.get_secret_value() if c.password else "")
        self._client = httpx.AsyncClient(
            timeout=c.timeout, follow_redirects=c.follow_redirects, verify=c.verify_tls, auth=auth
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _request(self, msg: Message) -> httpx.Request:
        assert self._client is not None
        c = self.config
        view = msg.to_dict()
        view = {**view, "msg": view}
        url = self._url.render(view).strip()
        if not re.match(r"(?i)https?://[^/\s]", url):
            raise MessageError(f"url {url!r} is not an http:// or https:// URL")
        params = {k: v for k, r in self._query.items() if (v := r.render(view)) != ""}
        headers = {k: r.render(view) for k, r in self._headers.items()}
        if c.bearer_token is not None:
            headers["Authorization"] = f"Bearer {c.bearer_token.get_secret_value()}"
        kwargs: dict[str, Any] = {}
        body = c.body
        payload = msg.payload
        if body == "auto":
            if c.method in ("GET", "DELETE") or payload is None:
                body = "none"
            elif isinstance(payload, bytes | bytearray):
                kwargs["content"] = bytes(payload)
            elif isinstance(payload, str):
                kwargs["content"] = payload.encode("utf-8")
                _default_type(headers, "text/plain; charset=utf-8")
            else:
                body = "json"
        if body == "json":
            kwargs["json"] = payload
        elif body == "form":
            if not isinstance(payload, dict):
                raise MessageError(f"body: form needs a dict payload, not {type(payload).__name__}")
            kwargs["data"] = {str(k): "" if v is None else str(v) for k, v in payload.items()}
        elif body == "text":
            kwargs["content"] = (
                bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode("utf-8")
            )
            _default_type(headers, "text/plain; charset=utf-8")
        try:
            return self._client.build_request(c.method, url, params=params, headers=headers, **kwargs)
        except (TypeError, ValueError, httpx.InvalidURL) as exc:
            raise MessageError(f"cannot build the request to {url}: {exc}") from None

    def _result(self, response: httpx.Response, where: str) -> Any:
        mode = self.config.result
        ctype = response.headers.get("content-type", "")
        if mode == "auto":
            if _is_json_type(ctype):
                mode = "json"
            elif _is_text_type(ctype) or "charset=" in ctype.lower():
                mode = "text"
            else:
                mode = "bytes"
        if mode == "bytes":
            return response.content
        if mode == "text":
            return response.text
        if not response.content:
            return None
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DecodeError(f"{where}: the answer is not valid JSON: {exc}") from None

    async def on_message(self, msg: Message) -> None:
        c = self.config
        request = self._request(msg)
        shown = str(request.url.copy_with(userinfo=b""))  # credentials in a URL stay out of logs
        where = f"{c.method} {shown}"
        info: dict[str, Any] = {"method": c.method, "url": shown, "status": None, "headers": {}}
        msg.meta["http_request"] = info
        attempt = 0
        while True:
            attempt += 1
            info["attempts"] = attempt
            retry_after: float | None = None
            failure: Exception
            try:
                assert self._client is not None
                response = await self._client.send(request)
            except httpx.TimeoutException as exc:
                failure = TransientError(f"{where}: timed out after {c.timeout:g}s ({type(exc).__name__})")
            except httpx.ConnectError as exc:
                failure = ServiceUnavailable(f"{where}: cannot connect: {exc or type(exc).__name__}")
            except httpx.TransportError as exc:  # the connection broke (reset, protocol error)
                failure = ServiceUnavailable(f"{where}: {type(exc).__name__}: {exc or 'connection lost'}")
            else:
                info.update(
                    status=response.status_code,
                    url=str(response.url.copy_with(userinfo=b"")),
                    headers=dict(response.headers.items()),
                )
                status = response.status_code
                if 200 <= status < 300:
                    msg.payload = self._result(response, where)
                    await self.emit(msg)
                    return
                reason = f"{where} answered {status} {response.reason_phrase}".rstrip()
                text = _excerpt(response.text) if response.content else ""
                if text:
                    reason += f": {text}"
                if status == 429 or status >= 500 or status == 408:
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                    cls = ServiceUnavailable if status in (502, 503, 504) else TransientError
                    failure = cls(reason)
                else:
                    raise HttpStatusError(reason, status)
            if attempt > c.retries:
                if attempt > 1:
                    failure.args = (f"{failure} (gave up after {attempt} attempts)",)
                raise failure
            delay = min(c.retry_backoff * 2 ** (attempt - 1), c.max_backoff)
            if retry_after is not None:
                if retry_after > c.max_backoff:
                    failure.args = (
                        f"{failure} (the server asks to retry after {retry_after:g}s, "
                        f"more than max_backoff {c.max_backoff:g}s)",
                    )
                    raise failure
                delay = retry_after
            self.log.info("%s; retry %d of %d in %.1fs", failure, attempt, c.retries, delay)
            await asyncio.sleep(delay)


# -- http-in / http-response ----------------------------------------------------------------------

#: Paths the editor API serves itself: an http-in endpoint must not shadow them.
RESERVED_PREFIXES = (
    "/api/",
    "/editor",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
)
ALLOWED_API_PREFIX = "/api/v1/"

#: How long a started http-in node waits for the editor API's server before reporting it missing.
SERVER_GRACE = 5.0

_servers: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def register_http_server(owner: Any) -> None:
    """Called by the editor API when it is built: http-in endpoints are served from now on.

    ``owner`` counts as serving until it is garbage or its ``stopping`` attribute is true.
    """
    _servers[id(owner)] = owner


def http_server_available() -> bool:
    return any(not getattr(s, "stopping", False) for s in list(_servers.values()))


class HttpInConfig(NodeConfig):
    """The endpoint. It is served by the editor API's HTTP server, so klimaflow must run with `--api`.

    `auth: api` accepts the editor API's tokens (login, API tokens, OIDC) of at least
    `role`; `auth: token` accepts exactly `Authorization: Bearer <token>` with the
    configured `token` (from `${VAR}` or `${file:...}`; compared in constant time).
    """

    method: Method = Field(default="POST", description="HTTP method.")
    path: str = Field(
        description="Path, with `{name}` parameters (Starlette syntax, e.g. `/api/v1/import/{name}`). "
        "Not under the editor API's own paths (`/api/...` other than `/api/v1/...`, `/editor`, `/docs`, ...)."
    )
    auth: Literal["api", "token"] = Field(
        default="api", description="`api`: the editor API's authentication and roles; `token`: `token` below."
    )
    role: Role = Field(default="editor", description="`auth: api`: the least role a caller needs.")
    token: SecretStr | None = Field(
        default=None, description="`auth: token`: the bearer token callers send (`${IMPORT_TOKEN}`)."
    )
    max_body: int = Field(
        default=10 * 1024 * 1024, ge=0, description="Largest accepted request body in bytes (larger: 413)."
    )
    response_timeout: Duration = Field(
        default=30.0,
        description="With an `http-response` downstream: answer 504 if it has not answered by then.",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or any(ch.isspace() for ch in value):
            raise ValueError(f"path must start with / and contain no spaces, not {value!r}")
        if not value.startswith(ALLOWED_API_PREFIX) and (
            value == "/" or any(value == p.rstrip("/") or value.startswith(p) for p in RESERVED_PREFIXES)
        ):
            raise ValueError(
                f"path {value!r} belongs to the editor API; use a path under {ALLOWED_API_PREFIX} "
                "or outside /api/, e.g. /api/v1/import/{name}"
            )
        try:
            compile_path(value)
        except (ValueError, AssertionError) as exc:
            raise ValueError(f"invalid path {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _token(self) -> HttpInConfig:
        if self.auth == "token" and (self.token is None or not self.token.get_secret_value()):
            raise ValueError("auth: token needs a non-empty token (e.g. token: ${IMPORT_TOKEN})")
        if self.auth == "api" and self.token is not None:
            raise ValueError("token is only used with auth: token")
        return self


@dataclass
class HttpAnswer:
    """What the HTTP server sends back for one request."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(status: int, content: Any, headers: dict[str, str] | None = None) -> HttpAnswer:
    body = json.dumps(content, ensure_ascii=False).encode("utf-8")
    return HttpAnswer(status, body, {"content-type": "application/json", **(headers or {})})


@dataclass
class _Exchange:
    """A request waiting for its answer; ``error`` is the last error the flow reported for it."""

    future: asyncio.Future[HttpAnswer]
    message_id: str
    error: str | None = None


#: Requests waiting for an ``http-response``, by ``meta.http.request_id``.
_pending: dict[str, _Exchange] = {}


def answer_request(request_id: str, answer: HttpAnswer) -> bool:
    """Answer a waiting request; False if it was answered already or gave up (timeout)."""
    exchange = _pending.get(request_id)
    if exchange is None or exchange.future.done():
        return False
    exchange.future.set_result(answer)
    return True


class HttpInNode(Node):
    """Serve an HTTP endpoint (Node-RED style): each request becomes a message.

    `payload`: the body, parsed JSON for JSON content types, text for `text/*`, a dict for
    form data, else bytes (None when empty). `meta.http`: `method`, `path`, `params` (path
    parameters), `query`, `headers` (without `Authorization` and `Cookie`), `request_id`.
    An `http-response` downstream answers; without one the endpoint answers 202 once the
    message is accepted.
    """

    type_name = "http-in"
    category = "network"
    Config = HttpInConfig
    inputs = 0
    outputs = ("out",)
    color = "#e7e7ae"
    icon = "http"
    config: HttpInConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path_regex, _fmt, self.convertors = compile_path(self.config.path)
        self.ready = False
        self._exchanges: set[str] = set()
        self._unsubscribe: Any = None

    @property
    def route(self) -> str:
        return f"{self.config.method} {self.config.path}"

    def match(self, path: str) -> dict[str, Any] | None:
        """Path parameters if ``path`` is this endpoint's, else None."""
        m = self.path_regex.match(path)
        if m is None:
            return None
        convertors: dict[str, Convertor[Any]] = self.convertors
        return {k: convertors[k].convert(v) for k, v in m.groupdict().items()}

    async def start(self) -> None:
        self.ready = True
        self._unsubscribe = self.ctx.subscribe_events(self._on_event)
        if http_server_available():
            self.status("ok", self.route)
        else:
            self.status("warning", f"{self.route}: waiting for the HTTP server (klimaflow run --api)")
            self.ctx.spawn(self._wait_for_server(), "wait-for-server")

    async def _wait_for_server(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVER_GRACE
        while loop.time() < deadline and self.ready:
            if http_server_available():
                self.status("ok", self.route)
                return
            await asyncio.sleep(0.05)
        if self.ready:
            text = (
                f"{self.route} is not served: http-in needs the editor API's HTTP server, "
                "run klimaflow with --api HOST:PORT"
            )
            self.status("error", text)
            self.log.error("%s", text)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") != "error" or not self._exchanges:
            return
        msg_id = event.get("msg_id")
        for rid in self._exchanges:
            ex = _pending.get(rid)
            if ex is not None and ex.message_id == msg_id:
                err = event.get("error") or {}
                ex.error = f"{err.get('node')}: {err.get('class')}: {err.get('message')}"

    async def pause(self) -> None:
        self.ready = False

    async def stop(self) -> None:
        self.ready = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for rid in list(self._exchanges):
            answer_request(rid, json_answer(503, {"detail": f"{self.route} was stopped before it answered"}))

    async def handle(self, payload: Any, http: dict[str, Any], expects_response: bool) -> HttpAnswer:
        """Turn one request into a message and wait for its answer (the HTTP server calls this)."""
        if not self.ready:
            return json_answer(503, {"detail": f"{self.route} is not running"}, {"retry-after": "1"})
        request_id = uuid.uuid4().hex
        http = {**http, "request_id": request_id}
        if not expects_response:
            msg = Message(payload, http["path"], meta={"http": http})
            await self.send(msg)
            return json_answer(202, {"accepted": True, "id": msg.id})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[HttpAnswer] = loop.create_future()

        def settled(ok: bool) -> None:
            ex = _pending.get(request_id)
            if future.done() or ex is None:
                return
            why = f": {ex.error}" if ex.error else " (the message was dropped or filtered)"
            future.set_result(json_answer(500, {"detail": f"the flow finished without answering{why}"}))

        msg = Message(payload, http["path"], meta={"http": http}, deliveries=(Delivery(settled),))
        _pending[request_id] = _Exchange(future, msg.id)
        self._exchanges.add(request_id)
        try:
            await self.send(msg)
            timeout = self.config.response_timeout
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                return json_answer(504, {"detail": f"no http-response answered within {timeout:g}s"})
        finally:
            self._exchanges.discard(request_id)
            _pending.pop(request_id, None)
            if not future.done():
                future.cancel()


class HttpResponseConfig(NodeConfig):
    """The answer to the request a message came from (an `http-in` upstream).

    `meta.http_response` (`{status, headers}`), when a message carries it, overrides these.
    """

    status: int = Field(default=200, ge=100, le=599, description="HTTP status code.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra response headers.")


def _body(payload: Any) -> tuple[bytes, str]:
    if payload is None:
        return b"", "text/plain; charset=utf-8"
    if isinstance(payload, bytes | bytearray):
        return bytes(payload), "application/octet-stream"
    if isinstance(payload, str):
        return payload.encode("utf-8"), "text/plain; charset=utf-8"
    try:
        return json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8"), "application/json"
    except (TypeError, ValueError) as exc:
        raise MessageError(f"the payload cannot be sent as JSON: {exc}") from None


class HttpResponseNode(Node):
    """Answer the HTTP request that started this message: status, headers, body from `payload`.

    Body: dict/list as JSON, text as `text/plain`, bytes as they are, None as empty.
    """

    type_name = "http-response"
    category = "network"
    Config = HttpResponseConfig
    outputs = ()
    color = "#e7e7ae"
    icon = "http"
    config: HttpResponseConfig

    async def on_message(self, msg: Message) -> None:
        http = msg.meta.get("http")
        request_id = http.get("request_id") if isinstance(http, dict) else None
        if not isinstance(request_id, str):
            raise MessageError(
                "http-response needs a message that came from an http-in node (no meta.http.request_id)"
            )
        status = self.config.status
        headers = {k.lower(): v for k, v in self.config.headers.items()}
        override = msg.meta.get("http_response")
        if isinstance(override, dict):
            if isinstance(override.get("status"), int) and 100 <= override["status"] <= 599:
                status = override["status"]
            if isinstance(override.get("headers"), dict):
                headers.update({str(k).lower(): str(v) for k, v in override["headers"].items()})
        body, ctype = _body(msg.payload)
        headers.setdefault("content-type", ctype)
        if not answer_request(request_id, HttpAnswer(status, body, headers)):
            raise MessageError(
                f"request {request_id} was already answered or gave up waiting (response_timeout)"
            )
