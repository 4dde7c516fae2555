"""End-to-end ingest benchmark: TTN uplinks over MQTT -> klimaflow -> InfluxDB.

Starts its own Mosquitto and InfluxDB on free ports, runs ``klimaflow run`` on
``bench/flows/ingest.yaml`` as a separate process (so its CPU time and peak RSS are its
own), publishes realistic TTN v3 uplinks from several publisher processes, and prints
per scenario: delivered/lost, sustained end-to-end rate, p50/p99 publish-to-queryable
latency, engine CPU µs per message and peak RSS, broker-side drops from ``$SYS`` — and
the physical limits beside them: InfluxDB's own ceiling for batched writes and the
publishers' own maximum rate with nobody consuming.

Latency method: every uplink carries a global sequence number (``f_cnt``) and its
``received_at`` is the publish time. A poller counts stored points every 50 ms; the
k-th published message counts as queryable at the first poll that sees at least k
points (writes are in order), so latencies have a 50 ms + query-time resolution.

Usage: ``python bench/ingest.py [--messages 100000] [--publishers 2] [--scenarios ...]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.influx_ceiling import measure_ceiling  # noqa: E402
from tests.services.influxdb import InfluxDB  # noqa: E402
from tests.services.mosquitto import Mosquitto  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TEMPLATE = SHARED / "ttn" / "messages" / "up_lse01_device_repo_formatter.json"
REGISTRY = SHARED / "klima-dashboard" / "The Things Network" / "ttn-sensoren.csv"
DB = "bench"
#: Set by --profile: where py-spy writes one collapsed-stack file per scenario.
PROFILE_DIR: Path | None = None
MEASUREMENT_QUERY = 'SELECT count("f_cnt") FROM /.*/'


def device_ids() -> list[str]:
    ids = []
    for line in REGISTRY.read_text(encoding="utf-8").splitlines()[1:]:
        dev = line.replace(",", ";", 1).split(";")[0].strip()
        if dev:
            ids.append(dev)
    return ids or ["eui-bench"]


def make_uplinks(start: int, count: int, devices: list[str]) -> list[tuple[str, dict[str, Any]]]:
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    out = []
    for seq in range(start, start + count):
        msg = json.loads(json.dumps(template))
        dev = devices[seq % len(devices)]
        ids = msg.setdefault("end_device_ids", {})
        ids["device_id"] = dev
        app = ids.get("application_ids", {}).get("application_id", "klima-bad-belzig")
        up = msg.setdefault("uplink_message", {})
        up["f_cnt"] = seq + 1
        dp = up.get("decoded_payload") or {}
        dp["water_SOIL"] = f"{10 + (seq % 900) / 100:.2f}"
        up["decoded_payload"] = dp
        out.append((f"v3/{app}/devices/{dev}/up", msg))
    return out


PLACEHOLDER = "0000-00-00T00:00:00.000000000Z"  # as long as a real received_at


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid  # 3.1.1, clean, 60 s
    return b"\x10" + _varint(len(body)) + body


def publisher(
    port: int, qos: int, rate: float, start: int, count: int, topic_prefix: str, result: Any
) -> None:
    """One publisher process: a lean MQTT 3.1.1 client on a raw socket.

    The benchmark must not be limited by its own load generator, and paho's Python
    publish path tops out near 5,000-10,000 QoS 1 messages/s per process here. This
    client pre-encodes every uplink, writes PUBLISH packets in batches, keeps up to
    20,000 QoS 1 messages in flight (pipelined) and counts PUBACKs on a reader thread.
    """
    devices = device_ids()
    uplinks = make_uplinks(start, count, devices)
    encoded: list[tuple[bytes, bytes]] = []
    for topic, msg in uplinks:
        msg["received_at"] = PLACEHOLDER
        msg["uplink_message"]["received_at"] = PLACEHOLDER
        encoded.append(((topic_prefix + topic).encode(), json.dumps(msg, separators=(",", ":")).encode()))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet(f"bench-pub-{start}-{os.getpid()}"))
    connack = sock.recv(4)
    if len(connack) != 4 or connack[0] != 0x20 or connack[3] != 0:
        raise RuntimeError(f"CONNACK refused: {connack!r}")
    acked = 0
    ack_lock = threading.Condition()

    def read_acks() -> None:
        nonlocal acked
        pending = b""
        while acked < count:
            data = sock.recv(65536)
            if not data:
                return
            pending += data
            n = len(pending) // 4  # PUBACK: 40 02 id id
            pending = pending[n * 4 :]
            with ack_lock:
                acked += n
                ack_lock.notify_all()

    reader = threading.Thread(target=read_acks, daemon=True)
    if qos:
        reader.start()
    times = [0.0] * count
    placeholder = PLACEHOLDER.encode()
    header = 0x30 | (qos << 1)
    t0 = time.time()
    buf = bytearray()
    for i, (topic, payload) in enumerate(encoded):
        if rate:
            due = t0 + i / rate
            delay = due - time.time()
            if delay > 0:
                if buf:
                    sock.sendall(buf)
                    buf.clear()
                time.sleep(delay)
        if qos and i - acked > 20000:
            sock.sendall(buf)
            buf.clear()
            with ack_lock:
                ack_lock.wait_for(lambda i=i: i - acked <= 10000, timeout=30)
        now = time.time()
        # Microseconds from the clock, the last three digits from the sequence number: two
        # publisher processes can read the same clock value, and a point with the same
        # series and timestamp would overwrite another in InfluxDB.
        ns = int(now * 1e6) % 1_000_000 * 1000 + (start + i) % 1000
        stamp = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ns:09d}Z").encode()
        body = payload.replace(placeholder, stamp)
        var = len(topic).to_bytes(2, "big") + topic
        if qos:
            var += ((start + i) % 65535 + 1).to_bytes(2, "big")
        buf += bytes((header,)) + _varint(len(var) + len(body)) + var + body
        times[i] = now
        if len(buf) > 262144:
            sock.sendall(buf)
            buf.clear()
    if buf:
        sock.sendall(buf)
    if qos:
        with ack_lock:
            ack_lock.wait_for(lambda: acked >= count, timeout=300)
    t1 = time.time()
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    result.put({"start": start, "times": times, "t0": t0, "t1": t1})


def publish_all(
    port: int, qos: int, rate: float, total: int, publishers: int, topic_prefix: str = ""
) -> tuple[list[float], float, float]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    share = total // publishers
    procs = []
    for p in range(publishers):
        n = share if p < publishers - 1 else total - share * (publishers - 1)
        proc = ctx.Process(
            target=publisher,
            args=(port, qos, rate / publishers if rate else 0.0, p * share, n, topic_prefix, q),
        )
        proc.start()
        procs.append(proc)
    results = [q.get() for _ in procs]
    for proc in procs:
        proc.join()
    times = sorted(t for r in results for t in r["times"])
    return times, min(r["t0"] for r in results), max(r["t1"] for r in results)


def sys_dropped(port: int) -> int:
    """Messages Mosquitto dropped (queue limits), from $SYS."""
    got: dict[str, int] = {}

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        got[m.topic] = int(m.payload.decode() or 0)

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-sys")
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe("$SYS/broker/publish/messages/dropped")
    c.loop_start()
    deadline = time.time() + 3
    while not got and time.time() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    return sum(got.values())


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Result:
    name: str
    qos: int
    offered: str
    published: int
    stored: int
    dropped_broker: int
    publish_rate: float
    e2e_rate: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_msg: float
    peak_rss_mib: float


def count_points(client: httpx.Client, url: str) -> int:
    r = client.get(f"{url}/query", params={"db": DB, "q": MEASUREMENT_QUERY})
    total = 0
    for res in r.json().get("results", []):
        for s in res.get("series", []) or []:
            for row in s.get("values", []):
                total += int(row[1] or 0)
    return total


def run_scenario(
    name: str, qos: int, rate: float, total: int, publishers: int, engine_env: dict[str, str], workdir: Path
) -> Result:
    broker = Mosquitto(max_queued_messages=0).start()
    influx = InfluxDB().start()
    influx.create_database(DB)
    env = {
        **os.environ,
        **engine_env,
        "MQTT_URL": broker.url,
        "INFLUX_URL": influx.url,
        "INFLUX_DB": DB,
        "TTN_REGISTRY": str(REGISTRY),
        "MQTT_QOS": str(qos),
        "KLIMAFLOW_DATA": str(workdir / name),
    }
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115
    engine = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "klimaflow"),
            "run",
            str(ROOT / "bench" / "flows" / "ingest.yaml"),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(2.0)  # engine start + subscription
        if engine.poll() is not None:
            raise RuntimeError(f"engine exited: {(workdir / f'{name}.log').read_text()[-2000:]}")
        cpu0 = proc_cpu_seconds(engine.pid)
        spy = None
        if PROFILE_DIR is not None:
            # Samples the engine into collapsed stacks; py-spy's own CPU is not the engine's.
            spy = subprocess.Popen(
                [
                    str(ROOT / ".venv" / "bin" / "py-spy"),
                    "record",
                    "-r",
                    "250",
                    "-f",
                    "raw",
                    "--nonblocking",
                    "-o",
                    str(PROFILE_DIR / f"{name}.txt"),
                    "--pid",
                    str(engine.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        http = httpx.Client(timeout=10)
        polls: list[tuple[float, int]] = []
        ctx = mp.get_context("fork")
        pub_result: Any = ctx.Queue()

        def run_publishers() -> None:
            pub_result.put(publish_all(broker.port, qos, rate, total, publishers))

        pub_proc = ctx.Process(target=run_publishers)
        pub_proc.start()
        last_change = time.time()
        last = -1
        published: Any = None
        while True:
            n = count_points(http, influx.url)
            now = time.time()
            polls.append((now, n))
            if n != last:
                last, last_change = n, now
            if published is None and not pub_result.empty():
                # Read it now: a process that put a large object on a queue cannot exit
                # until somebody reads it.
                published = pub_result.get()
            if n >= total or (published is not None and now - last_change > 10):
                break
            time.sleep(0.05)
        times, t0, t1 = published if published is not None else pub_result.get()
        pub_proc.join()
        cpu1 = proc_cpu_seconds(engine.pid)
        rss = proc_peak_rss_mib(engine.pid)
        dropped = sys_dropped(broker.port)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(30)
        except subprocess.TimeoutExpired:
            engine.kill()
        log.close()
        broker.cleanup()
        influx.cleanup()
    stored = polls[-1][1]
    latencies = []
    k = 0
    for when, n in polls:
        while k < min(n, len(times)):
            latencies.append(when - times[k])
            k += 1
    done_at = next((w for w, n in polls if n >= stored), polls[-1][0])
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [0.0] * 99
    return Result(
        name=name,
        qos=qos,
        offered="max" if not rate else f"{rate:,.0f}/s",
        published=len(times),
        stored=stored,
        dropped_broker=dropped,
        publish_rate=len(times) / max(t1 - t0, 1e-9),
        e2e_rate=stored / max(done_at - t0, 1e-9),
        p50_ms=q[49] * 1000,
        p99_ms=q[98] * 1000,
        cpu_us_per_msg=(cpu1 - cpu0) / max(stored, 1) * 1e6,
        peak_rss_mib=rss,
    )


def publisher_ceiling(total: int, publishers: int, qos: int) -> float:
    broker = Mosquitto(max_queued_messages=0).start()
    try:
        times, t0, t1 = publish_all(broker.port, qos, 0.0, total, publishers, topic_prefix="nobody/")
        return len(times) / (t1 - t0)
    finally:
        broker.cleanup()


SCENARIOS = {
    "qos0-max": (0, 0.0),
    "qos1-max": (1, 0.0),
    "qos1-20k": (1, 20000.0),
    "qos1-5k": (1, 5000.0),
    "qos0-20k": (0, 20000.0),
}


def machine_probe(seconds: float = 0.5) -> float:
    """CPU µs of a fixed pure-Python workload (a JSON round trip of the template uplink).

    It runs none of klimaflow's code, so it tells the machine's speed at that moment: this
    VM's speed varies 2-3x through a day, and figures of runs are comparable only together
    with the probe (or back to back).
    """
    text = TEMPLATE.read_text(encoding="utf-8")
    n = 0
    t0 = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(50):
            json.dumps(json.loads(text))
        n += 50
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--profile", metavar="DIR", help="sample the engine with py-spy into DIR (slows it)")
    ap.add_argument("--skip-limits", action="store_true", help="do not measure the physical limits")
    args = ap.parse_args()
    if args.profile:
        global PROFILE_DIR
        PROFILE_DIR = Path(args.profile).resolve()
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="kf-bench-"))
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"machine probe: {machine_probe():.1f} µs per JSON round trip of the uplink (lower is faster)")
    if not args.skip_limits:
        print("physical limits:")
        ceiling = measure_ceiling().points_per_second
        print(
            f"  InfluxDB 1.6.7 batched write ceiling (5,000 points/request, 1 connection): {ceiling:,.0f} points/s"
        )
        for qos in (0, 1):
            r = publisher_ceiling(min(args.messages, 100_000), args.publishers, qos)
            print(
                f"  publishers ({args.publishers} processes) into Mosquitto, nobody subscribed, QoS {qos}: {r:,.0f} msg/s"
            )
    header = f"{'scenario':10} {'offered':>9} {'published':>9} {'stored':>9} {'lost':>6} {'broker drop':>11} {'pub/s':>8} {'e2e/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu µs/msg':>10} {'RSS MiB':>8}"
    print(header)
    for name in args.scenarios.split(","):
        qos, rate = SCENARIOS[name]
        r = run_scenario(name, qos, rate, args.messages, args.publishers, {}, workdir)
        print(
            f"{r.name:10} {r.offered:>9} {r.published:>9,} {r.stored:>9,} {r.published - r.stored:>6,} {r.dropped_broker:>11,} {r.publish_rate:>8,.0f} {r.e2e_rate:>8,.0f} {r.p50_ms:>8.0f} {r.p99_ms:>8.0f} {r.cpu_us_per_msg:>10.1f} {r.peak_rss_mib:>8.0f}",
            flush=True,
        )
    print(f"machine probe after the scenarios: {machine_probe():.1f} µs")


if __name__ == "__main__":
    main()
