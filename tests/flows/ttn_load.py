"""Helpers for end-to-end tests of the shipped TTN flow (flows/ttn-sensors.yaml) with real services.

* :func:`make_uplinks`: realistic TTN v3 uplinks (Dragino LSE01, Device Repository
  formatter) of the devices in flows/registry/ttn-sensoren.csv, each with its own
  ``f_cnt`` and ``received_at``, and the point each one must become in InfluxDB;
* :class:`Publisher`: QoS 1 publishing that reconnects and resends when the broker goes away;
* :func:`points` / :func:`wait_for_points`: what arrived in InfluxDB;
* :func:`running_engine` (in this process) and :class:`EngineProcess` (``klimaflow run`` as
  a subprocess, stopped with SIGTERM or killed with SIGKILL).

Expected values are computed here from the generated input, never by the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from engine.runtime import Engine
from engine.validation import load_and_validate
from nodes.influx_spool import decode_records
from tests.services.influxdb import InfluxDB
from tests.services.mosquitto import Mosquitto
from tests.shared_data import REPO

SHIPPED_FLOW = REPO / "flows" / "ttn-sensors.yaml"
REGISTRY_CSV = REPO / "flows" / "registry" / "ttn-sensoren.csv"
APPLICATION = "klimadaten-bad-belzig"
DB = "klima"
#: Node ids of the shipped flow the tests look at.
MQTT_CONNECTION = "ttn-broker"
STORE_NODE = "ttn-store"

#: 2024-05-14T09:00:00Z; message i is received STEP_NS later than message i-1 (plus a sub-second part).
BASE_NS = 1_715_677_200_000_000_000
STEP_NS = 20_000_000_000
_EU868 = (868100000, 868300000, 868500000, 867100000, 867300000, 867500000, 867700000, 867900000)


# -- the registry, read independently of nodes/registry.py -------------------------------


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    """One row of the (clean) shipped registry file."""

    device_id: str
    location: str
    measurement: str
    soil_type: str
    land_use: str
    latitude: float
    longitude: float

    @property
    def dev_eui(self) -> str:
        return self.device_id.removeprefix("eui-").upper()


def registry_devices(path: Path = REGISTRY_CSV) -> list[RegisteredDevice]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            RegisteredDevice(
                row["device_id"],
                row["location"],
                row["measurement"],
                row["soil_type"],
                row["land_use"],
                float(row["latitude"]),
                float(row["longitude"]),
            )
            for row in csv.DictReader(fh, delimiter=";")
        ]


# -- generated uplinks -------------------------------------------------------------------


def rfc3339(ns: int) -> str:
    """RFC 3339 as TTN writes it (Go's RFC3339Nano: trailing zeros of the fraction dropped)."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


@dataclass(frozen=True, slots=True)
class Uplink:
    """One generated uplink: what is published and the point it must become."""

    index: int
    device: RegisteredDevice
    f_cnt: int
    time_ns: int
    topic: str
    payload: bytes
    fields: dict[str, float | int]

    @property
    def key(self) -> tuple[str, int]:
        return (self.device.device_id, self.f_cnt)

    @property
    def tags(self) -> dict[str, str]:
        d = self.device
        return {
            "application": APPLICATION,
            "dev_eui": d.dev_eui,
            "device_id": d.device_id,
            "land_use": d.land_use,
            "location": d.location,
            "registered": "true",
            "site": d.measurement,  # measurement_tag: site in the shipped flow
            "soil_type": d.soil_type,
        }

    def row(self) -> dict[str, Any]:
        """The InfluxDB row (as :func:`points` returns it) this uplink must become."""
        return {"measurement": self.device.measurement, "time": self.time_ns, **self.tags, **self.fields}


def make_uplink(i: int, devices: list[RegisteredDevice]) -> Uplink:
    """Uplink number ``i``: device ``i % len(devices)``, values and times derived from ``i``."""
    device = devices[i % len(devices)]
    f_cnt = 1000 + i // len(devices)
    time_ns = BASE_NS + i * STEP_NS + (i * 123_456_789 + 569_498_830) % 1_000_000_000
    bat_mv = 3000 + (i * 7) % 700
    ds_tenths = (i * 3) % 400 - 100
    soil_hundredths = (i * 11) % 3500 - 500
    water_hundredths = (i * 13) % 5000
    conduct = (i * 37) % 3000
    rssi = -(60 + i % 60)
    snr = (i % 50) / 4 - 2.5
    sf = 7 + i % 6
    freq = _EU868[i % len(_EU868)]
    # The LSE01 frame these values come from (the Device Repository formatter's input).
    frame = struct.pack(">HhHhHB", bat_mv, ds_tenths, water_hundredths, soil_hundredths, conduct, 0x80)
    received = rfc3339(time_ns)
    ns_received = rfc3339(time_ns - 245_466_097)
    gw_time = rfc3339(time_ns - 451_086_830)
    ulid = f"01HXV{i:021d}"
    message = {
        "end_device_ids": {
            "device_id": device.device_id,
            "application_ids": {"application_id": APPLICATION},
            "dev_eui": device.dev_eui,
            "join_eui": "A840410000000101",
            "dev_addr": f"260B{i % 65536:04X}",
        },
        "correlation_ids": [
            f"gs:uplink:{ulid}",
            f"ns:uplink:{ulid}",
            f"rpc:/ttn.lorawan.v3.GsNs/HandleUplink:{ulid}",
            f"rpc:/ttn.lorawan.v3.NsAs/HandleUplink:{ulid}",
            f"as:up:{ulid}",
        ],
        "received_at": received,
        "uplink_message": {
            "session_key_id": "HnRrechClevaPGxRM/RviA==",
            "f_port": 2,
            "f_cnt": f_cnt,
            "frm_payload": base64.b64encode(frame).decode("ascii"),
            "decoded_payload": {
                "Bat": bat_mv / 1000,
                "TempC_DS18B20": f"{ds_tenths / 10:.1f}",
                "conduct_SOIL": conduct,
                "temp_SOIL": f"{soil_hundredths / 100:.2f}",
                "water_SOIL": f"{water_hundredths / 100:.2f}",
            },
            "rx_metadata": [
                {
                    "gateway_ids": {"gateway_id": "klimawerkstatt-gw-01", "eui": "A84041FFFF1F2E3D"},
                    "time": gw_time,
                    "timestamp": (i * 1_000_003) % 2**32,
                    "rssi": rssi,
                    "channel_rssi": rssi,
                    "snr": snr,
                    "location": {
                        "latitude": 52.14131,
                        "longitude": 12.59077,
                        "altitude": 105,
                        "source": "SOURCE_REGISTRY",
                    },
                    "uplink_token": base64.b64encode(f"token-{i}".encode()).decode("ascii"),
                    "channel_index": i % 8,
                    "received_at": gw_time,
                }
            ],
            "settings": {
                "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": sf, "coding_rate": "4/5"}},
                "frequency": str(freq),
                "timestamp": (i * 1_000_003) % 2**32,
                "time": gw_time,
            },
            "received_at": ns_received,
            "consumed_airtime": "0.226304s",
            "version_ids": {
                "brand_id": "dragino",
                "model_id": "lse01",
                "hardware_version": "_unknown_hw_version_",
                "firmware_version": "1.1.4",
                "band_id": "EU_863_870",
            },
            "network_ids": {
                "net_id": "000013",
                "tenant_id": "ttn",
                "cluster_id": "eu1",
                "cluster_address": "eu1.cloud.thethings.network",
            },
        },
    }
    fields: dict[str, float | int] = {
        "Bat": bat_mv / 1000,
        "TempC_DS18B20": ds_tenths / 10,
        "conduct_SOIL": float(conduct),
        "temp_SOIL": soil_hundredths / 100,
        "water_SOIL": water_hundredths / 100,
        "f_port": 2,
        "f_cnt": f_cnt,
        "rssi": float(rssi),
        "snr": snr,
        "gateway_count": 1,
        "spreading_factor": sf,
        "frequency": freq,
        "latitude": device.latitude,
        "longitude": device.longitude,
    }
    topic = f"v3/{APPLICATION}@ttn/devices/{device.device_id}/up"
    return Uplink(i, device, f_cnt, time_ns, topic, json.dumps(message).encode(), fields)


def make_uplinks(n: int, start: int = 0) -> list[Uplink]:
    """Uplinks ``start .. start+n-1``: unique (device, f_cnt) and strictly increasing times."""
    devices = registry_devices()
    return [make_uplink(i, devices) for i in range(start, start + n)]


def messages(uplinks: Iterable[Uplink]) -> list[tuple[str, bytes]]:
    return [(u.topic, u.payload) for u in uplinks]


# -- publishing --------------------------------------------------------------------------


class Publisher:
    """Publishes in order at QoS 1; when the broker goes away it reconnects and resends.

    A message whose PUBACK was lost with the connection is sent again: at least once,
    like a real TTN bridge. ``reconnects`` counts how often that happened.
    """

    def __init__(self, broker: Mosquitto, *, timeout: float = 3.0, deadline: float = 30.0) -> None:
        self.broker = broker
        self.timeout = timeout
        self.deadline = deadline
        self.reconnects = 0
        self.published = 0
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Publisher:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _connect(self) -> aiomqtt.Client:
        give_up = time.monotonic() + self.deadline
        while True:
            client = aiomqtt.Client("127.0.0.1", self.broker.port, timeout=self.timeout)
            try:
                await client.__aenter__()
            except aiomqtt.MqttError:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.1)
                continue
            self._client = client
            return client

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def publish(self, items: Iterable[tuple[str, bytes]], *, qos: int = 1, pace: float = 0.0) -> None:
        """Publish ``items`` one by one, each confirmed by the broker; ``pace`` sleeps after each.

        One at a time on purpose: aiomqtt is several times slower with many publishes pending.
        """
        for topic, payload in items:
            while True:
                client = self._client or await self._connect()
                try:
                    await client.publish(topic, payload, qos=qos, timeout=self.timeout)
                    break
                except aiomqtt.MqttError:
                    self.reconnects += 1  # resend: a duplicate is fine, a loss is not
                    await self._close()
            self.published += 1
            if pace:
                await asyncio.sleep(pace)


async def publish(broker: Mosquitto, items: Iterable[tuple[str, bytes]], qos: int = 1) -> None:
    async with Publisher(broker) as pub:
        await pub.publish(items, qos=qos)


# -- InfluxDB ------------------------------------------------------------------------------


def points(influx: InfluxDB, db: str = DB, where: str = "") -> list[dict[str, Any]]:
    """Every point of every measurement as a dict: ``measurement``, ``time`` (ns), tags, fields.

    Columns a point does not have (InfluxDB answers null) are left out.
    """
    out: list[dict[str, Any]] = []
    for series in influx.query(f"SELECT * FROM /.*/ {where}", db):
        for values in series["values"]:
            row = {k: v for k, v in zip(series["columns"], values, strict=True) if v is not None}
            row["measurement"] = series["name"]
            out.append(row)
    return out


def count_points(influx: InfluxDB, db: str = DB, field: str = "rssi") -> int:
    """Points that have ``field`` (every TTN uplink with rx metadata has ``rssi``), all measurements."""
    try:
        series = influx.query(f'SELECT count("{field}") FROM /.*/', db)
    except (httpx.HTTPError, RuntimeError):  # down or restarting: "not there yet"
        return -1
    return sum(int(s["values"][0][1]) for s in series)


def field_types(influx: InfluxDB, measurement: str, db: str = DB) -> dict[str, str]:
    series = influx.query(f'SHOW FIELD KEYS FROM "{measurement}"', db)
    return {name: ftype for s in series for name, ftype in s["values"]}


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` (run in a thread: it may do blocking I/O) until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_points(influx: InfluxDB, expected: int, timeout: float = 20.0, db: str = DB) -> None:
    """Wait until InfluxDB holds exactly ``expected`` points; fails with the last count seen."""
    seen = -1

    def check() -> bool:
        nonlocal seen
        seen = count_points(influx, db)
        return seen == expected

    try:
        await wait_until(check, timeout, f"{expected} points in InfluxDB")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last count: {seen})") from None


# -- the spool on disk ---------------------------------------------------------------------


def spool_dir(data_dir: Path, node_id: str = STORE_NODE) -> Path:
    return data_dir / "nodes" / node_id / "spool"


def spooled_lines(data_dir: Path, node_id: str = STORE_NODE) -> list[str]:
    """Line-protocol lines in the spool's segment files, oldest first (a torn tail is ignored)."""
    directory = spool_dir(data_dir, node_id)
    if not directory.is_dir():
        return []
    out: list[str] = []
    for path in sorted(directory.glob("*.lp")):
        with contextlib.suppress(FileNotFoundError):  # replayed and deleted meanwhile
            records, _torn = decode_records(path.read_bytes())
            for record in records:
                out.extend(record)
    return out


def line_time(line: str) -> int:
    return int(line.rsplit(" ", 1)[1])


# -- running the shipped flow ------------------------------------------------------------------


def flow_env(
    broker: Mosquitto,
    influx: InfluxDB,
    *,
    client_id: str = "klimaflow-e2e",
    qos: int = 1,
    clean_session: bool = False,
    **extra: str,
) -> dict[str, str]:
    """The environment the shipped flow reads its settings from."""
    return {
        "MQTT_URL": broker.url,
        "MQTT_QOS": str(qos),
        "MQTT_CLEAN_SESSION": "true" if clean_session else "false",
        "MQTT_CLIENT_ID": client_id,
        "INFLUX_URL": influx.url,
        "INFLUX_DB": DB,
        "TTN_REGISTRY": str(REGISTRY_CSV),
        **extra,
    }


@asynccontextmanager
async def running_engine(
    env: Mapping[str, str], data_dir: Path, flow: Path = SHIPPED_FLOW, drain_timeout: float = 10.0
) -> AsyncIterator[Engine]:
    """The flow in a real Engine in this process, connected to the broker when entered."""
    validated = load_and_validate([flow], environ=env)
    engine = Engine(validated, data_dir=data_dir, drain_timeout=drain_timeout)
    await engine.start()
    try:
        conn = engine.connections[MQTT_CONNECTION]
        await wait_until(lambda: getattr(conn, "state", "") == "connected", 10, "the MQTT connection")
        yield engine
    finally:
        await engine.stop()


_RUN_OPTIONS = ("--log-format", "plain", "--log-level", "debug")


@dataclass
class EngineProcess:
    """``klimaflow run FLOW`` as a subprocess, logging at debug level to ``log_file``.

    The debug log carries paho's protocol trace (``Received SUBACK``, ``Received PUBLISH
    (d1, ...`` for redeliveries, ``Sending PUBACK``), which is how tests see what the broker
    and the engine did.
    """

    env: Mapping[str, str]
    data_dir: Path
    log_file: Path
    flow: Path = SHIPPED_FLOW
    proc: subprocess.Popen[bytes] | None = None
    _log_start: int = field(default=0, init=False)

    def start(self) -> EngineProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        env = {**os.environ, **self.env, "KLIMAFLOW_DATA": str(self.data_dir)}
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "run", str(self.flow), *_RUN_OPTIONS],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log_text(self, this_run_only: bool = True) -> str:
        data = self.log_file.read_bytes() if self.log_file.exists() else b""
        return data[self._log_start if this_run_only else 0 :].decode("utf-8", errors="replace")

    async def wait_subscribed(self, timeout: float = 15.0) -> None:
        """Wait until the broker acknowledged this run's subscription."""

        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"klimaflow exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            return "Received SUBACK" in self.log_text()

        await wait_until(check, timeout, f"the subscription of {self.log_file.name}")

    def received_publishes(self, redelivered: bool | None = None) -> int:
        """PUBLISH packets this run received (``redelivered``: only those with the DUP flag, or without)."""
        text = self.log_text()
        if redelivered is None:
            return text.count("Received PUBLISH (")
        return text.count("Received PUBLISH (d1," if redelivered else "Received PUBLISH (d0,")

    def acks_sent(self) -> int:
        return self.log_text().count("Sending PUBACK")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful: drain, flush, acknowledge) and the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, nothing acknowledged that was not already."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
