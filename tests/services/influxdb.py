"""A private InfluxDB 1.x (``influxd``) on free ports, for tests and benchmarks.

Settings follow ../shared/COMPONENTS.md: both the HTTP and the RPC (backup) port are
free loopback ports, data lives in a temporary directory that survives
:meth:`InfluxDB.restart`, so "stop the database, keep writing, start it again" tests
see the same data afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services._proc import ServiceProcess, free_port


@dataclass
class InfluxDB(ServiceProcess):
    port: int = 0
    rpc_port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kf-influxd-")))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "influxd.log"

    def _write_config(self) -> Path:
        conf = self.workdir / "influxdb.conf"
        w = self.workdir
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{w}/meta"

[data]
  dir = "{w}/data"
  wal-dir = "{w}/wal"
  query-log-enabled = false

[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
"""
        )
        return conf

    def _ping(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False

    def start(self) -> InfluxDB:
        """Start (or start again, on the same ports and data) and wait for ``/ping``."""
        if not self.port:
            self.port = free_port()
        if not self.rpc_port:
            self.rpc_port = free_port()
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        conf = self._write_config()
        self._launch(
            [binary, "-config", str(conf)], self._ping, "influxd", self.log_file, 15, output=self.log_file
        )
        return self

    # -- helpers ---------------------------------------------------------------------------

    def query(self, q: str, db: str | None = None, epoch: str = "ns") -> list[dict[str, Any]]:
        """Run InfluxQL; returns the first statement's series (``[]`` if none), raises on errors."""
        params = {"q": q, "epoch": epoch}
        if db:
            params["db"] = db
        r = httpx.post(f"{self.url}/query", params=params, timeout=10)
        r.raise_for_status()
        result = r.json()["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Rows of every series of a query as dicts (tags of grouped series merged in)."""
        out: list[dict[str, Any]] = []
        for s in self.query(q, db):
            for values in s["values"]:
                row = dict(zip(s["columns"], values, strict=True))
                row.update(s.get("tags", {}))
                out.append(row)
        return out

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write(self, db: str, lines: str, precision: str = "ns") -> httpx.Response:
        return httpx.post(
            f"{self.url}/write", params={"db": db, "precision": precision}, content=lines.encode(), timeout=10
        )
