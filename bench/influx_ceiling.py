"""How many points/s can a private influxd 1.6.7 take on one connection, in batches of 5000?

The ingest benchmark imports :func:`measure_ceiling` to tell the engine's own limit
from the database's. Run it on its own: ``.venv/bin/python bench/influx_ceiling.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes.influx_lineproto import build_line
from tests.services.influxdb import InfluxDB


@dataclass(frozen=True)
class Ceiling:
    points: int
    batch: int
    seconds: float

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds


def make_lines(n: int, devices: int = 200, t0: int = 1_700_000_000_000_000_000) -> list[str]:
    """Readings like the platform's: a few hundred devices, four fields, 1 ms apart."""
    return [
        build_line(
            "climate",
            {"device": f"eui-{i % devices:04d}", "site": f"site-{i % 17}"},
            {
                "temperature": 20 + (i % 100) / 10,
                "humidity": 40 + (i % 50) / 2,
                "battery": 3000 + i % 300,
                "ok": True,
            },
            t0 + i * 1_000_000,
        )
        for i in range(n)
    ]


def measure_ceiling(points: int = 300_000, batch: int = 5000, url: str | None = None) -> Ceiling:
    """Write ``points`` in ``batch``-sized requests over one keep-alive connection; time it.

    Starts (and stops) a private influxd unless ``url`` names one with a ``bench`` database.
    """
    server = None if url else InfluxDB().start()
    try:
        base = url or (server.url if server else "")
        if server:
            server.create_database("bench")
        lines = make_lines(points)
        bodies = ["\n".join(lines[i : i + batch]).encode() for i in range(0, points, batch)]
        with httpx.Client(base_url=base, timeout=60) as client:
            client.post(
                "/write", params={"db": "bench"}, content=bodies[0][:2000].rsplit(b"\n", 1)[0]
            )  # warm-up
            started = time.perf_counter()
            for body in bodies:
                r = client.post("/write", params={"db": "bench", "precision": "ns"}, content=body)
                r.raise_for_status()
            seconds = time.perf_counter() - started
        return Ceiling(points, batch, seconds)
    finally:
        if server:
            server.cleanup()


def builder_us_per_point(n: int = 100_000) -> float:
    """CPU time of :func:`build_line` per point for a four-field, two-tag reading."""
    readings = [
        (
            {"device": f"eui-{i % 200:04d}", "site": f"site-{i % 17}"},
            {"temperature": 20 + (i % 100) / 10, "humidity": 40.5, "battery": 3000 + i % 300, "ok": True},
        )
        for i in range(n)
    ]
    started = time.process_time()
    for i, (tags, fields) in enumerate(readings):
        build_line("climate", tags, fields, 1_700_000_000_000_000_000 + i)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    c = measure_ceiling(args.points, args.batch)
    print(
        f"influxd ceiling: {c.points_per_second:,.0f} points/s ({c.points} points, batch {c.batch}, {c.seconds:.2f} s)"
    )
    print(f"line-protocol builder: {builder_us_per_point():.2f} µs/point")


if __name__ == "__main__":
    main()
