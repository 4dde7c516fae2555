"""``klimaflow run --api`` as a real process: the printed token, live reload of a saved file,
a clean stop; ``--no-auth`` only on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from editor_api.auth import Authenticator, load_auth_settings
from engine.cli import cli
from tests.editor_api.conftest import FLOW_A

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.pop("KLIMAFLOW_DATA", None)
    return env


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "run",
            *args,
            "--data-dir",
            str(tmp_path / "data"),
            "--log-format",
            "plain",
        ],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _read_until(
    proc: subprocess.Popen[bytes], pattern: str, timeout: float = 20
) -> tuple[re.Match[str], str]:
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while (m := re.search(pattern, seen)) is None:
        left = deadline - time.monotonic()
        if left <= 0 or (proc.poll() is not None and not select.select([proc.stderr], [], [], 0)[0]):
            proc.kill()
            pytest.fail(f"{pattern!r} not printed; got:\n{seen}")
        if select.select([proc.stderr], [], [], left)[0]:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk and proc.poll() is not None:
                continue
            seen += chunk.decode(errors="replace")
    return m, seen


def _wait(predicate: object, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_run_with_api_prints_a_token_and_reloads_saved_files(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "a.yaml").write_text(FLOW_A, encoding="utf-8")
    proc = _start(tmp_path, str(flows), "--api", "127.0.0.1:0")
    try:
        m, early = _read_until(proc, r"editor API on (http://127\.0\.0\.1:\d+).*\n(?:.*\n)*?\s+(kf_\S+)\n")
        url, token = m.group(1), m.group(2)
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/api/status").status_code == 401
            assert client.get("/api/status", headers={"Authorization": "Bearer kf_wrong"}).status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            r = client.get("/api/status", headers=auth)
            assert r.status_code == 200
            first = r.json()["revision"]
            assert client.get("/readyz").status_code == 200
            # File watching is on by default: a saved edit becomes the running revision.
            (flows / "a.yaml").write_text(FLOW_A.replace("21.5", "22.5"), encoding="utf-8")
            assert _wait(lambda: client.get("/api/status", headers=auth).json()["revision"] != first)
            last = client.get("/api/status", headers=auth).json()["last_result"]
            assert last["trigger"] == "file"
            assert last["diff"]["changed"] == ["tick"]
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=20)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    log = early + rest
    assert proc.returncode == 0, log
    assert "cli: SIGTERM received" in log
    assert log.rstrip().endswith("stopped")
    assert "Traceback" not in log
    assert log.count(token) == 2  # printed once with its curl example, never logged


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FLOW_A, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(tmp_path / "a.yaml"), "--api", "0.0.0.0:0", "--no-auth"],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "klimaflow: error: --no-auth is refused on 0.0.0.0: only on a loopback address such as 127.0.0.1"
    )
    assert not (tmp_path / ".klimaflow").exists()


def test_no_auth_on_loopback_and_a_taken_port(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FLOW_A, encoding="utf-8")
    proc = _start(tmp_path, str(tmp_path / "a.yaml"), "--api", "127.0.0.1:0", "--no-auth", "--no-watch")
    try:
        m, _ = _read_until(proc, r"editor API on (http://127\.0\.0\.1:(\d+))")
        assert httpx.get(m.group(1) + "/api/status", timeout=5).status_code == 200
        # A second instance on the same port fails with one line, before starting any flow.
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "run",
                str(tmp_path / "a.yaml"),
                "--api",
                f"127.0.0.1:{m.group(2)}",
            ],
            cwd=tmp_path,
            env=_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert second.stderr.splitlines()[-1] == (
            f"klimaflow: error: cannot listen on 127.0.0.1:{m.group(2)}: Address already in use"
        )
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0


def test_auth_commands_make_config_entries_that_load(tmp_path: Path) -> None:
    runner = CliRunner()
    hashed = runner.invoke(cli, ["auth", "hash-password", "--stdin"], input="s3cret pass\n")
    assert hashed.exit_code == 0, hashed.output
    password_hash = hashed.stdout.strip()
    assert PasswordHasher().verify(password_hash, "s3cret pass")
    made = runner.invoke(cli, ["auth", "new-token", "--id", "prometheus", "--role", "reader"])
    assert made.exit_code == 0, made.output
    token = made.stderr.rsplit(" ", 1)[-1].strip()
    assert token.startswith("kf_")
    assert token not in made.stdout
    config = tmp_path / "auth.yaml"
    config.write_text(
        made.stdout + f"users:\n  - name: alice\n    role: admin\n    password_hash: '{password_hash}'\n",
        encoding="utf-8",
    )
    auth = Authenticator(load_auth_settings(config))
    assert auth.login("alice", "s3cret pass")[1].role == "admin"
    principal = asyncio.run(auth.authenticate(token))
    assert (principal.subject, principal.role, principal.via) == ("prometheus", "reader", "token")
