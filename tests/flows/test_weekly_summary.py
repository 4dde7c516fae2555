"""The shipped weekly summary (flows/weekly-summary.yaml) against a real InfluxDB and a real
WordPress: the week's values arrive as one post per ISO week, formatted for German
readers, with the Grafana panel embedded and sensor text escaped."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

from engine.runtime import Engine
from engine.validation import load_and_validate
from tests.services.influxdb import InfluxDB
from tests.services.wordpress import WordPress

FLOW = Path(__file__).resolve().parents[2] / "flows" / "weekly-summary.yaml"
DB = "klimadaten"
HOUR_NS = 3_600_000_000_000


def _week() -> str:
    year, week, _ = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isocalendar()
    return f"{year}-kw{week:02d}"


NOW = time.time_ns() // HOUR_NS * HOUR_NS


def _store(influx: InfluxDB, moisture: float) -> None:
    now = NOW
    soil = "registered=true,device_id=eui-a84041674184a0e7,site=Zegg\\ Kiefer"
    evil = "registered=true,device_id=eui-a84041edd184a0c0,site=<script>alert(1)</script>"
    lines = [
        f"Zegg\\ Kiefer,{soil} water_SOIL=20.0 {now - 48 * HOUR_NS}",
        f"Zegg\\ Kiefer,{soil} water_SOIL=30.0 {now - 24 * HOUR_NS}",
        f"Zegg\\ Kiefer,{soil} water_SOIL={moisture} {now - HOUR_NS}",
        f"evil,{evil} water_SOIL=12.25 {now - HOUR_NS}",
        # Older than a week: not in the summary.
        f"Zegg\\ Kiefer,{soil} water_SOIL=99.0 {now - 10 * 24 * HOUR_NS}",
        # Not in the registry: not in the summary.
        f"ttn,registered=false,device_id=eui-unknown water_SOIL=55.0 {now - HOUR_NS}",
        f"groundwater,station=38413490 depth_below_surface_cm=523 {1_199_142_000_000_000_000}",
        f"groundwater,station=38413490 depth_below_surface_cm=531 {1_207_087_200_000_000_000}",
    ]
    assert influx.write(DB, "\n".join(lines)).status_code == 204


async def _summary(env: dict[str, str], tmp_path: Path, times: int) -> None:
    engine = Engine(load_and_validate([FLOW], environ=env), data_dir=tmp_path, drain_timeout=60.0)
    await engine.start()
    try:
        for _ in range(times):
            await engine.runtimes["summary-weekly"].node.trigger()
            assert await engine.wait_idle(60)
        # The post is written in the background: wait until the node has reported it.
        for _ in range(600):
            if _received(engine, "summary-done") + _received(engine, "summary-errors") >= times:
                break
            await asyncio.sleep(0.1)
    finally:
        await engine.stop()


def _received(engine: Engine, node_id: str) -> int:
    [node] = [n for n in engine.snapshot()["nodes"] if n["id"] == node_id]
    return int(node["counters"]["received"])


def _env(influxdb: InfluxDB, wordpress: WordPress, role: str = "editor") -> dict[str, str]:
    user, password = wordpress.auth(role)
    return {
        "INFLUX_URL": influxdb.url,
        "INFLUX_DB": DB,
        "WORDPRESS_URL": wordpress.url,
        "WORDPRESS_USER": user,
        "WORDPRESS_APP_PASSWORD": password,
        "GRAFANA_PUBLIC_URL": "https://grafana.klima.example",
    }


async def test_the_weekly_post_carries_the_weeks_values(
    influxdb: InfluxDB, wordpress: WordPress, tmp_path: Path
) -> None:
    influxdb.create_database(DB)
    _store(influxdb, 25.46)
    env = _env(influxdb, wordpress)
    await _summary(env, tmp_path / "a", times=1)
    _store(influxdb, 31.04)  # a later reading: running again the same week updates the post
    await _summary(env, tmp_path / "b", times=1)

    slug = f"klima-wochenbericht-{_week()}"
    [post] = wordpress.posts(slug)
    assert post["status"] == "publish"
    assert post["title"]["raw"] == f"Klima-Wochenbericht {_week().replace('kw', 'KW')}"
    content: str = post["content"]["raw"]
    nbsp = "\u00a0"
    # Zegg Kiefer over the last 7 days: 20.0, 30.0 and the latest reading 31.04.
    assert (
        f"<td>Zegg Kiefer</td><td>27,0{nbsp}%</td><td>20,0{nbsp}%</td><td>31,0{nbsp}%</td><td>31,0{nbsp}%</td>"
        in content
    )
    assert "99,0" not in content
    assert "55,0" not in content
    # The site name from the sensor data is text, never markup.
    assert "<script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert f"<td>12,3{nbsp}%</td>" in content
    assert (
        '<iframe src="https://grafana.klima.example/d-solo/klima-boden/boden-feuchte-an-den-messstellen?'
        in content.replace("&amp;", "&")
    )
    assert "<!-- wp:html -->" in content
    assert f"Messstelle 38413490: 531{nbsp}cm unter Gelände (gemessen am 02.04.2008)" in content
    categories: list[dict[str, Any]] = wordpress.api(
        "GET", "/wp/v2/categories", params={"search": "Klimadaten"}
    )
    assert [c["name"] for c in categories] == ["Klimadaten"]
    assert categories[0]["id"] in post["categories"]
