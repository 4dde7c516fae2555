"""influxdb-out against a real influxd 1.6.7 (v1) and the documented-API fake (v2)."""

from __future__ import annotations

import asyncio
import gzip
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point

from engine.message import Delivery, Message
from nodes.influx_lineproto import build_line, conflict_lines, parse_error_lines, parse_fields
from nodes.influxdb import InfluxOutNode, rfc3339_ns
from tests.flowkit import FlowHarness, run_flow, validate_doc
from tests.services._proc import free_port
from tests.services.influx2_fake import InfluxV2Fake
from tests.services.influxdb import InfluxDB

T0 = 1_700_000_000_000_000_000  # ns


def flow(url: str, *, version: int = 1, conn: dict[str, Any] | None = None, **node: Any) -> dict[str, Any]:
    connection: dict[str, Any] = {"type": "influxdb", "version": version, "url": url}
    if version == 1:
        connection["database"] = "klima"
    else:
        connection.update(org="klima", bucket="sensors", token="${INFLUX_TOKEN}")
    connection.update(conn or {})
    return {
        "id": "f",
        "connections": {"db": connection},
        "nodes": [
            {
                "id": "out",
                "type": "influxdb-out",
                "server": "db",
                "batch_interval": 0.05,
                "probe_interval": 0.2,
                "retry_backoff": 0.05,
                **node,
                "wires": {"error": ["errors"]},
            },
            {"id": "errors", "type": "collect"},
        ],
    }


def reading(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "measurement": "climate",
        "tags": {"device": f"dev-{i % 3}"},
        "fields": fields or {"temp": 20.0 + i / 8, "n": i},
        "time": T0 + i * 1_000_000,
    }


def out_node(h: FlowHarness) -> InfluxOutNode:
    node = h.engine.node("out")
    assert isinstance(node, InfluxOutNode)
    return node


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- line protocol builder -----------------------------------------------------------------------------

names = st.text(min_size=1, max_size=12).filter(lambda s: not s.startswith("#") and not s.endswith("\\"))
tag_keys = st.text(max_size=8).filter(lambda s: not s.endswith("\\"))
field_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=12),
    st.none(),
)


def point_line(measurement: str, tags: dict[str, str], fields: dict[str, Any], ts: int | None) -> str:
    p = Point(measurement)
    for k, v in tags.items():
        p.tag(k, v)
    for k, v in fields.items():
        p.field(k, v)
    if ts is not None:
        p.time(ts)
    return str(p.to_line_protocol())


@settings(max_examples=400, deadline=None)
@given(
    measurement=names,
    tags=st.dictionaries(tag_keys, st.text(max_size=8), max_size=4),
    fields=st.dictionaries(names, field_values, min_size=1, max_size=5),
    ts=st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
)
def test_build_line_agrees_with_influxdb_client_point(
    measurement: str, tags: dict[str, str], fields: dict[str, Any], ts: int | None
) -> None:
    expected = point_line(measurement, tags, fields, ts)
    if re.search(r"\\[ ,]", measurement) or any(re.search(r"\\[ ,=]", k) for k in [*tags, *fields]):
        # Point escapes these too, but InfluxDB reads the result back as a different name.
        with pytest.raises(ValueError, match="cannot express"):
            build_line(measurement, tags, fields, ts)
        return
    if not expected:  # Point gives "" when no field has a value; we refuse such a point
        with pytest.raises(ValueError, match="no field"):
            build_line(measurement, tags, fields, ts)
        return
    assert build_line(measurement, tags, fields, ts) == expected
    # and the parser used to name rejected lines reads back what was built
    parsed = parse_fields(expected)
    assert parsed is not None
    assert parsed[0] == measurement.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def test_build_line_refuses_what_line_protocol_cannot_express() -> None:
    # Point would emit these, and InfluxDB would misread them (the backslash escapes the separator).
    with pytest.raises(ValueError, match="ends with a backslash"):
        build_line("m\\", None, {"v": 1.0}, None)
    with pytest.raises(ValueError, match="ends with a backslash"):
        build_line("m", None, {"v\\": 1.0}, None)
    with pytest.raises(ValueError, match="starts with '#'"):
        build_line("#m", None, {"v": 1.0}, None)
    with pytest.raises(ValueError, match="64-bit"):
        build_line("m", None, {"v": 2**63}, None)


def test_build_line_escapes_and_types() -> None:
    line = build_line(
        "air quality",
        {"site": "Markt, Nord", "k=v": "a b", "empty": ""},
        {"temp": 21.0, "count": 3, "ok": True, "note": 'say "hi" \\o/', "nan": math.nan},
        T0,
    )
    assert line == (
        'air\\ quality,k\\=v=a\\ b,site=Markt\\,\\ Nord count=3i,note="say \\"hi\\" \\\\o/",ok=true,temp=21 '
        f"{T0}"
    )


def test_rejected_lines_are_named_from_influxdb_messages() -> None:
    lines = ["m,d=a t=1 1", 'm,d=b t="x" 2', 'm\\ x t="y" 3', 'other t="z" 4', "m t=5i 5"]
    msg = 'partial write: field type conflict: input field "t" on measurement "m" is type string, already exists as type float dropped=1'
    assert conflict_lines(msg, lines) == [1]
    assert parse_fields('m\\ x,a=b\\ c s="q,\\" r",v=2i 9') == ("m x", {"s": "string", "v": "integer"})
    msg2 = "partial write: unable to parse 'bad': missing fields\nunable to parse 'worse x': invalid field format dropped=0"
    assert parse_error_lines(msg2, ["ok v=1", "bad", "worse x"]) == {
        1: "unable to parse 'bad': missing fields",
        2: "unable to parse 'worse x': invalid field format",
    }


def test_rfc3339_with_nanoseconds_and_offsets() -> None:
    assert rfc3339_ns("2023-11-14T22:13:20.123456789Z") == 1_700_000_000_123_456_789
    assert rfc3339_ns("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500_000_000
    assert rfc3339_ns("2023-11-14T22:13:20") == 1_700_000_000_000_000_000


def test_config_refuses_literal_token_and_incomplete_v2() -> None:
    doc = flow("http://127.0.0.1:1", version=2, conn={"token": "plain-secret"})
    v, issues = validate_doc(doc, environ={"INFLUX_TOKEN": "t"})
    assert v is None
    assert any(i.code == "literal-secret" and i.field == "token" for i in issues)
    doc = flow("http://127.0.0.1:1", version=2, conn={"bucket": None})
    v, issues = validate_doc(doc, environ={"INFLUX_TOKEN": "t"})
    assert v is None
    assert any("version 2 needs bucket" in i.message for i in issues)


# -- v1 against influxd 1.6.7 -----------------------------------------------------------------------------


async def test_n_messages_become_exactly_n_points(influxdb: InfluxDB, tmp_path: Path) -> None:
    n = 300
    async with run_flow(flow(influxdb.url, batch_size=64), data_dir=tmp_path) as h:
        for i in range(n):
            await h.send("out", reading(i))
        # a list payload gives several points
        await h.send("out", [reading(1000, temp=1.5), reading(1001, temp=2.5)])
        node = out_node(h)
        await until(lambda: node.stats["written"] == n + 2, what="all points written")
        assert h.received("errors") == []
    rows = influxdb.rows('SELECT "temp", "n", "device" FROM "climate" ORDER BY time', "klima")
    assert len(rows) == n + 2
    for i, row in enumerate(rows[:n]):
        assert row == {"time": T0 + i * 1_000_000, "temp": 20.0 + i / 8, "n": i, "device": f"dev-{i % 3}"}
    assert rows[n:] == [
        {"time": T0 + 1000 * 1_000_000, "temp": 1.5, "n": None, "device": "dev-1"},
        {"time": T0 + 1001 * 1_000_000, "temp": 2.5, "n": None, "device": "dev-2"},
    ]


async def test_batches_by_size(influxdb: InfluxDB, tmp_path: Path) -> None:
    async with run_flow(flow(influxdb.url, batch_size=10, batch_interval=60), data_dir=tmp_path) as h:
        for i in range(25):
            await h.send("out", reading(i))
        node = out_node(h)
        await until(lambda: node.stats["written"] == 20, what="two full batches")
        await asyncio.sleep(0.1)
        assert node.stats["write_requests"] == 2
        assert influxdb.query('SELECT count("n") FROM "climate"', "klima")[0]["values"][0][1] == 20
    # stop() flushed the partial batch
    assert node.stats["write_requests"] == 3
    assert influxdb.query('SELECT count("n") FROM "climate"', "klima")[0]["values"][0][1] == 25


async def test_batches_by_time(influxdb: InfluxDB, tmp_path: Path) -> None:
    async with run_flow(flow(influxdb.url, batch_size=5000, batch_interval=0.3), data_dir=tmp_path) as h:
        started = time.monotonic()
        for i in range(3):
            await h.send("out", reading(i))
        await h.idle()
        node = out_node(h)
        assert node.stats["write_requests"] == 0
        await until(lambda: node.stats["written"] == 3, what="time flush")
        assert time.monotonic() - started >= 0.3
        assert node.stats["write_requests"] == 1


async def test_type_conflict_goes_to_error_port_rest_of_batch_stored(
    influxdb: InfluxDB, tmp_path: Path
) -> None:
    # the field is a float in this shard already
    assert influxdb.write("klima", f"climate,device=dev-0 temp=1.5 {T0 - 1}").status_code == 204
    async with run_flow(flow(influxdb.url, batch_size=100, batch_interval=60), data_dir=tmp_path) as h:
        for i in range(100):
            fields = {"temp": f"broken-{i}"} if i % 10 == 3 else {"temp": float(i)}
            await h.send("out", reading(i, **fields))
        node = out_node(h)
        await until(lambda: len(h.received("errors")) == 10, what="ten errors")
        await until(lambda: node.stats["written"] == 90, what="90 written")
        errors = h.received("errors")
        assert [m.payload["fields"]["temp"] for m in errors] == [f"broken-{i}" for i in range(3, 100, 10)]
        info = errors[0].meta["error"]
        assert info["class"] == "InfluxRejected"
        assert "MessageError" in info["classes"]
        assert info["message"] == (
            'InfluxDB rejected the point: partial write: field type conflict: input field "temp" on '
            'measurement "climate" is type string, already exists as type float dropped=10'
        )
        # found from InfluxDB's reason, not by re-sending point by point
        assert node.stats["write_requests"] == 1
        assert node.stats["rejected"] == 10
    rows = influxdb.rows(f'SELECT "temp" FROM "climate" WHERE time >= {T0} ORDER BY time', "klima")
    assert [r["temp"] for r in rows] == [float(i) for i in range(100) if i % 10 != 3]


async def test_rejection_without_a_usable_reason_is_bisected(influxdb: InfluxDB, tmp_path: Path) -> None:
    # 1.6.7 drops points older than the retention policy with a reason that names no line.
    influxdb.query('CREATE RETENTION POLICY "short" ON "klima" DURATION 1h REPLICATION 1 DEFAULT')
    now = time.time_ns()
    async with run_flow(flow(influxdb.url, batch_size=16, batch_interval=60), data_dir=tmp_path) as h:
        for i in range(16):
            r = reading(i)
            r["time"] = now - 10 * 3600 * 10**9 if i == 5 else now + i
            await h.send("out", r)
        node = out_node(h)
        await until(lambda: len(h.received("errors")) == 1, what="one error")
        await until(lambda: node.stats["written"] == 15, what="15 written")
        err = h.received("errors")[0]
        assert err.payload["fields"]["n"] == 5
        assert "points beyond retention policy" in err.meta["error"]["message"]
    assert influxdb.query('SELECT count("n") FROM "climate"', "klima")[0]["values"][0][1] == 15


async def test_map_mode_fields_tags_and_time(influxdb: InfluxDB, tmp_path: Path) -> None:
    doc = flow(
        influxdb.url,
        conn={"precision": "ms"},
        measurement_from="topic",
        tags={"device": "payload.dev"},
        static_tags={"town": "belzig"},
        time="payload.ts",
        time_format="rfc3339",
    )
    async with run_flow(doc, data_dir=tmp_path) as h:
        await h.send(
            "out", {"dev": "a1", "temp": 7.25, "rh": 81, "ts": "2023-11-14T22:13:20.123Z", "s": "x"}, "air"
        )
        node = out_node(h)
        await until(lambda: node.stats["written"] == 1)
    rows = influxdb.rows('SELECT * FROM "air"', "klima")
    assert rows == [
        {"time": 1_700_000_000_123_000_000, "device": "a1", "rh": 81, "temp": 7.25, "town": "belzig"}
    ]


async def test_bad_payload_goes_to_error_port(influxdb: InfluxDB, tmp_path: Path) -> None:
    async with run_flow(flow(influxdb.url), data_dir=tmp_path) as h:
        await h.send("out", {"measurement": "m", "fields": {}})
        await h.send("out", "just text")
        await h.idle()
        assert [m.meta["error"]["message"] for m in h.received("errors")] == [
            "reading needs a non-empty dict 'fields'",
            "payload is a str, not a reading dict (or list of them); configure measurement/tags/fields to map other payloads",
        ]


async def test_influxd_down_mid_stream_nothing_lost_order_kept(influxdb: InfluxDB, tmp_path: Path) -> None:
    async with run_flow(flow(influxdb.url, batch_size=20), data_dir=tmp_path) as h:
        node = out_node(h)
        for i in range(100):
            await h.send("out", reading(i))
        await until(lambda: node.stats["written"] == 100, what="first 100")
        influxdb.stop()
        for i in range(100, 200):
            await h.send("out", reading(i))
        await until(lambda: node.stats["spooled"] == 100, what="100 spooled")
        assert node.buffered_points == 100
        status = h.engine.runtimes["out"].status
        assert status.level == "warning"
        assert status.text.startswith("InfluxDB unreachable: 100 point(s) spooled")
        # while the spool is not empty, new messages go behind it
        for i in range(200, 250):
            await h.send("out", reading(i))
        influxdb.start()
        await until(lambda: node.stats["written"] == 250, timeout=15, what="all written after restart")
        assert node.buffered_points == 0
        assert node.stats["replayed"] == node.stats["spooled"] >= 140
        assert h.received("errors") == []
    rows = influxdb.rows('SELECT "n", "temp" FROM "climate" ORDER BY time', "klima")
    assert [(r["n"], r["temp"]) for r in rows] == [(i, 20.0 + i / 8) for i in range(250)]
    assert list((tmp_path / "nodes" / "out" / "spool").iterdir()) == []


async def test_spool_survives_engine_restart(influxdb: InfluxDB, tmp_path: Path) -> None:
    influxdb.stop()
    async with run_flow(flow(influxdb.url, batch_size=10), data_dir=tmp_path) as h:
        for i in range(35):
            await h.send("out", reading(i))
        await h.idle()
    # the engine stopped with InfluxDB down: the last partial batch was spooled by stop()
    node = out_node(h)
    assert node.stats["spooled"] == 35
    assert node.stats["written"] == 0
    segments = list((tmp_path / "nodes" / "out" / "spool").iterdir())
    assert segments
    influxdb.start()
    async with run_flow(flow(influxdb.url, batch_size=10), data_dir=tmp_path) as h2:
        node2 = out_node(h2)
        await until(lambda: node2.stats["replayed"] == 35, what="replay after restart")
    rows = influxdb.rows('SELECT "n" FROM "climate" ORDER BY time', "klima")
    assert [r["n"] for r in rows] == list(range(35))


async def test_spool_full_applies_back_pressure_and_drops_nothing(tmp_path: Path) -> None:
    server = InfluxDB()
    server.port = free_port()  # nothing listens yet: connection refused
    try:
        doc = flow(server.url, batch_size=5, spool_max_bytes=1500, spool_segment_bytes=1)
        async with run_flow(doc, data_dir=tmp_path, drain_timeout=20) as h:
            node = out_node(h)
            rt = h.engine.runtimes["out"]
            for i in range(60):
                await h.send("out", reading(i))
            await until(lambda: rt.busy and "spool full" in rt.status.text, what="the node blocked")
            await asyncio.sleep(0.3)
            spooled = node.stats["spooled"]
            assert 0 < spooled < 60
            assert node.buffered_points == spooled
            assert 0 < node.spool_stats().bytes <= 1500
            # The rest waits in the node (taken as a batch, not yet buffered) and its inbox:
            # the node is blocked, back-pressuring the sender.
            assert rt.busy
            assert rt.in_hand + rt.inbox.qsize() > 0
            assert "spool full" in rt.status.text
            server.start()
            server.create_database("klima")
            await until(lambda: node.stats["written"] == 60, timeout=20, what="everything written")
        rows = server.rows('SELECT "n" FROM "climate" ORDER BY time', "klima")
        assert [r["n"] for r in rows] == list(range(60))
    finally:
        server.cleanup()


async def test_deliveries_settle_only_after_write_or_spool(influxdb: InfluxDB, tmp_path: Path) -> None:
    settled: list[tuple[int, bool]] = []

    def message(i: int, payload: dict[str, Any]) -> Message:
        return Message(payload, deliveries=(Delivery(lambda ok, i=i: settled.append((i, ok))),))

    async with run_flow(flow(influxdb.url, batch_size=3, batch_interval=60), data_dir=tmp_path) as h:
        rt = h.engine.runtimes["out"]
        node = out_node(h)
        await rt.put(message(0, reading(0)))
        await rt.put(message(1, reading(1)))
        await h.idle()
        assert settled == []  # processed, buffered, not yet written
        await rt.put(message(2, reading(2)))
        await until(lambda: len(settled) == 3, what="three settled")
        assert settled == [(0, True), (1, True), (2, True)]
        assert node.stats["written"] == 3
        # a rejected point settles with ok=False after it went to the error port
        await rt.put(message(3, reading(3, temp="text")))
        await rt.put(message(4, reading(4)))
        await h.idle()
        assert len(settled) == 3
        await rt.put(message(5, reading(5)))
        await until(lambda: len(settled) == 6, what="six settled")
        # (3 settles last: the error port's receiver holds it until it has handled it)
        assert sorted(settled[3:]) == [(3, False), (4, True), (5, True)]
        # InfluxDB down: settled once spooled (fsync'd), not before
        influxdb.stop()
        for i in (6, 7):
            await rt.put(message(i, reading(i)))
        await h.idle()
        assert len(settled) == 6
        await rt.put(message(8, reading(8)))
        await until(lambda: len(settled) == 9, what="spooled ones settled")
        assert node.stats["spooled"] == 3
        assert settled[6:] == [(6, True), (7, True), (8, True)]


# -- v2 against the fake ----------------------------------------------------------------------------------

V2_ENV = {"INFLUX_TOKEN": "test-token"}


async def test_v2_write_request_is_exactly_the_documented_one(
    influx2_fake: InfluxV2Fake, tmp_path: Path
) -> None:
    doc = flow(influx2_fake.url, version=2, conn={"precision": "ms", "gzip": True}, batch_size=2)
    async with run_flow(doc, environ=V2_ENV, data_dir=tmp_path) as h:
        await h.send("out", reading(1, temp=21.5))
        await h.send("out", reading(2, temp=22.0, ok=True))
        await until(lambda: out_node(h).stats["written"] == 2)
    (req,) = influx2_fake.writes()
    assert req.method == "POST"
    assert req.params == {"org": "klima", "bucket": "sensors", "precision": "ms"}
    assert req.headers["authorization"] == "Token test-token"
    assert req.headers["content-encoding"] == "gzip"
    assert req.headers["content-type"] == "text/plain; charset=utf-8"
    assert gzip.decompress(req.raw_body) == req.body
    ms = T0 // 1_000_000
    assert req.text == (
        f"climate,device=dev-1 temp=21.5 {ms + 1}\nclimate,device=dev-2 ok=true,temp=22 {ms + 2}"
    )


async def test_v2_wrong_token_is_a_clear_error(influx2_fake: InfluxV2Fake, tmp_path: Path) -> None:
    doc = flow(influx2_fake.url, version=2, batch_size=1)
    async with run_flow(doc, environ={"INFLUX_TOKEN": "wrong"}, data_dir=tmp_path) as h:
        await h.send("out", reading(1))
        await until(lambda: len(h.received("errors")) == 1)
        info = h.received("errors")[0].meta["error"]
        assert info["class"] == "InfluxAuthError"
        assert info["message"] == (
            "InfluxDB refused the credentials of connection 'db' (401): unauthorized access"
        )
        assert h.engine.runtimes["out"].status.level == "error"
    assert influx2_fake.lines == []


async def test_v2_malformed_line_is_dropped_and_the_rest_resent(
    influx2_fake: InfluxV2Fake, tmp_path: Path
) -> None:
    influx2_fake.fail_next.append(
        (400, {"code": "invalid", "message": "unable to parse 'x': invalid field format", "line": 2}, {})
    )
    doc = flow(influx2_fake.url, version=2, batch_size=3)
    async with run_flow(doc, environ=V2_ENV, data_dir=tmp_path) as h:
        for i in range(3):
            await h.send("out", reading(i))
        await until(lambda: len(h.received("errors")) == 1)
        await until(lambda: out_node(h).stats["written"] == 2)
        assert h.received("errors")[0].payload["fields"]["n"] == 1
        assert h.received("errors")[0].meta["error"]["message"] == (
            "InfluxDB rejected the point: unable to parse 'x': invalid field format"
        )
    assert [r.text.count("\n") + 1 for r in influx2_fake.writes()] == [3, 2]
    assert influx2_fake.lines == [
        build_line("climate", {"device": "dev-0"}, {"temp": 20.0, "n": 0}, T0),
        build_line("climate", {"device": "dev-2"}, {"temp": 20.25, "n": 2}, T0 + 2_000_000),
    ]


async def test_v2_retries_5xx_and_429(influx2_fake: InfluxV2Fake, tmp_path: Path) -> None:
    influx2_fake.fail_next += [
        (503, {"code": "unavailable", "message": "busy"}, {}),
        (429, {"code": "too many requests", "message": "slow down"}, {"Retry-After": "0.1"}),
    ]
    doc = flow(influx2_fake.url, version=2, batch_size=1)
    async with run_flow(doc, environ=V2_ENV, data_dir=tmp_path) as h:
        await h.send("out", reading(7))
        node = out_node(h)
        await until(lambda: node.stats["written"] == 1)
        assert node.stats["retries"] == 2
        assert node.stats["spooled"] == 0
    assert len(influx2_fake.writes()) == 3
    assert influx2_fake.lines == [
        build_line("climate", {"device": "dev-1"}, {"temp": 20.875, "n": 7}, T0 + 7_000_000)
    ]


async def test_v2_outage_replays_in_order(tmp_path: Path) -> None:
    fake = InfluxV2Fake().start()
    port = int(fake.url.rsplit(":", 1)[1])
    try:
        doc = flow(fake.url, version=2, batch_size=5)
        async with run_flow(doc, environ=V2_ENV, data_dir=tmp_path) as h:
            node = out_node(h)
            for i in range(10):
                await h.send("out", reading(i))
            await until(lambda: node.stats["written"] == 10)
            fake.stop()
            for i in range(10, 40):
                await h.send("out", reading(i))
            await until(lambda: node.stats["spooled"] == 30)
            fake2 = InfluxV2Fake(port=port).start()
            try:
                await until(lambda: node.stats["written"] == 40, what="replay")
                assert [int(line.split("n=")[1].split("i")[0]) for line in fake2.lines] == list(range(10, 40))
            finally:
                fake2.stop()
    finally:
        fake.stop()


async def test_write_latency_counts_accepted_requests_only(
    influx2_fake: InfluxV2Fake, tmp_path: Path
) -> None:
    influx2_fake.fail_next.append((503, {"code": "unavailable", "message": "busy"}, {}))
    doc = flow(influx2_fake.url, version=2, batch_size=1)
    async with run_flow(doc, environ=V2_ENV, data_dir=tmp_path) as h:
        node = out_node(h)
        assert (node.stats["write_seconds"], node.stats["last_write_seconds"]) == (0.0, 0.0)
        delays = [0.3, 0.05, 0.1]  # the 503, then two accepted writes
        write = node.conn.write

        async def slow_write(body: bytes) -> Any:
            await asyncio.sleep(delays.pop(0))
            return await write(body)

        node.conn.write = slow_write  # type: ignore[method-assign]
        await h.send("out", reading(1))
        await until(lambda: node.stats["written"] == 1)
        first = node.stats["write_seconds"]
        assert node.stats["retries"] == 1
        assert 0.05 <= first < 0.3  # the refused attempt does not count
        assert node.stats["last_write_seconds"] == first
        await h.send("out", reading(2))
        await until(lambda: node.stats["written"] == 2)
        last = node.stats["last_write_seconds"]
        assert 0.1 <= last < 0.3
        assert node.stats["write_seconds"] == first + last
        assert node.stats["write_requests"] == 3
    assert delays == []


async def test_spool_stats_name_what_the_spool_holds(influxdb: InfluxDB, tmp_path: Path) -> None:
    influxdb.stop()
    try:
        async with run_flow(flow(influxdb.url, batch_size=10, batch_interval=60), data_dir=tmp_path) as h:
            node = out_node(h)
            for i in range(25):
                await h.send("out", reading(i))
            await until(lambda: node.stats["spooled"] == 20, what="two batches spooled")
            stats = node.spool_stats()
            segments = list((tmp_path / "nodes" / "out" / "spool").iterdir())
            assert (stats.points, stats.bytes) == (20, sum(p.stat().st_size for p in segments))
        # stop() spooled the partial batch too
        assert node.spool_stats().points == 25
    finally:
        influxdb.start()
