"""A real Supervisor over flow files in tmp_path, the editor API app on it, and tokens per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from editor_api import create_app
from editor_api.auth import (
    Authenticator,
    AuthSettings,
    Role,
    TokenEntry,
    UserEntry,
    hash_password,
    hash_token,
)
from engine.supervisor import Supervisor

FLOW_A = """\
# Flow A: a button and a debug node.
id: a
label: Flow A
nodes:
  - id: tick   # pressed through the API
    type: inject
    topic: t/1
    payload: {temperature: 21.5}
    wires: [show]
  - id: show
    type: debug
    log: false
"""

#: The connection password comes from the environment: the API must never show its value.
FLOW_B = """\
id: b
label: Flow B
connections:
  store:
    type: influxdb
    url: http://127.0.0.1:9
    database: klima
    username: klima
    password: ${INFLUX_PASSWORD}
nodes:
  - id: b-tick
    type: inject
    wires: [b-out]
  - id: b-out
    type: influxdb-out
    server: store
    measurement: m
"""

SECRET = "s3cr3t-Pa55word"
ENVIRON = {"INFLUX_PASSWORD": SECRET}
TOKENS: dict[Role, str] = {
    "reader": "kf_reader-token-0123456789abcdef",
    "editor": "kf_editor-token-0123456789abcdef",
    "admin": "kf_admin-token-0123456789abcdef",
}
PASSWORD = "correct horse battery staple"
_PASSWORD_HASH = hash_password(PASSWORD)


def auth_settings() -> AuthSettings:
    return AuthSettings(
        users=[
            UserEntry(name="alice", role="admin", password_hash=_PASSWORD_HASH),
            UserEntry(name="rita", role="reader", password_hash=_PASSWORD_HASH),
        ],
        tokens=[
            TokenEntry(id=f"{role}-token", role=role, token_hash=hash_token(t)) for role, t in TOKENS.items()
        ],
        token_ttl=3600,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def as_role(role: Role) -> dict[str, str]:
    return bearer(TOKENS[role])


@dataclass
class Api:
    supervisor: Supervisor
    app: FastAPI
    client: httpx.AsyncClient
    flow_dir: Path
    clock: Clock
    auth: Authenticator


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "a.yaml").write_text(FLOW_A, encoding="utf-8")
    (d / "b.yaml").write_text(FLOW_B, encoding="utf-8")
    return d


@pytest.fixture
async def api(flow_dir: Path, tmp_path: Path) -> AsyncIterator[Api]:
    sup = Supervisor([flow_dir], data_dir=tmp_path / "data", drain_timeout=2.0, environ=ENVIRON)
    await sup.start()
    clock = Clock()
    auth = Authenticator(auth_settings(), clock=clock)
    app = create_app(sup, auth)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://klimaflow.test") as client:
            yield Api(sup, app, client, flow_dir, clock, auth)
    finally:
        await app.state.api.aclose()
        await sup.stop()
