"""Import files through a real Engine (file-in -> zip -> parser -> influxdb-out) into a real InfluxDB."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.flowkit import run_flow
from tests.services.influxdb import InfluxDB


@dataclass
class ImportResult:
    """What the parser emitted and what reached the error path (messages, ``file:line: reason``)."""

    readings: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_classes: list[list[str]] = field(default_factory=list)


async def import_files(
    parser: dict[str, Any], paths: list[Path], influx: InfluxDB | None = None
) -> ImportResult:
    """Run the files through the parser (and into ``influx`` if given); returns once everything is written.

    The engine is stopped before returning, which flushes influxdb-out's batches.
    """
    nodes: list[dict[str, Any]] = [
        {"id": "read", "type": "file-in", "wires": {"out": ["unzip"], "error": ["errors"]}},
        {"id": "unzip", "type": "zip", "wires": {"out": ["parse"], "error": ["errors"]}},
        {
            "id": "parse",
            **parser,
            "wires": {"out": ["points", *(["store"] if influx else [])], "error": ["errors"]},
        },
        {"id": "points", "type": "collect"},
        {"id": "errors", "type": "collect"},
    ]
    doc: dict[str, Any] = {"id": "imp", "nodes": nodes}
    if influx is not None:
        doc["connections"] = {"db": {"type": "influxdb", "url": influx.url, "database": "klima"}}
        nodes.append(
            {
                "id": "store",
                "type": "influxdb-out",
                "server": "db",
                "batch_interval": 0.05,
                "wires": {"error": ["errors"]},
            }
        )
    result = ImportResult()
    async with run_flow(doc, drain_timeout=30) as h:
        for p in paths:
            await h.send("read", str(p))
        await h.idle(30)
        for m in h.received("points"):
            assert isinstance(m.payload, list)
            result.chunks.append(len(m.payload))
            result.readings.extend(m.payload)
    for m in h.received("errors"):
        result.errors.append(m.meta["error"]["message"])
        result.error_classes.append(m.meta["error"]["classes"])
    return result


def count(influx: InfluxDB, measurement: str, field_name: str, where: str = "") -> int:
    """Number of stored points of ``measurement`` having ``field_name``."""
    rows = influx.rows(
        f'SELECT count("{field_name}") FROM "{measurement}"' + (f" WHERE {where}" if where else ""), "klima"
    )
    return int(rows[0]["count"]) if rows else 0


def points(influx: InfluxDB, measurement: str, where: str = "") -> list[dict[str, Any]]:
    """Stored points (time in ns), oldest first."""
    return influx.rows(f'SELECT * FROM "{measurement}"' + (f" WHERE {where}" if where else ""), "klima")


def long_shards(influx: InfluxDB, database: str = "klima") -> None:
    """Year-long shard groups for historical imports (see docs/flows/groundwater.md)."""
    influx.query(f'ALTER RETENTION POLICY "autogen" ON "{database}" SHARD DURATION 52w')
