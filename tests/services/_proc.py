"""Shared helpers for test services: free ports, readiness polling, stopping by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, log_file: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    tail = ""
    if log_file and os.path.exists(log_file):
        with open(log_file, errors="replace") as fh:
            tail = "\n" + "".join(fh.readlines()[-20:])
    raise RuntimeError(f"{what} did not become ready within {timeout}s{tail}")


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class ServiceProcess:
    """A server process of a test or benchmark: its own work directory, started in its own
    session (a Ctrl-C meant for the caller must not reach it), stopped by PID."""

    workdir: Path = field(default_factory=Path)
    proc: subprocess.Popen[bytes] | None = None

    def _launch(
        self,
        argv: Sequence[str],
        ready: Callable[[], bool],
        what: str,
        log_file: Path,
        timeout: float,
        output: Path | None = None,
    ) -> None:
        """Start ``argv`` (stdout/stderr to ``output``) and wait until ``ready``; on timeout the
        error shows the end of ``log_file``."""
        out = open(output or self.workdir / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(ready, timeout, what, str(log_file))

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> ServiceProcess:
        raise NotImplementedError

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
