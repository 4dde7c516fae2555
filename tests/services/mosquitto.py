"""A private Mosquitto broker on a free port, for tests and benchmarks.

Limits are set deliberately (see ../shared/COMPONENTS.md): Mosquitto's defaults
(``max_queued_messages 1000``, ``max_inflight_messages 20``) drop QoS 1 messages for a
subscriber that falls behind, which would make a zero-loss test measure the broker.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.services._proc import ServiceProcess, free_port, port_open


@dataclass
class Mosquitto(ServiceProcess):
    port: int = 0
    persistence: bool = False
    max_queued_messages: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kf-mosquitto-")))
    #: (ca file, server cert, server key): the listener speaks TLS only.
    tls: tuple[Path, Path, Path] | None = None
    #: user -> password; anonymous clients are refused when set.
    users: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "user root",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            f"max_queued_messages {self.max_queued_messages}",
            "max_inflight_messages 0",
            "max_queued_bytes 0",
            "sys_interval 1",
        ]
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
        if self.users:
            pw = self.workdir / "passwords"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True
                )
            lines.append(f"password_file {pw}")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Mosquitto:
        if not self.port:
            self.port = free_port()
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self._write_config()
        self._launch([binary, "-c", str(conf)], lambda: port_open(self.port), "mosquitto", self.log_file, 10)
        return self
