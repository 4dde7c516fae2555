"""mqtt-in over TLS with user/password against a real Mosquitto (certificates made with openssl)."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import aiomqtt
import pytest

from tests.flowkit import run_flow
from tests.nodes.test_mqtt import wait_for
from tests.services.mosquitto import Mosquitto
from tests.services.tls import HAVE_OPENSSL, make_ca_and_server_cert

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="openssl is not installed")


def tls_flow(broker: Mosquitto, **conn: object) -> dict[str, object]:
    return {
        "id": "tls",
        "connections": {
            "b": {"type": "mqtt", "url": broker.url, "reconnect_min": 0.1, "reconnect_max": 0.3, **conn}
        },
        "nodes": [
            {
                "id": "in",
                "type": "mqtt-in",
                "broker": "b",
                "topic": "v3/+/devices/+/up",
                "qos": 1,
                "wires": ["out"],
            },
            {"id": "out", "type": "collect"},
        ],
    }


async def publish_tls(broker: Mosquitto, ca: Path) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username="sensor-reader", password="s3cret pass", tls_context=ctx
    ) as c:
        await c.publish("v3/app/devices/d1/up", json.dumps({"n": 1}), qos=1)


async def test_tls_with_ca_and_password_from_env(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, ca = tls_broker
    doc = tls_flow(broker, ca_file=str(ca), username="sensor-reader", password="${MQTT_PASSWORD}")
    async with run_flow(doc, environ={"MQTT_PASSWORD": "s3cret pass"}) as h:
        conn = h.engine.connections["b"]
        await wait_for(lambda: getattr(conn, "state", "") == "connected")
        await asyncio.sleep(0.1)
        await publish_tls(broker, ca)
        await wait_for(lambda: h.payloads("out") == [{"n": 1}])


async def test_credentials_in_the_url(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, ca = tls_broker
    url = f"mqtts://sensor-reader:s3cret%20pass@127.0.0.1:{broker.port}"
    async with run_flow(tls_flow(broker, url="${MQTT_URL}", ca_file=str(ca)), environ={"MQTT_URL": url}) as h:
        conn = h.engine.connections["b"]
        await wait_for(lambda: getattr(conn, "state", "") == "connected")


async def test_unknown_ca_is_refused_unless_insecure(
    tls_broker: tuple[Mosquitto, Path], tmp_path: Path
) -> None:
    broker, _ca = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _, _ = make_ca_and_server_cert(other, "other")
    creds = {"username": "sensor-reader", "password": "${P}"}
    async with run_flow(tls_flow(broker, ca_file=str(wrong_ca), **creds), environ={"P": "s3cret pass"}) as h:
        conn = h.engine.connections["b"]
        await wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in (getattr(conn, "last_error", None) or ""))
        assert conn.state != "connected"  # type: ignore[attr-defined]
        assert h.engine.runtimes["in"].status.level == "warning"
    async with run_flow(
        tls_flow(broker, ca_file=str(wrong_ca), insecure=True, **creds), environ={"P": "s3cret pass"}
    ) as h:
        conn = h.engine.connections["b"]
        await wait_for(lambda: getattr(conn, "state", "") == "connected")


async def test_wrong_password_keeps_retrying_with_the_reason(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, ca = tls_broker
    doc = tls_flow(broker, ca_file=str(ca), username="sensor-reader", password="${P}")
    async with run_flow(doc, environ={"P": "wrong"}) as h:
        conn = h.engine.connections["b"]
        await wait_for(lambda: (getattr(conn, "last_error", None) or "") != "")
        assert "auth" in conn.last_error.lower() or "not authorized" in conn.last_error.lower()  # type: ignore[attr-defined]
        assert conn.state != "connected"  # type: ignore[attr-defined]
