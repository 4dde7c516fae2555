"""The README's first command: scripts/demo.py imports the open data, provisions Grafana, runs
every shipped flow with the replay of real uplinks, says where to look, and Ctrl-C stops
everything it started. (WordPress is left out here: the WordPress tests cover that flow.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.services._proc import free_port, port_open

REPO = Path(__file__).resolve().parents[2]


def _count(influx: str, query: str) -> int:
    r = httpx.get(f"{influx}/query", params={"db": "klimadaten", "q": query}, timeout=10)
    series = r.json()["results"][0].get("series", [])
    return sum(int(s["values"][0][1]) for s in series)


def test_the_demo_runs_the_platform_and_stops_everything_on_ctrl_c() -> None:
    api_port = free_port()
    env = {
        **os.environ,
        "KLIMAFLOW_API": f"127.0.0.1:{api_port}",
        "DEMO_WORDPRESS": "0",
        "DEMO_PERIOD": "200ms",
    }
    demo = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            out.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(out)
        assert "Ctrl-C stops everything" in text, text
        assert "2445 points stored from 3 files, 0 rows rejected" in text
        assert "82 points stored from 6 files, 0 rows rejected" in text
        assert f"editor      http://127.0.0.1:{api_port}/editor/" in text
        influx = re.search(r"InfluxDB    (http://127\.0\.0\.1:\d+)  database 'klimadaten'", text)
        assert influx is not None, text
        mqtt_port = int(re.search(r"Mosquitto at mqtt://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        influx_port = int(influx.group(1).rsplit(":", 1)[1])
        assert (REPO / ".klimaflow" / "demo" / "grafana" / "dashboards" / "klimaflow" / "Klima").is_dir()
        assert _count(influx.group(1), 'SELECT count("depth_below_surface_cm") FROM "groundwater"') == 2445
        # The replay of the real uplinks reaches InfluxDB through MQTT and the TTN flow.
        deadline = time.monotonic() + 60
        while _count(influx.group(1), 'SELECT count("water_SOIL") FROM /.*/') < 3:
            assert time.monotonic() < deadline, "no replayed uplink reached InfluxDB"
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{api_port}/editor/", timeout=10).status_code == 200

        demo.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        assert demo.wait(timeout=60) == 0
        for port in (api_port, mqtt_port, influx_port):
            assert not port_open(port), f"port {port} still open after Ctrl-C"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
