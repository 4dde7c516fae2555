"""Two ``klimaflow run`` processes share the TTN uplinks over an MQTT 5 shared subscription.

The flow is the shipped one with three changes made on a copy (protocol 5, the topic as
``$share/klimaflow/...``, and a static ``instance`` tag from ``KLIMAFLOW_INSTANCE`` so each
point says which process wrote it). A message written by both processes would be two
points (two series), so "total == N" proves each message was stored exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.flows.ttn_load import (
    SHIPPED_FLOW,
    EngineProcess,
    flow_env,
    make_uplinks,
    messages,
    points,
    publish,
    wait_for_points,
)
from tests.services.influxdb import InfluxDB
from tests.services.mosquitto import Mosquitto

N = 2000
GROUP = "klimaflow"


def shared_subscription_flow(directory: Path) -> Path:
    """The shipped flow, changed only where scaling out needs it; written to ``directory``."""
    yaml = YAML()  # round trip: comments, order and ${VAR} references stay as shipped
    doc: Any = yaml.load(SHIPPED_FLOW.read_text(encoding="utf-8"))
    doc["connections"]["ttn-broker"]["protocol"] = "5"
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert nodes["ttn-uplinks"]["topic"] == "v3/{application}/devices/{device_id}/up"
    nodes["ttn-uplinks"]["topic"] = f"$share/{GROUP}/v3/{{application}}/devices/{{device_id}}/up"
    assert "static_tags" not in nodes["ttn-store"]
    nodes["ttn-store"]["static_tags"] = {"instance": "${KLIMAFLOW_INSTANCE}"}
    path = directory / "ttn-sensors-shared.yaml"
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)
    return path


async def test_two_engines_share_the_uplinks_and_store_each_exactly_once(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    flow = shared_subscription_flow(tmp_path)
    uplinks = make_uplinks(N)
    engines = [
        EngineProcess(
            flow_env(mosquitto, influxdb, client_id=f"klimaflow-e2e-{name}", KLIMAFLOW_INSTANCE=name),
            tmp_path / f"data-{name}",
            tmp_path / f"{name}.log",
            flow=flow,
        )
        for name in ("a", "b")
    ]
    try:
        for engine in engines:
            engine.start()
        await asyncio.gather(*(engine.wait_subscribed() for engine in engines))
        assert f"$share/{GROUP}/v3/+/devices/+/up" in engines[0].log_text()

        await publish(mosquitto, messages(uplinks))
        await wait_for_points(influxdb, N, timeout=30)
        # SIGTERM drains and flushes: after this, everything either process would write is written.
        exit_codes = [engine.terminate() for engine in engines]
        received = [engine.received_publishes() for engine in engines]
        redelivered = [engine.received_publishes(redelivered=True) for engine in engines]
    finally:
        for engine in engines:
            engine.cleanup()

    assert exit_codes == [0, 0]
    rows = points(influxdb)
    assert len(rows) == N  # each message written once: a second writer would add its own series
    keys = {(r["device_id"], r["f_cnt"]) for r in rows}
    assert keys == {u.key for u in uplinks}
    per_instance = Counter(r["instance"] for r in rows)
    assert sorted(per_instance) == ["a", "b"]
    assert per_instance["a"] > 0
    assert per_instance["b"] > 0
    assert per_instance["a"] + per_instance["b"] == N
    # The broker gave each message to one process, once.
    assert sum(received) == N
    assert redelivered == [0, 0]
    assert received == [per_instance["a"], per_instance["b"]]
    expected = {u.key: u.row() for u in uplinks}
    for r in rows:
        assert {k: v for k, v in r.items() if k != "instance"} == expected[(r["device_id"], r["f_cnt"])]
