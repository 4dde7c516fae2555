"""Run the klima.daten platform demo end to end.

1. A private Mosquitto and InfluxDB on free ports in a temporary directory, so the demo
   neither needs nor disturbs a broker or database already running on this machine.
2. ``klimaflow import`` loads the shipped open-data files (groundwater, DWD climate means,
   energy / forest / agriculture statistics) through their importer flows, with progress.
3. ``klimaflow grafana provision`` writes Grafana's provisioning folder for everything the
   flows store.
4. A private WordPress (with MariaDB) when its Debian packages are installed (setup.sh
   installs them), for the weekly summary post.
5. ``klimaflow run flows/`` with the editor API on 127.0.0.1:1880: the demo flow replays real
   TTN uplinks as the town's sensor network through MQTT into InfluxDB, and the weekly
   summary is written to WordPress 40 s after start.
6. Where to look is printed; Ctrl-C stops the engine (it drains), then the services.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services._proc import free_port, port_open  # noqa: E402
from tests.services.influxdb import InfluxDB  # noqa: E402
from tests.services.mosquitto import Mosquitto  # noqa: E402
from tests.services.wordpress import ADMIN_LOGIN_PASSWORD, ADMIN_USER, WordPress  # noqa: E402

KLIMAFLOW = ROOT / ".venv" / "bin" / "klimaflow"
DB = "klimadaten"
# Importer flow -> the shipped files it imports (the globs of its watch node).
IMPORTS: list[tuple[str, list[str]]] = [
    ("flows/groundwater.yaml", ["data/groundwater/*.csv", "data/groundwater/*.zip"]),
    ("flows/dwd-climate-means.yaml", ["data/dwd/*.csv"]),
    ("flows/statistics.yaml", ["data/statistics/*/*.csv"]),
]


def _import_open_data(env: dict[str, str]) -> None:
    for flow, patterns in IMPORTS:
        if not (ROOT / flow).exists():
            continue
        files = sorted(str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern))
        if not files:
            continue
        print(f"\ndemo: klimaflow import {flow} ({len(files)} files)", flush=True)
        # Exit 1 means "nothing imported": worth a look, no reason to stop the demo.
        subprocess.run([str(KLIMAFLOW), "import", flow, *files], env=env, cwd=ROOT, check=False)


def _wait_ready(url: str, engine: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and engine.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _start_wordpress() -> WordPress | None:
    if os.environ.get("DEMO_WORDPRESS", "1") == "0":
        return None
    if not (shutil.which("php") and Path("/usr/share/wordpress").is_dir() and shutil.which("mariadbd")):
        print("demo: no WordPress (install php-cli php-mysql mariadb-server wordpress): no weekly post")
        return None
    print("demo: installing a private WordPress (about 30 s)...", flush=True)
    try:
        return WordPress().start()
    except Exception as exc:  # the rest of the demo works without it
        print(f"demo: WordPress did not start ({exc}); no weekly post", flush=True)
        return None


def _where_to_look(api_url: str, influx: InfluxDB, provisioning: Path, site: WordPress | None) -> str:
    query = 'SELECT last("water_SOIL") FROM /.*/ GROUP BY "site"'
    wordpress = (
        [
            f"  WordPress   {site.url}/wp-admin/  (login {ADMIN_USER} / {ADMIN_LOGIN_PASSWORD});",
            f"              the weekly summary post appears 40 s after start: {site.url}/?s=Wochenbericht",
        ]
        if site is not None
        else []
    )
    return "\n".join(
        [
            "",
            "demo: everything is running. Where to look:",
            f"  editor      {api_url}/editor/  (log in with the admin token printed above)",
            f"  InfluxDB    {influx.url}  database {DB!r}; try:",
            f"              curl -sG '{influx.url}/query' --data-urlencode 'db={DB}' \\",
            f"                   --data-urlencode '{'q=' + query}'",
            "              (soil moisture per sensor; the replay adds one uplink every 2 s)",
            f"  Grafana     provisioning written to {provisioning}",
            "              (mount it as /etc/grafana/provisioning; see docs/grafana.md)",
            *wordpress,
            "  Ctrl-C stops everything the demo started.",
            "",
        ]
    )


def main() -> int:
    work = ROOT / ".klimaflow" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(persistence=True).start()
    influx = InfluxDB().start()
    engine: subprocess.Popen[bytes] | None = None
    site: WordPress | None = None
    try:
        influx.create_database(DB)
        # Decades of weekly groundwater levels: one shard per year instead of InfluxDB 1.x's
        # default of one per week (thousands of shards make every write slow); see
        # docs/flows/groundwater.md.
        influx.query(f'ALTER RETENTION POLICY "autogen" ON "{DB}" SHARD DURATION 52w')
        print(f"demo: Mosquitto at {broker.url}, InfluxDB at {influx.url} (database {DB})", flush=True)
        env = {
            **os.environ,
            "MQTT_URL": broker.url,
            "INFLUX_URL": influx.url,
            "INFLUX_DB": DB,
            "TTN_REGISTRY": str(ROOT / "data" / "ttn" / "ttn-sensoren.csv"),
            "KLIMAFLOW_DATA": str(work),
        }
        _import_open_data(env)
        site = _start_wordpress()
        if site is not None:
            user, password = site.auth("editor")
            env |= {
                "WORDPRESS_URL": site.url,
                "WORDPRESS_USER": user,
                "WORDPRESS_APP_PASSWORD": password,
                "WEEKLY_SUMMARY_AT_START": "true",
                "WEEKLY_SUMMARY_DELAY": "40s",
            }
        provisioning = work / "grafana"
        subprocess.run(
            [str(KLIMAFLOW), "grafana", "provision", "flows/", "--out", str(provisioning)],
            env=env,
            cwd=ROOT,
            check=False,
        )
        args = sys.argv[1:]
        if "--api" not in args:
            # The editor on Node-RED's familiar port when it is free, else on any free port.
            port = 1880 if not port_open(1880) else free_port()
            args += ["--api", os.environ.get("KLIMAFLOW_API", f"127.0.0.1:{port}")]
        api = args[args.index("--api") + 1]
        engine = subprocess.Popen(
            [str(KLIMAFLOW), "run", "flows/", *args],
            env=env,
            cwd=ROOT,
            # Its own session: Ctrl-C reaches the whole foreground process group, and the
            # engine must get exactly one SIGINT (ours) — a second one means "exit at once".
            start_new_session=True,
        )

        def forward(signum: int, _frame: object) -> None:
            if engine is not None:
                engine.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        if _wait_ready(f"http://{api}", engine):
            print(_where_to_look(f"http://{api}", influx, provisioning, site), flush=True)
        return engine.wait()
    finally:
        if engine is not None and engine.poll() is None:
            engine.terminate()
            engine.wait(timeout=30)
        broker.cleanup()
        influx.cleanup()
        if site is not None:
            site.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
