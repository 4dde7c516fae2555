"""InfluxDB: the ``influxdb`` connection, ``influxdb-out`` (batched, spooled writes) and ``influxdb-query``.

Both InfluxDB protocol generations are spoken: 1.x (``/write``, ``/query`` with
InfluxQL, what this town's test machines run) and 2.x (``/api/v2/write`` with a token,
org and bucket; Flux over ``/api/v2/query``, what the production sites run).

How ``influxdb-out`` keeps every point (see docs in :class:`InfluxOutNode`):

* messages become line-protocol lines at once (``on_message``) and are batched by
  size and time; a message is acknowledged only after its lines were written or
  fsync'd to the on-disk spool;
* a batch InfluxDB cannot take now (connection refused, or retries of timeouts / 5xx /
  429 exhausted) goes to the spool; while the spool is not empty newer batches go
  there too, so order is kept, and a background probe of ``/ping`` replays the spool
  oldest first once InfluxDB answers again; the spool survives restarts;
* a point InfluxDB rejects (field type conflict, unparsable) goes to the ``error``
  port with InfluxDB's reason, and the rest of its batch is still written: 1.x writes
  the valid points of a batch and answers ``400 partial write: <first reason>
  dropped=N``; 2.x rejects the whole batch on a malformed line (``400`` naming the
  line) and answers ``422`` for partial writes. The rejected lines are found from the
  reason (the line it quotes, or the measurement/field/type of a conflict), falling
  back to bisecting the batch; re-sending a line is harmless (identical points
  overwrite).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import datetime as dt
import gzip
import io
import json
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, model_validator

from engine.errors import MessageError, NodeError, ServiceUnavailable, TransientError
from engine.message import Message, release_all
from engine.node import Connection, Node
from engine.paths import get_msg, set_msg
from engine.types import ConnectionConfig, Duration, NodeConfig, connection_field
from nodes.influx_lineproto import (
    PRECISION_DIVISOR,
    LineProtocolError,
    build_line,
    conflict_lines,
    dropped_count,
    parse_error_lines,
)
from nodes.influx_spool import Record, Spool, SpoolStats, encode_record

Precision = Literal["ns", "us", "ms", "s"]

# -- errors ------------------------------------------------------------------------------------


class InfluxRejected(MessageError):
    """InfluxDB refused one or more points of this message (type conflict, unparsable line)."""

    def __init__(self, reasons: Sequence[str], lines: Sequence[str]) -> None:
        self.reasons = list(reasons)
        self.lines = list(lines)
        unique = list(dict.fromkeys(reasons))
        super().__init__(
            f"InfluxDB rejected {len(lines)} point(s): " + "; ".join(unique)
            if len(lines) > 1
            else f"InfluxDB rejected the point: {unique[0]}"
        )


class InfluxRequestError(NodeError):
    """InfluxDB refused a whole request for a reason retrying will not fix (404 database/bucket, 413)."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


class InfluxAuthError(InfluxRequestError):
    """InfluxDB refused the credentials (401/403): wrong token, user or password, or no permission."""


class InfluxQueryError(NodeError):
    """A query failed; the message is InfluxDB's."""


class InfluxTransient(TransientError):
    """A write or query that may succeed later (timeout, 5xx, 429); ``retry_after`` from the server."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


# -- connection ---------------------------------------------------------------------------------


_OPTIONAL_STR = frozenset({"database", "retention_policy", "username", "password", "org", "bucket", "token"})


class InfluxConfig(ConnectionConfig):
    """An InfluxDB server: 1.x (database, optional user/password) or 2.x (org, bucket, token)."""

    version: Literal[1, 2, "auto"] = Field(
        default=1,
        description="Protocol generation: 1 (InfluxQL, /write), 2 (Flux, /api/v2), or `auto`: 2 when `token` and `bucket` are set, else 1 (lets one shipped flow serve both, driven by the environment).",
    )
    url: str = Field(default="http://127.0.0.1:8086", description="Base URL, e.g. `http://influxdb:8086`.")
    database: str | None = Field(default=None, description="v1: database to write to and query.")
    retention_policy: str | None = Field(
        default=None, description="v1: retention policy (default: the database's default)."
    )
    username: str | None = Field(
        default=None, description="v1: user name (HTTP basic auth), if auth is enabled."
    )
    password: SecretStr | None = Field(
        default=None, description="v1: password; `${ENV}` or `${file:...}` only."
    )
    org: str | None = Field(default=None, description="v2: organization name.")
    bucket: str | None = Field(default=None, description="v2: bucket to write to.")
    token: SecretStr | None = Field(
        default=None, description="v2: API token; `${ENV}` or `${file:...}` only."
    )
    precision: Precision = Field(default="ns", description="Timestamp precision of written points.")
    timeout: Duration = Field(default=10.0, description="Timeout of one HTTP request.")
    gzip: bool = Field(default=False, description="Send write bodies gzip-compressed.")

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # `${INFLUX_TOKEN:-}` style references resolve to "": treat an empty optional as unset.
        out = {k: v for k, v in data.items() if not (v == "" and k in _OPTIONAL_STR)}
        if out.get("version") == "auto":
            out["version"] = 2 if out.get("token") and out.get("bucket") else 1
        return out

    @model_validator(mode="after")
    def _required_per_version(self) -> InfluxConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.version == 1 and not self.database:
            raise ValueError("version 1 needs `database`")
        if self.version == 2:
            missing = [n for n in ("org", "bucket", "token") if not getattr(self, n)]
            if missing:
                raise ValueError(f"version 2 needs {', '.join(missing)}")
        return self


@dataclass(slots=True)
class WriteOutcome:
    """What InfluxDB said to a write that was not a transport failure."""

    status: int
    message: str = ""
    line: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in (200, 204)

    @property
    def partial(self) -> bool:
        """Whether the points not mentioned were written (1.x 400 "partial write", 2.x 422)."""
        return self.status == 422 or "partial write" in self.message

    @property
    def dropped(self) -> int | None:
        return dropped_count(self.message)


def _error_text(response: httpx.Response) -> tuple[str, int | None]:
    """InfluxDB's error message (1.x ``{"error"}``, 2.x ``{"code","message","line"}``) and line."""
    try:
        data = response.json()
    except ValueError:
        return (response.text.strip() or response.reason_phrase), None
    if isinstance(data, dict):
        msg = data.get("error") or data.get("message") or response.text
        line = data.get("line")
        return str(msg), line if isinstance(line, int) and not isinstance(line, bool) else None
    return response.text, None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class InfluxConnection(Connection):
    """InfluxDB 1.x or 2.x over HTTP; one connection pool shared by every node using it."""

    type_name = "influxdb"
    Config = InfluxConfig
    config: InfluxConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: httpx.AsyncClient | None = None

    @property
    def precision(self) -> Precision:
        return self.config.precision

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            c = self.config
            headers = {"User-Agent": "klimaflow"}
            auth: httpx.BasicAuth | None = None
            if c.version == 2 and c.token is not None:
                headers["Authorization"] = f"Token {c.token.get_secret_value()}"
            elif c.username:
                auth = httpx.BasicAuth(c.username, c.password.get_secret_value() if c.password else "")
            self._client = httpx.AsyncClient(
                base_url=c.url.rstrip("/"),
                headers=headers,
                auth=auth,
                timeout=c.timeout,
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            )
        return self._client

    async def start(self) -> None:
        _ = self.client

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _write_request(self) -> tuple[str, dict[str, str]]:
        c = self.config
        if c.version == 1:
            params = {"db": c.database or "", "precision": c.precision}
            if c.retention_policy:
                params["rp"] = c.retention_policy
            return "/write", params
        return "/api/v2/write", {"org": c.org or "", "bucket": c.bucket or "", "precision": c.precision}

    async def write(self, body: bytes) -> WriteOutcome:
        """POST one body of line protocol; transport failures and 5xx/429 raise :class:`TransientError`."""
        path, params = self._write_request()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.config.gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            r = await self.client.post(path, params=params, content=body, headers=headers)
            # The answer is read; drop its stream. httpx's Response and its stream reference
            # each other, and that cycle keeps the Request and so the whole body (megabytes per
            # batch) alive until a garbage collection: with the engine's raised GC thresholds
            # that was ~20 bodies, a third of the ingest benchmark's peak memory.
            r.stream = httpx.ByteStream(b"")
        except httpx.ConnectError as exc:
            raise ServiceUnavailable(f"InfluxDB at {self.config.url} is unreachable: {exc}") from exc
        except httpx.TransportError as exc:
            raise InfluxTransient(f"InfluxDB write failed: {type(exc).__name__}: {exc}") from exc
        if r.status_code in (200, 204):
            return WriteOutcome(r.status_code)
        msg, line = _error_text(r)
        if r.status_code >= 500 or r.status_code == 429:
            raise InfluxTransient(f"InfluxDB answered {r.status_code}: {msg}", _retry_after(r))
        if r.status_code in (401, 403):
            raise InfluxAuthError(
                f"InfluxDB refused the credentials of connection {self.name!r} ({r.status_code}): {msg}",
                r.status_code,
            )
        if r.status_code in (400, 422, 413):
            return WriteOutcome(r.status_code, msg, line)
        if r.status_code == 404:
            # Database/bucket missing: keep the data (spool) until someone creates it.
            raise ServiceUnavailable(f"InfluxDB answered 404: {msg}")
        raise InfluxRequestError(f"InfluxDB answered {r.status_code}: {msg}", r.status_code)

    async def ping(self) -> bool:
        try:
            r = await self.client.get("/ping", timeout=min(self.config.timeout, 2.0))
        except httpx.HTTPError:
            return False
        return r.status_code in (200, 204)

    # -- queries --------------------------------------------------------------------------------

    async def _query_post(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = await self.client.post(path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServiceUnavailable(f"InfluxDB at {self.config.url} is unreachable: {exc}") from exc
        except httpx.TransportError as exc:
            raise InfluxTransient(f"InfluxDB query failed: {type(exc).__name__}: {exc}") from exc
        if r.status_code >= 500 or r.status_code == 429:
            raise InfluxTransient(f"InfluxDB answered {r.status_code}: {_error_text(r)[0]}", _retry_after(r))
        if r.status_code in (401, 403):
            raise InfluxAuthError(
                f"InfluxDB refused the credentials of connection {self.name!r} ({r.status_code}): "
                f"{_error_text(r)[0]}",
                r.status_code,
            )
        if r.status_code >= 400:
            raise InfluxQueryError(_error_text(r)[0])
        return r

    async def query_influxql(
        self, q: str, params: dict[str, Any] | None = None, epoch: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query (v1): each series value as a dict, the series' tags merged in."""
        c = self.config
        data = {"q": q, "db": c.database or ""}
        if c.retention_policy:
            data["rp"] = c.retention_policy
        if params:
            data["params"] = json.dumps(params)
        if epoch:
            data["epoch"] = epoch
        r = await self._query_post("/query", data=data)
        body = r.json()
        if "error" in body:
            raise InfluxQueryError(str(body["error"]))
        rows: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxQueryError(str(result["error"]))
            for series in result.get("series", []):
                columns = series.get("columns", [])
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    row = dict(zip(columns, values, strict=False))
                    row.update(tags)
                    rows.append(row)
        return rows

    async def query_flux(self, flux: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a Flux query (v2); ``params`` become a ``params`` record defined before the query."""
        if params:
            flux = f"params = {flux_record(params)}\n{flux}"
        r = await self._query_post(
            "/api/v2/query",
            params={"org": self.config.org or ""},
            json={
                "query": flux,
                "type": "flux",
                "dialect": {
                    "header": True,
                    "delimiter": ",",
                    "annotations": ["datatype", "group", "default"],
                    "commentPrefix": "#",
                    "dateTimeFormat": "RFC3339",
                },
            },
            headers={"Accept": "application/csv"},
        )
        return parse_annotated_csv(r.text)


# -- Flux helpers ------------------------------------------------------------------------------


def flux_literal(value: Any) -> str:
    """A Flux literal for a parameter value: never string formatting of the query itself."""
    if value is None:
        raise MessageError("a Flux parameter cannot be null")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if "." in repr(value) or "e" in repr(value) else f"{value!r}.0"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(flux_literal(v) for v in value) + "]"
    raise MessageError(f"unsupported Flux parameter type {type(value).__name__}")


_FLUX_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def flux_record(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if not _FLUX_IDENT.match(k):
            raise MessageError(f"Flux parameter name {k!r} is not an identifier")
        parts.append(f"{k}: {flux_literal(v)}")
    return "{" + ", ".join(parts) + "}"


def _convert_csv(value: str, datatype: str, default: str) -> Any:
    if value == "":
        value = default
        if value == "":
            return None
    if datatype in ("long", "unsignedLong"):
        return int(value)
    if datatype == "double":
        return float(value)
    if datatype == "boolean":
        return value == "true"
    return value


def parse_annotated_csv(text: str) -> list[dict[str, Any]]:
    """Rows of Flux's annotated CSV (all tables); a Flux ``error`` table raises :class:`InfluxQueryError`."""
    rows: list[dict[str, Any]] = []
    datatypes: list[str] = []
    defaults: list[str] = []
    header: list[str] | None = None
    for rec in csv.reader(io.StringIO(text)):
        if not rec or all(c == "" for c in rec):
            header = None  # a blank line ends a table
            datatypes, defaults = [], []
            continue
        first = rec[0]
        if first == "#datatype":
            datatypes, header = rec, None
            continue
        if first == "#default":
            defaults = rec
            continue
        if first.startswith("#"):
            continue
        if header is None:
            header = rec
            continue
        row: dict[str, Any] = {}
        for i, name in enumerate(header):
            if i == 0 and name == "":
                continue
            value = rec[i] if i < len(rec) else ""
            dtype = datatypes[i] if i < len(datatypes) else "string"
            dflt = defaults[i] if i < len(defaults) else ""
            row[name] = _convert_csv(value, dtype, dflt)
        if "error" in row and "reference" in row and len(row) <= 3:
            raise InfluxQueryError(str(row["error"]))
        rows.append(row)
    return rows


# -- time helpers ---------------------------------------------------------------------------------

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:?\d\d)?$")


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch from RFC 3339 (up to 9 fraction digits; no zone means UTC)."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, frac, zone = m.groups()
    if zone in (None, "Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    d = dt.datetime.fromisoformat(base.replace(" ", "T") + zone)
    return int(d.timestamp()) * 1_000_000_000 + int((frac or "").ljust(9, "0") or 0)


# -- influxdb-out ------------------------------------------------------------------------------------


class InfluxOutConfig(NodeConfig):
    """Where to write and how a message becomes points.

    Without ``measurement``/``measurement_from`` the payload must follow the *reading*
    contract: ``{"measurement": str, "tags": {str: str}, "fields": {str: number|bool|str},
    "time": int ns since the epoch}`` (``time`` optional), or a list of such dicts.
    With them, ``tags``, ``fields`` and ``time`` map message properties to a point.
    """

    server: str = connection_field("influxdb", "Name of the `influxdb` connection to write to.")
    measurement: str | None = Field(default=None, description="Map mode: fixed measurement name.")
    measurement_from: str | None = Field(
        default=None, description="Map mode: property path holding the measurement (e.g. `topic`)."
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Map mode: tag name → property path (e.g. `device: payload.dev_id`).",
    )
    static_tags: dict[str, str] = Field(
        default_factory=dict, description="Tags added to every point (both modes; a point's own tag wins)."
    )
    fields: dict[str, str] | None = Field(
        default=None,
        description="Map mode: field name → property path; unset = every numeric top-level key of the payload.",
    )
    units: dict[str, str] = Field(
        default_factory=dict,
        description="Grafana unit id per stored field (e.g. `temp: celsius`, `level: lengthmm`), "
        "for `klimaflow grafana`; not used when writing.",
    )
    time: str | None = Field(
        default=None,
        description="Map mode: property path of the time; unset = when the message entered the flow.",
    )
    time_format: Literal["ns", "us", "ms", "s", "rfc3339"] = Field(
        default="ns", description="Map mode: format of `time` (epoch ns/us/ms/s, or an RFC 3339 string)."
    )
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="Points per write request at most.")
    batch_interval: Duration = Field(default=1.0, description="Write a partial batch after this long.")
    max_retries: int = Field(
        default=3, ge=0, le=20, description="Retries of a write on timeouts, 5xx and 429 before spooling it."
    )
    retry_backoff: Duration = Field(default=0.5, description="First retry delay; doubles per retry.")
    max_backoff: Duration = Field(default=10.0, description="Upper bound of retry and probe delays.")
    probe_interval: Duration = Field(
        default=5.0, description="While InfluxDB is unreachable, longest wait between `/ping` probes."
    )
    spool_max_bytes: int = Field(
        default=1024**3,
        ge=1,
        description="On-disk spool limit; when full, new messages wait (back-pressure) — nothing is dropped.",
    )
    spool_segment_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Spool segment file size (default: 1/16 of the limit, at most 16 MiB).",
    )

    @model_validator(mode="after")
    def _mapping(self) -> InfluxOutConfig:
        if self.measurement is not None and self.measurement_from is not None:
            raise ValueError("set either measurement or measurement_from, not both")
        if (
            self.measurement is None
            and self.measurement_from is None
            and (self.tags or self.fields is not None or self.time is not None)
        ):
            raise ValueError("tags/fields/time mapping needs measurement or measurement_from")
        return self


@dataclass(slots=True)
class _Batch:
    lines: list[str] = field(default_factory=list)
    owners: list[tuple[Message, int]] = field(default_factory=list)

    def release(self) -> None:
        release_all([msg for msg, _ in self.owners])


class InfluxOutNode(Node):
    """Write messages to InfluxDB as points: batched, retried, spooled to disk while InfluxDB is away.

    A point InfluxDB rejects goes to the ``error`` port (``InfluxRejected`` with
    InfluxDB's reason) while the rest of its batch is written. A message is
    acknowledged after its points were written or spooled. ``stats`` counts points:
    written, rejected, spooled, replayed, plus retries and write requests.
    """

    type_name = "influxdb-out"
    category = "storage"
    Config = InfluxOutConfig
    outputs = ()
    color = "#c0deed"
    icon = "database"
    config: InfluxOutConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        self._map_mode = c.measurement is not None or c.measurement_from is not None
        self._lines: list[str] = []
        self._owners: list[tuple[Message, int]] = []
        self._deadline = 0.0
        self._armed = asyncio.Event()
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        self._pending: deque[_Batch] = deque()
        self._stopping = False
        self._down = False
        self._spool: Spool | None = None
        self._writer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.stats: dict[str, float] = dict.fromkeys(
            ("written", "rejected", "spooled", "replayed", "retries", "write_requests"), 0
        )
        # Write latency of the requests InfluxDB accepted (a 2xx): total and the latest one.
        self.stats.update(write_seconds=0.0, last_write_seconds=0.0)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        conn = self.ctx.connection(self.config.server)
        assert isinstance(conn, InfluxConnection)
        self.conn = conn
        self._div = PRECISION_DIVISOR[conn.precision]
        c = self.config
        spool_dir = Path(self.ctx.data_dir()) / "spool"
        self._spool = await asyncio.to_thread(Spool(spool_dir, c.spool_max_bytes, c.spool_segment_bytes).open)
        if not self._spool.empty:
            self.log.info(
                "spool holds %d point(s) from an earlier run; replaying them first", self._spool.points
            )
        self._update_status()
        self._writer = asyncio.create_task(self._run_writer(), name=f"{self.ctx.node_id}:writer")
        self._writer.add_done_callback(self._writer_done)
        self._ticker = asyncio.create_task(self._run_ticker(), name=f"{self.ctx.node_id}:ticker")

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("writer failed, messages are no longer written: %s: %s", type(exc).__name__, exc)
            self.status("error", f"writer failed: {type(exc).__name__}: {exc}"[:120])

    async def stop(self) -> None:
        """Flush the current batch: write it if InfluxDB answers at once, else spool it."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._writer is None:
            return
        self._stopping = True
        if not self._writer.done():  # a dead writer takes nothing: leave those messages unacknowledged
            await self._flush()
            await self._queue.put(None)
        with contextlib.suppress(Exception):
            await self._writer
        self._update_status()

    # -- mapping (hot path) --------------------------------------------------------------------------

    async def on_message(self, msg: Message) -> None:
        await self.on_batch([msg])  # the runtime hands this node batches; one is a batch of one

    async def on_batch(self, msgs: list[Message]) -> None:
        buf = self._lines
        owners = self._owners
        size = self.config.batch_size
        reading_line = self._reading_line
        map_mode = self._map_mode
        for msg in msgs:
            p = msg.payload
            try:
                # The hot path: one reading per message.
                lines = [reading_line(p, msg)] if not map_mode and type(p) is dict else self._map(msg)
            except Exception as exc:  # this message's problem, not the batch's
                await self.emit_error(msg, exc)
                continue
            if not lines:
                continue
            for d in msg.deliveries:  # self.hold(msg)
                d.retain()
            if not buf:
                self._deadline = time.monotonic() + self.config.batch_interval
                self._armed.set()
            buf.extend(lines)
            owners.append((msg, len(lines)))
            if len(buf) >= size:
                await self._flush()
                buf = self._lines
                owners = self._owners

    def _map(self, msg: Message) -> list[str]:
        p = msg.payload
        if self._map_mode:
            return [self._mapped_line(msg)]
        if type(p) is dict:
            return [self._reading_line(p, msg)]
        if type(p) is list:
            return [self._reading_line(r, msg) for r in p]
        raise MessageError(
            f"payload is a {type(p).__name__}, not a reading dict (or list of them); "
            "configure measurement/tags/fields to map other payloads"
        )

    def _timestamp(self, ns: int) -> int:
        d = self._div
        return ns if d == 1 else ns // d

    def _reading_line(self, r: Any, msg: Message) -> str:
        if type(r) is not dict:
            raise MessageError(f"reading must be a dict, got {type(r).__name__}")
        m = r.get("measurement")
        fields = r.get("fields")
        tags = r.get("tags")
        t = r.get("time")
        if type(m) is not str or not m:
            raise MessageError("reading needs a non-empty string 'measurement'")
        if type(fields) is not dict or not fields:
            raise MessageError("reading needs a non-empty dict 'fields'")
        if tags is not None and type(tags) is not dict:
            raise MessageError("reading 'tags' must be a dict of strings")
        if self.config.static_tags:
            tags = {**self.config.static_tags, **(tags or {})}
        if t is None:
            ts = self._timestamp(int(msg.entered_at * 1e9))
        elif type(t) is int:
            ts = self._timestamp(t)
        else:
            raise MessageError(f"reading 'time' must be an integer of nanoseconds, got {t!r}")
        try:
            return build_line(m, tags, fields, ts)
        except LineProtocolError as exc:
            raise MessageError(f"reading cannot be written: {exc}") from None

    def _mapped_line(self, msg: Message) -> str:
        c = self.config
        if c.measurement is not None:
            measurement = c.measurement
        else:
            assert c.measurement_from is not None
            value = get_msg(msg, c.measurement_from)
            if value is None or value == "":
                raise MessageError(f"measurement property {c.measurement_from!r} is missing")
            measurement = str(value)
        tags: dict[str, str] = dict(c.static_tags)
        for name, path in c.tags.items():
            value = get_msg(msg, path)
            if value is not None:
                tags[name] = value if isinstance(value, str) else str(value)
        if c.fields is None:
            p = msg.payload
            if not isinstance(p, dict):
                raise MessageError("payload is not a dict: name the fields to write in `fields`")
            fields = {k: v for k, v in p.items() if type(v) in (int, float) and k not in c.tags}
        else:
            fields = {name: get_msg(msg, path) for name, path in c.fields.items()}
        ns = int(msg.entered_at * 1000000000.0) if c.time is None else self._time_ns(get_msg(msg, c.time))
        try:
            return build_line(measurement, tags, fields, self._timestamp(ns))
        except LineProtocolError as exc:
            raise MessageError(f"message cannot be written: {exc}") from None

    def _time_ns(self, value: Any) -> int:
        fmt = self.config.time_format
        if value is None:
            raise MessageError(f"time property {self.config.time!r} is missing")
        if fmt == "rfc3339":
            if not isinstance(value, str):
                raise MessageError(f"time {value!r} is not an RFC 3339 string")
            try:
                return rfc3339_ns(value)
            except ValueError as exc:
                raise MessageError(str(exc)) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MessageError(f"time {value!r} is not a number of {fmt} since the epoch")
        scale = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[fmt]
        return int(value) * scale if isinstance(value, int) else round(value * scale)

    # -- batching -------------------------------------------------------------------------------------

    async def _flush(self) -> None:
        if not self._lines:
            return
        batch = _Batch(self._lines, self._owners)
        self._lines, self._owners = [], []
        self._armed.clear()
        await self._queue.put(batch)

    async def _run_ticker(self) -> None:
        while True:
            await self._armed.wait()
            delay = self._deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            await self._flush()

    # -- writer ----------------------------------------------------------------------------------------

    async def _run_writer(self) -> None:
        """The one task that writes, spools and replays, so their order is the messages' order.

        Ends when it takes the ``None`` that :meth:`stop` queues, after every batch before
        it was written or spooled.
        """
        spool = self._spool
        assert spool is not None
        queue = self._queue
        pending = self._pending
        closing = False
        probe_delay = 0.05
        while True:
            if spool.empty and not pending:
                batch = await queue.get()
                if batch is None:
                    return
                if not await self._write_batch(batch):
                    pending.append(batch)
                continue
            # Spool mode: everything new goes behind what is already spooled.
            while True:
                if not closing and not pending:
                    try:
                        item = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is None:
                        closing = True
                        continue
                    pending.append(item)
                if not pending:
                    break
                # When closing, spool even past the limit rather than leave messages unacknowledged.
                if not (closing or spool.has_room(self._batch_bytes(pending[0]))):
                    break
                if not await self._spool_batch(pending[0]):
                    await asyncio.sleep(1.0)
                    break
                pending.popleft()
            self._update_status()
            if closing and not pending:
                return
            if spool.empty:
                continue
            if self._down and not self._stopping and await self.conn.ping():
                self._down = False
            if not self._down and not self._stopping and await self._replay_one():
                probe_delay = 0.05
                continue
            self._down = True
            probe_delay = min(max(probe_delay * 2, 0.05), self.config.probe_interval)
            if pending or closing:  # spool full: new batches stay queued (back-pressure)
                await asyncio.sleep(probe_delay)
                continue
            with contextlib.suppress(TimeoutError):
                item = await asyncio.wait_for(queue.get(), probe_delay)
                if item is None:
                    closing = True
                else:
                    pending.append(item)

    @staticmethod
    def _batch_bytes(batch: _Batch) -> int:
        return sum(len(x) for x in batch.lines) + len(batch.lines) + 80

    async def _spool_batch(self, batch: _Batch) -> bool:
        """Append a batch to the spool (fsync'd) and acknowledge its messages; False on a disk error."""
        spool = self._spool
        assert spool is not None
        data = encode_record(batch.lines)
        try:
            await asyncio.to_thread(spool.append, data, len(batch.lines))
        except OSError as exc:
            self.log.error("cannot spool %d point(s): %s", len(batch.lines), exc)
            self.status("error", f"spool write failed: {exc}"[:120])
            return False
        self.stats["spooled"] += len(batch.lines)
        batch.release()
        return True

    async def _replay_one(self) -> bool:
        """Write the oldest spooled record; False if InfluxDB is unreachable."""
        spool = self._spool
        assert spool is not None
        record: Record | None = await asyncio.to_thread(spool.peek)
        if record is None:
            return True
        try:
            rejected = await self._write_lines(record.lines)
        except TransientError as exc:
            self.log.info("replay paused: %s", exc)
            return False
        except InfluxRequestError as exc:
            self.status("error", str(exc)[:120])
            self.log.error("replay refused: %s", exc)
            return False
        spool.commit(record)
        self.stats["replayed"] += len(record.lines) - len(rejected)
        self.stats["written"] += len(record.lines) - len(rejected)
        for i, reason in rejected.items():
            # The original message was acknowledged when it was spooled: report the line itself.
            err_msg = Message({"line": record.lines[i]}, meta={"spooled": True})
            await self.emit_error(err_msg, InfluxRejected([reason], [record.lines[i]]))
        self._update_status()
        return True

    async def _write_batch(self, batch: _Batch) -> bool:
        """Write a batch now; False if InfluxDB is unreachable (the caller spools it)."""
        try:
            rejected = await self._write_lines(batch.lines)
        except TransientError as exc:
            self._down = True
            self.log.warning("InfluxDB unavailable, spooling %d point(s): %s", len(batch.lines), exc)
            return False
        except InfluxRequestError as exc:
            self.status("error", str(exc)[:120])
            for msg, _ in batch.owners:
                await self.emit_error(msg, exc)
                msg.release(ok=False)
            return True
        self.stats["written"] += len(batch.lines) - len(rejected)
        if not rejected:
            batch.release()
        else:
            start = 0
            for msg, n in batch.owners:
                mine = [i for i in range(start, start + n) if i in rejected]
                start += n
                if mine:
                    await self.emit_error(
                        msg, InfluxRejected([rejected[i] for i in mine], [batch.lines[i] for i in mine])
                    )
                msg.release(ok=not mine)
        self._update_status()
        return True

    async def _post(self, lines: list[str]) -> WriteOutcome:
        """One write with retries on transient failures (none for connection refused, or when stopping)."""
        body = "\n".join(lines).encode("utf-8")
        c = self.config
        attempt = 0
        while True:
            self.stats["write_requests"] += 1
            t0 = time.perf_counter()
            try:
                outcome = await self.conn.write(body)
                if outcome.ok:
                    elapsed = time.perf_counter() - t0
                    self.stats["write_seconds"] += elapsed
                    self.stats["last_write_seconds"] = elapsed
                return outcome
            except ServiceUnavailable:
                raise
            except InfluxTransient as exc:
                attempt += 1
                if self._stopping or attempt > c.max_retries:
                    raise
                self.stats["retries"] += 1
                delay = min(c.max_backoff, c.retry_backoff * 2 ** (attempt - 1))
                if exc.retry_after is not None:
                    delay = min(c.max_backoff, max(delay, exc.retry_after))
                self.log.info("retrying write in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)

    async def _write_lines(self, lines: list[str]) -> dict[int, str]:
        """Write ``lines``; returns {index: InfluxDB's reason} of the lines it rejected."""
        rejected: dict[int, str] = {}
        await self._resolve(lines, list(range(len(lines))), rejected)
        self.stats["rejected"] += len(rejected)
        return rejected

    async def _resolve(self, lines: list[str], index: list[int], out: dict[int, str]) -> None:
        outcome = await self._post(lines)
        if outcome.ok:
            return
        msg = outcome.message
        if len(lines) == 1:
            out[index[0]] = msg
            return
        culprits: dict[int, str] = {}
        if outcome.line is not None and 1 <= outcome.line <= len(lines):
            culprits = {outcome.line - 1: msg}
        else:
            culprits = parse_error_lines(msg, lines) or dict.fromkeys(conflict_lines(msg, lines), msg)
        if outcome.partial:
            dropped = outcome.dropped
            parse_only = bool(culprits) and dropped == 0 and "field type conflict" not in msg
            if culprits and (parse_only or dropped == len(culprits)):
                for i, reason in culprits.items():
                    out[index[i]] = reason
                return
            if dropped is not None and dropped == len(lines):
                for i in index:
                    out[i] = msg
                return
        elif culprits and len(culprits) < len(lines):
            # Nothing of this request was written, but the culprits are known: drop them, send the rest.
            for i, reason in culprits.items():
                out[index[i]] = reason
            rest = [i for i in range(len(lines)) if i not in culprits]
            await self._resolve([lines[i] for i in rest], [index[i] for i in rest], out)
            return
        if culprits and len(culprits) < len(lines):
            groups = [sorted(culprits), [i for i in range(len(lines)) if i not in culprits]]
        else:
            half = len(lines) // 2
            groups = [list(range(half)), list(range(half, len(lines)))]
        for g in groups:
            await self._resolve([lines[i] for i in g], [index[i] for i in g], out)

    # -- status ---------------------------------------------------------------------------------------

    @property
    def buffered_points(self) -> int:
        return self._spool.points if self._spool is not None else 0

    def spool_stats(self) -> SpoolStats:
        """What the on-disk spool holds now (nothing before the node started)."""
        return self._spool.stats() if self._spool is not None else SpoolStats(0, 0)

    def _update_status(self) -> None:
        spool = self._spool
        if spool is not None and not spool.empty:
            mib = spool.bytes / (1024 * 1024)
            state = "InfluxDB unreachable" if self._down else "replaying"
            full = ", spool full" if self._pending else ""
            self.status("warning", f"{state}: {spool.points} point(s) spooled ({mib:.1f} MiB){full}")
        else:
            self.status("ok", f"{self.stats['written']} written, {self.stats['rejected']} rejected")


# -- influxdb-query -------------------------------------------------------------------------------------


class InfluxQueryConfig(NodeConfig):
    """A query run for every incoming message, with parameters bound from the message."""

    server: str = connection_field("influxdb", "Name of the `influxdb` connection to query.")
    query: str = Field(
        description="InfluxQL (v1) or Flux (v2). Refer to parameters as `$name` (InfluxQL) or `params.name` (Flux)."
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Parameter name → message property path (e.g. `device: payload.dev_id`); values are bound, never pasted into the query.",
    )
    output: Literal["rows", "split"] = Field(
        default="rows", description="`rows`: one message with the list of rows; `split`: one message per row."
    )
    property: str = Field(
        default="payload", description="Where the rows (or the row) are put on the message."
    )
    epoch: Literal["rfc3339", "ns", "us", "ms", "s"] = Field(
        default="rfc3339", description="v1: format of `time` in the rows (RFC 3339 or epoch units)."
    )


class InfluxQueryNode(Node):
    """Run an InfluxQL or Flux query per message and emit the rows."""

    type_name = "influxdb-query"
    category = "storage"
    Config = InfluxQueryConfig
    color = "#c0deed"
    icon = "database"
    config: InfluxQueryConfig

    async def start(self) -> None:
        conn = self.ctx.connection(self.config.server)
        assert isinstance(conn, InfluxConnection)
        self.conn = conn

    async def on_message(self, msg: Message) -> None:
        c = self.config
        params: dict[str, Any] = {}
        for name, path in c.params.items():
            value = get_msg(msg, path)
            if value is None:
                raise MessageError(f"query parameter {name!r}: property {path!r} is missing")
            params[name] = value
        if self.conn.config.version == 1:
            epoch = {"rfc3339": None, "us": "u"}.get(c.epoch, c.epoch)
            rows = await self.conn.query_influxql(c.query, params or None, epoch)
        else:
            rows = await self.conn.query_flux(c.query, params or None)
        if c.output == "rows":
            out = self._derive(msg, rows)
            await self.emit(out)
            out.release()
            return
        for i, row in enumerate(rows):
            out = self._derive(msg, row, parts={"index": i, "count": len(rows)})
            await self.emit(out)
            out.release()

    def _derive(self, msg: Message, value: Any, **meta: Any) -> Message:
        prop = self.config.property
        out = msg.derive(None if prop == "payload" else copy.deepcopy(msg.payload), **meta)
        set_msg(out, prop, value)
        return out
