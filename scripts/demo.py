"""Run the demo end to end: a private Mosquitto and InfluxDB, then ``klimaflow run flows/``
with the editor API (and the browser editor at /editor/) on 127.0.0.1:1880.

The services get free ports and a temporary directory, so the demo neither needs nor
disturbs a broker or database already running on this machine. Ctrl-C stops the
engine (it drains), then the services.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services._proc import free_port, port_open  # noqa: E402
from tests.services.influxdb import InfluxDB  # noqa: E402
from tests.services.mosquitto import Mosquitto  # noqa: E402


def main() -> int:
    broker = Mosquitto(persistence=True).start()
    influx = InfluxDB().start()
    influx.create_database("klimadaten")
    print(f"demo: Mosquitto at {broker.url}, InfluxDB at {influx.url} (database klimadaten)", flush=True)
    env = {
        **os.environ,
        "MQTT_URL": broker.url,
        "INFLUX_URL": influx.url,
        "INFLUX_DB": "klimadaten",
        "TTN_REGISTRY": str(ROOT / "flows" / "registry" / "ttn-sensoren.csv"),
        "KLIMAFLOW_DATA": str(ROOT / ".klimaflow" / "demo"),
    }
    args = sys.argv[1:]
    if "--api" not in args:
        # The editor on Node-RED's familiar port when it is free, else on any free port.
        port = 1880 if not port_open(1880) else free_port()
        args += ["--api", os.environ.get("KLIMAFLOW_API", f"127.0.0.1:{port}")]
    engine = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "klimaflow"), "run", str(ROOT / "flows"), *args],
        env=env,
        cwd=ROOT,
        # Its own session: Ctrl-C reaches the whole foreground process group, and the
        # engine must get exactly one SIGINT (ours) — a second one means "exit at once".
        start_new_session=True,
    )

    def forward(signum: int, _frame: object) -> None:
        engine.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        return engine.wait()
    finally:
        broker.cleanup()
        influx.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
