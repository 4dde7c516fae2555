"""influxdb-query: InfluxQL with bound parameters on a real influxd 1.6.7; Flux against the v2 fake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import MessageError
from nodes.influxdb import flux_record, parse_annotated_csv
from tests.flowkit import run_flow
from tests.services.influx2_fake import InfluxV2Fake
from tests.services.influxdb import InfluxDB

T0 = 1_700_000_000_000_000_000


def flow(url: str, query: str, *, version: int = 1, **node: Any) -> dict[str, Any]:
    conn: dict[str, Any] = {"type": "influxdb", "version": version, "url": url}
    if version == 1:
        conn["database"] = "klima"
    else:
        conn.update(org="klima", bucket="sensors", token="${INFLUX_TOKEN}")
    return {
        "id": "q",
        "connections": {"db": conn},
        "nodes": [
            {
                "id": "query",
                "type": "influxdb-query",
                "server": "db",
                "query": query,
                **node,
                "wires": {"out": ["rows"], "error": ["errors"]},
            },
            {"id": "rows", "type": "collect"},
            {"id": "errors", "type": "collect"},
        ],
    }


@pytest.fixture
def stored(influxdb: InfluxDB) -> InfluxDB:
    lines = "\n".join(
        f"climate,device={d} temp={t},n={i}i {T0 + i}"
        for i, (d, t) in enumerate([("a", 1.5), ("b", 2.5), ("a", 3.5)])
    )
    assert influxdb.write("klima", lines).status_code == 204
    return influxdb


async def test_influxql_rows_with_bound_parameter(stored: InfluxDB, tmp_path: Path) -> None:
    q = 'SELECT "temp", "n" FROM "climate" WHERE "device" = $device ORDER BY time'
    doc = flow(stored.url, q, params={"device": "payload.dev"}, epoch="ns")
    async with run_flow(doc, data_dir=tmp_path) as h:
        await h.send("query", {"dev": "a"})
        # a quote in a value cannot break out of the query: it is bound, not pasted
        await h.send("query", {"dev": "a' OR '1'='1"})
        await h.idle()
        assert h.payloads("rows") == [
            [{"time": T0, "temp": 1.5, "n": 0}, {"time": T0 + 2, "temp": 3.5, "n": 2}],
            [],
        ]
        assert h.received("errors") == []


async def test_influxql_split_into_one_message_per_row(stored: InfluxDB, tmp_path: Path) -> None:
    q = 'SELECT last("temp") FROM "climate" GROUP BY "device"'
    doc = flow(stored.url, q, output="split", property="latest", epoch="ns")
    async with run_flow(doc, data_dir=tmp_path) as h:
        await h.send("query", {"keep": True})
        await h.idle()
        got = h.received("rows")
        assert [m.meta["latest"] for m in got] == [
            {"time": T0 + 2, "last": 3.5, "device": "a"},
            {"time": T0 + 1, "last": 2.5, "device": "b"},
        ]
        assert [m.payload for m in got] == [{"keep": True}, {"keep": True}]
        assert [m.meta["parts"] for m in got] == [{"index": 0, "count": 2}, {"index": 1, "count": 2}]


async def test_influxql_error_goes_to_error_port_with_influxdb_message(
    stored: InfluxDB, tmp_path: Path
) -> None:
    doc = flow(stored.url, "SELEC * FROM climate")
    async with run_flow(doc, data_dir=tmp_path) as h:
        await h.send("query", 1)
        await h.idle()
        (err,) = h.received("errors")
        assert err.meta["error"]["class"] == "InfluxQueryError"
        assert err.meta["error"]["message"].startswith("error parsing query: found SELEC, expected SELECT")


async def test_missing_parameter_property_is_a_message_error(stored: InfluxDB, tmp_path: Path) -> None:
    doc = flow(stored.url, "SELECT * FROM climate WHERE device = $d", params={"d": "payload.dev"})
    async with run_flow(doc, data_dir=tmp_path) as h:
        await h.send("query", {})
        await h.idle()
        assert [m.meta["error"]["message"] for m in h.received("errors")] == [
            "query parameter 'd': property 'payload.dev' is missing"
        ]


FLUX_CSV = (
    "#datatype,string,long,dateTime:RFC3339,double,string,string,boolean\r\n"
    "#group,false,false,false,false,true,true,false\r\n"
    "#default,_result,,,,,,\r\n"
    ",result,table,_time,_value,_field,device,ok\r\n"
    ",,0,2023-11-14T22:13:20Z,21.5,temp,a,true\r\n"
    ",,0,2023-11-14T22:13:30Z,22,temp,a,\r\n"
    "\r\n"
    "#datatype,string,long,dateTime:RFC3339,long,string,string\r\n"
    "#group,false,false,false,false,true,true\r\n"
    "#default,_result,,,,,\r\n"
    ",result,table,_time,_value,_field,device\r\n"
    ",,1,2023-11-14T22:13:20Z,7,n,b\r\n"
    "\r\n"
)


async def test_flux_query_request_and_rows(influx2_fake: InfluxV2Fake, tmp_path: Path) -> None:
    influx2_fake.flux_response = FLUX_CSV
    flux = 'from(bucket: "sensors") |> range(start: -1h) |> filter(fn: (r) => r.device == params.device)'
    doc = flow(influx2_fake.url, flux, version=2, params={"device": "payload.dev"})
    async with run_flow(doc, environ={"INFLUX_TOKEN": "test-token"}, data_dir=tmp_path) as h:
        await h.send("query", {"dev": 'a"b'})
        await h.idle()
        assert h.received("errors") == []
        assert h.payloads("rows") == [
            [
                {
                    "result": "_result",
                    "table": 0,
                    "_time": "2023-11-14T22:13:20Z",
                    "_value": 21.5,
                    "_field": "temp",
                    "device": "a",
                    "ok": True,
                },
                {
                    "result": "_result",
                    "table": 0,
                    "_time": "2023-11-14T22:13:30Z",
                    "_value": 22.0,
                    "_field": "temp",
                    "device": "a",
                    "ok": None,
                },
                {
                    "result": "_result",
                    "table": 1,
                    "_time": "2023-11-14T22:13:20Z",
                    "_value": 7,
                    "_field": "n",
                    "device": "b",
                },
            ]
        ]
    (req,) = [r for r in influx2_fake.requests if r.path == "/api/v2/query"]
    assert req.params == {"org": "klima"}
    assert req.headers["authorization"] == "Token test-token"
    assert req.headers["accept"] == "application/csv"
    body = json.loads(req.text)
    assert body["type"] == "flux"
    assert body["query"] == 'params = {device: "a\\"b"}\n' + flux


async def test_flux_wrong_token_goes_to_error_port(influx2_fake: InfluxV2Fake, tmp_path: Path) -> None:
    doc = flow(influx2_fake.url, 'from(bucket: "sensors")', version=2)
    async with run_flow(doc, environ={"INFLUX_TOKEN": "nope"}, data_dir=tmp_path) as h:
        await h.send("query", None)
        await h.idle()
        assert [m.meta["error"]["message"] for m in h.received("errors")] == [
            "InfluxDB refused the credentials of connection 'db' (401): unauthorized access"
        ]


def test_flux_error_table_raises() -> None:
    text = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,bad things,897\n"
    with pytest.raises(Exception, match="bad things"):
        parse_annotated_csv(text)


def test_flux_params_are_literals() -> None:
    assert flux_record({"s": "x${y}\\", "n": 3, "f": 1.0, "b": False, "l": ["a", 2]}) == (
        '{s: "x\\${y}\\\\", n: 3, f: 1.0, b: false, l: ["a", 2]}'
    )
    with pytest.raises(MessageError):
        flux_record({"not-an-ident": 1})
