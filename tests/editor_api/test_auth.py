"""Authentication and roles: every endpoint without a token, with a too-weak role and with the
right one; login, expiry, revocation; OIDC against a locally made RSA key; no secret leaks."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm

from editor_api import create_app
from editor_api.auth import (
    AuthConfigError,
    Authenticator,
    AuthSettings,
    LoginThrottle,
    LoginThrottleSettings,
    OidcSettings,
    Role,
    load_auth_settings,
)
from editor_api.server import ApiServer, bind
from engine.node import NodeStatus
from engine.supervisor import Supervisor
from tests.editor_api.conftest import (
    ENVIRON,
    FLOW_A,
    PASSWORD,
    SECRET,
    TOKENS,
    Api,
    Clock,
    as_role,
    auth_settings,
    bearer,
)

YAML = "application/yaml"


def _rev(api: Api) -> str:
    assert api.supervisor.revision is not None
    return api.supervisor.revision


# (method, path, least role, request kwargs (a function of the running revision), status for that role)
ENDPOINTS: list[tuple[str, str, Role, Any, int]] = [
    ("GET", "/api/flows", "reader", lambda rev: {}, 200),
    ("GET", "/api/flows/a", "reader", lambda rev: {}, 200),
    ("GET", "/api/nodes", "reader", lambda rev: {}, 200),
    ("GET", "/api/status", "reader", lambda rev: {}, 200),
    ("GET", "/api/debug", "reader", lambda rev: {}, 200),
    ("GET", "/metrics", "reader", lambda rev: {}, 200),
    ("GET", "/api/auth/me", "reader", lambda rev: {}, 200),
    (
        "POST",
        "/api/validate",
        "editor",
        lambda rev: {"content": FLOW_A, "headers": {"Content-Type": YAML}},
        200,
    ),
    ("POST", "/api/debug/show", "editor", lambda rev: {"json": {"active": False}}, 200),
    (
        "POST",
        "/api/deploy",
        "admin",
        lambda rev: {"json": {"revision": rev, "flows": [{"text": FLOW_A}]}},
        200,
    ),
    (
        "POST",
        "/api/flows",
        "admin",
        lambda rev: {"json": {"revision": rev, "text": "id: c\nnodes: []\n"}},
        201,
    ),
    (
        "PUT",
        "/api/flows/a",
        "admin",
        lambda rev: {"content": FLOW_A, "headers": {"Content-Type": YAML, "If-Match": rev}},
        200,
    ),
    ("DELETE", "/api/flows/b", "admin", lambda rev: {"headers": {"If-Match": rev}}, 200),
    ("POST", "/api/inject/tick", "admin", lambda rev: {}, 200),
    ("GET", "/api/auth/tokens", "admin", lambda rev: {}, 200),
    ("DELETE", "/api/auth/tokens/editor-token", "admin", lambda rev: {}, 200),
]
WEAKER: dict[Role, Role | None] = {"reader": None, "editor": "reader", "admin": "editor"}


@pytest.mark.parametrize(
    ("method", "path", "role", "kwargs", "status"), ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS]
)
async def test_endpoint_needs_a_token_and_its_role(
    api: Api, method: str, path: str, role: Role, kwargs: Any, status: int
) -> None:
    files_before = {p.name: p.read_text() for p in api.flow_dir.iterdir()}

    def req(headers: dict[str, str]) -> Any:
        kw = kwargs(_rev(api))
        return api.client.request(method, path, **{**kw, "headers": {**kw.get("headers", {}), **headers}})

    r = await req({})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = await req(bearer("kf_not-a-token"))
    assert r.status_code == 401
    assert r.json() == {"detail": "invalid token"}
    weaker = WEAKER[role]
    if weaker is not None:
        r = await req(as_role(weaker))
        assert r.status_code == 403
        assert r.json() == {"detail": f"this needs the {role} role; {weaker}-token has {weaker}"}
    # Refused requests changed nothing.
    assert {p.name: p.read_text() for p in api.flow_dir.iterdir()} == files_before
    r = await req(as_role(role))
    assert r.status_code == status, r.text


async def test_event_stream_needs_a_token(api: Api) -> None:
    r = await api.client.get("/api/events")
    assert r.status_code == 401
    r = await api.client.get("/api/events?access_token=kf_wrong")
    assert r.status_code == 401


async def test_health_and_login_are_open(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).status_code == 200
    r = await api.client.post("/api/auth/login", json={"username": "alice", "password": "wrong"})
    assert r.status_code == 401
    assert r.json() == {"detail": "wrong user name or password"}


async def test_login_token_works_until_it_expires(api: Api) -> None:
    r = await api.client.post("/api/auth/login", json={"username": "rita", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["role"] == "reader"
    assert body["expires_at"] == api.clock.now + 3600
    assert r.headers["cache-control"] == "no-store"
    token = body["token"]
    me = await api.client.get("/api/auth/me", headers=bearer(token))
    assert me.json() == {"subject": "rita", "role": "reader", "via": "login"}
    assert (await api.client.get("/api/inject/tick", headers=bearer(token))).status_code == 405
    assert (await api.client.post("/api/inject/tick", headers=bearer(token))).status_code == 403
    api.clock.now += 3599
    assert (await api.client.get("/api/status", headers=bearer(token))).status_code == 200
    api.clock.now += 1
    r = await api.client.get("/api/status", headers=bearer(token))
    assert r.status_code == 401
    assert r.json() == {"detail": "token expired"}


async def test_unknown_user_gets_the_same_answer_as_a_wrong_password(api: Api) -> None:
    r = await api.client.post("/api/auth/login", json={"username": "mallory", "password": PASSWORD})
    assert r.status_code == 401
    assert r.json() == {"detail": "wrong user name or password"}


async def test_revoke_own_token_and_admin_revokes_by_id(api: Api) -> None:
    a = (await api.client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})).json()
    b = (await api.client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})).json()
    r = await api.client.post("/api/auth/revoke", headers=bearer(a["token"]))
    assert r.status_code == 200
    r = await api.client.get("/api/status", headers=bearer(a["token"]))
    assert r.status_code == 401
    assert r.json() == {"detail": "token revoked"}
    # The token list shows ids and state, never tokens or hashes.
    listing = await api.client.get("/api/auth/tokens", headers=as_role("admin"))
    by_id = {t["id"]: t for t in listing.json()}
    assert by_id[a["id"]]["revoked"] is True
    assert by_id[b["id"]]["revoked"] is False
    assert set(by_id[b["id"]]) == {"id", "subject", "role", "kind", "created_at", "expires_at", "revoked"}
    assert "sha256" not in listing.text
    r = await api.client.delete(f"/api/auth/tokens/{b['id']}", headers=as_role("admin"))
    assert r.status_code == 200
    assert (await api.client.get("/api/status", headers=bearer(b["token"]))).status_code == 401
    # A configured API token can be revoked too (until restart).
    await api.client.delete("/api/auth/tokens/reader-token", headers=as_role("admin"))
    assert (await api.client.get("/api/status", headers=as_role("reader"))).status_code == 401
    assert (await api.client.delete("/api/auth/tokens/nope", headers=as_role("admin"))).status_code == 404


async def test_generated_admin_token_when_nothing_is_configured(flow_dir: Path, tmp_path: Path) -> None:
    sup = Supervisor([flow_dir], data_dir=tmp_path / "data", environ=ENVIRON)
    await sup.start()
    try:
        auth = Authenticator()
        assert auth.needs_generated_token
        token = auth.generate_admin_token()
        app = create_app(sup, auth)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/api/status")).status_code == 401
            assert (await client.get("/api/status", headers=bearer(token + "x"))).status_code == 401
            assert (await client.post("/api/inject/tick", headers=bearer(token))).status_code == 200
            off = create_app(sup, Authenticator(enabled=False))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=off), base_url="http://t") as client:
            assert (await client.get("/api/status")).status_code == 200
    finally:
        await sup.stop()


async def test_secrets_never_appear_in_responses_or_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert api.supervisor.engine is not None
    # A node that quotes its resolved connection settings in its status (as a careless one might).
    api.supervisor.engine.runtimes["b-out"].set_status(
        NodeStatus("warning", f"cannot reach http://klima:{SECRET}@127.0.0.1:9 ({SECRET})")
    )
    login = await api.client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    session = login.json()["token"]
    responses = [
        await api.client.get("/api/flows", headers=bearer(session)),
        await api.client.get("/api/flows/b", headers=bearer(session)),
        await api.client.get("/api/status", headers=bearer(session)),
        await api.client.get("/metrics", headers=bearer(session)),
        await api.client.get("/api/auth/tokens", headers=bearer(session)),
        await api.client.get("/api/auth/me", headers=bearer(session)),
        await api.client.post("/api/auth/login", json={"username": "alice", "password": 12345}),
        await api.client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD + "x"}),
        await api.client.post(
            "/api/deploy",
            headers=bearer(session),
            json={"revision": _rev(api), "flows": [{"text": FLOW_A.replace("debug", "debgu")}]},
        ),
        await api.client.post(
            "/api/validate", headers={**bearer(session), "Content-Type": YAML}, content=FLOW_A
        ),
    ]
    status = responses[2].json()
    b_out = next(n for n in status["nodes"] if n["id"] == "b-out")
    assert b_out["status"]["text"] == "cannot reach http://klima:***@127.0.0.1:9 (***)"
    assert responses[6].status_code == 422
    everything = "\n".join(r.text for r in responses) + "\n" + caplog.text
    for secret in (SECRET, PASSWORD, session, *TOKENS.values()):
        assert secret not in everything
    assert "12345" not in responses[6].text  # a rejected input is not echoed back


def test_access_log_and_reprs_carry_no_tokens_or_hashes(api: Api) -> None:
    from editor_api.server import _QueryTokenFilter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/api/events?access_token={TOKENS['reader']}&kinds=debug", "1.1", 200),
        None,
    )
    assert _QueryTokenFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /api/events?access_token=***&kinds=debug HTTP/1.1" 200'
    text = (
        repr(api.auth.settings)
        + repr(api.auth)
        + repr(api.auth.tokens())
        + repr(list(api.auth._tokens.values()))
    )
    assert "sha256:" not in text
    assert "$argon2" not in text


# -- login throttle ------------------------------------------------------------------------------


@dataclass
class Throttled:
    """An app whose login throttle runs on a clock the test moves; logins from any address."""

    app: FastAPI
    auth: Authenticator
    clock: Clock
    verified: list[str]

    async def login(self, username: str, password: str, address: str = "10.0.0.1") -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/api/auth/login", json={"username": username, "password": password})


@pytest.fixture
def throttled(api: Api) -> Throttled:
    clock = Clock()
    auth = Authenticator(auth_settings(), monotonic=clock)
    verified: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(str(password))
            return super().verify(hash, password)

    auth._hasher = CountingHasher()
    return Throttled(create_app(api.supervisor, auth), auth, clock, verified)


async def test_five_failed_logins_lock_out_until_the_lockout_expires(
    throttled: Throttled, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "klimaflow.api.auth")
    for i in range(5):
        throttled.clock.now += 10
        r = await throttled.login("alice", f"guess-{i}")
        assert r.status_code == 401, i
    # The 6th attempt is refused even with the right password, which is not even checked.
    checked = len(throttled.verified)
    r = await throttled.login("alice", PASSWORD)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "300"
    assert r.json() == {"detail": "too many failed logins; try again in 300 s"}
    assert len(throttled.verified) == checked
    throttled.clock.now += 120.5
    r = await throttled.login("alice", PASSWORD)
    assert (r.status_code, r.headers["retry-after"]) == (429, "180")
    locks = [rec.getMessage() for rec in caplog.records if "locked" in rec.getMessage()]
    assert locks == [
        "5 failed logins within 300 s: user 'alice' locked for 300 s (last try: user 'alice' from '10.0.0.1')",
        "5 failed logins within 300 s: address '10.0.0.1' locked for 300 s (last try: user 'alice' from '10.0.0.1')",
    ]
    assert "guess-" not in caplog.text
    assert PASSWORD not in caplog.text
    # Once the lockout is over, the right password works (and the count starts afresh).
    throttled.clock.now += 180
    r = await throttled.login("alice", PASSWORD)
    assert r.status_code == 200
    assert r.json()["role"] == "admin"


async def test_failures_older_than_the_window_do_not_count(throttled: Throttled) -> None:
    for _ in range(4):
        assert (await throttled.login("alice", "wrong")).status_code == 401
    throttled.clock.now += 301
    for _ in range(4):
        assert (await throttled.login("alice", "wrong")).status_code == 401
    assert (await throttled.login("alice", PASSWORD)).status_code == 200


async def test_a_successful_login_resets_the_count_for_its_user_and_address(throttled: Throttled) -> None:
    for _ in range(4):
        assert (await throttled.login("alice", "wrong")).status_code == 401
    assert (await throttled.login("alice", PASSWORD)).status_code == 200
    # Four more failures: without the reset, the 5th in all would have locked the 6th.
    for _ in range(4):
        assert (await throttled.login("alice", "wrong")).status_code == 401
    assert (await throttled.login("alice", PASSWORD)).status_code == 200
    # The count started again at the success: five failures lock again.
    for _ in range(5):
        assert (await throttled.login("alice", "wrong")).status_code == 401
    assert (await throttled.login("alice", PASSWORD)).status_code == 429


async def test_a_lockout_holds_the_user_name_and_the_address_and_nothing_else(throttled: Throttled) -> None:
    # Guessing alice's password from A locks the name alice (from anywhere) and address A.
    for _ in range(5):
        assert (await throttled.login("alice", "wrong", "10.0.0.1")).status_code == 401
    assert (await throttled.login("rita", PASSWORD, "10.0.0.1")).status_code == 429
    assert (await throttled.login("alice", PASSWORD, "10.0.0.2")).status_code == 429
    assert (await throttled.login("rita", PASSWORD, "10.0.0.2")).status_code == 200
    # Cycling user names from one address locks the address; each name has one failure only.
    for i in range(5):
        assert (await throttled.login(f"mallory{i}", "wrong", "10.0.0.3")).status_code == 401
    assert (await throttled.login("rita", PASSWORD, "10.0.0.3")).status_code == 429
    assert (await throttled.login("mallory0", "wrong", "10.0.0.4")).status_code == 401
    assert (await throttled.login("rita", PASSWORD, "10.0.0.4")).status_code == 200
    # Unknown names lock like real ones: a 429 does not tell which names exist.
    for _ in range(5):
        assert (await throttled.login("nobody", "wrong", f"10.0.1.{_}")).status_code == 401
    assert (await throttled.login("nobody", "wrong", "10.0.0.5")).status_code == 429
    # IPv6 clients count per /64.
    for i in range(5):
        assert (await throttled.login(f"v6-{i}", "wrong", f"2001:db8::{i + 1}")).status_code == 401
    assert (await throttled.login("rita", PASSWORD, "2001:db8::ffff")).status_code == 429
    assert (await throttled.login("rita", PASSWORD, "2001:db8:0:1::1")).status_code == 200


def test_the_throttle_table_stays_bounded_when_many_user_names_are_tried() -> None:
    clock = Clock()
    throttle = LoginThrottle(LoginThrottleSettings(max_entries=100), clock)
    for _ in range(5):
        throttle.failed("alice", "192.0.2.1")
    assert throttle.retry_after("alice", None) == 300
    for i in range(5000):
        clock.now += 0.01
        throttle.failed(f"user-{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        assert len(throttle) <= 100
    # Locked entries are forgotten last, so a flood of names does not lift a lockout.
    assert throttle.retry_after("alice", None) > 0
    assert throttle.retry_after("bob", "192.0.2.1") > 0
    # After the lockout and the window, everything is stale and goes first.
    clock.now += 301
    throttle.failed("late", "192.0.2.9")
    for i in range(100):
        throttle.failed(f"later-{i}", None)
    assert len(throttle) <= 100
    assert throttle.retry_after("alice", "192.0.2.1") == 0


def test_login_throttle_settings_come_from_the_auth_config(tmp_path: Path) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text("login_throttle: {max_failures: 3, window: 1m, lockout: 15m}\n", encoding="utf-8")
    settings = load_auth_settings(path).login_throttle
    assert (settings.max_failures, settings.window, settings.lockout, settings.max_entries) == (
        3,
        60,
        900,
        10_000,
    )
    assert AuthSettings().login_throttle == LoginThrottleSettings(max_failures=5, window=300, lockout=300)
    clock = Clock()
    auth = Authenticator(load_auth_settings(path), monotonic=clock)
    for _ in range(3):
        auth.throttle.failed("alice", None)
    assert auth.throttle.retry_after("alice", None) == 900
    for bad, where in (
        ("{max_failures: 0}", "max_failures"),
        ("{lockout: 0}", "lockout"),
        ("{tries: 3}", "tries"),
    ):
        path.write_text(f"login_throttle: {bad}\n", encoding="utf-8")
        with pytest.raises(AuthConfigError, match=rf"login_throttle\.{where}"):
            load_auth_settings(path)


# -- auth config file ----------------------------------------------------------------------------


def test_auth_config_file_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "auth.yaml"
    good.write_text(
        "users:\n  - {name: alice, role: admin, password_hash: '$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA'}\n"
        "tokens:\n  - {id: prom, role: reader, token_hash: 'sha256:" + "ab" * 32 + "'}\n"
        "token_ttl: 2h\n",
        encoding="utf-8",
    )
    settings = load_auth_settings(good)
    assert settings.token_ttl == 7200
    assert [t.id for t in settings.tokens] == ["prom"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokens:\n  - {id: prom, role: reader, token_hash: kf_plaintext}\n", encoding="utf-8")
    with pytest.raises(AuthConfigError) as exc:
        load_auth_settings(bad)
    assert str(exc.value) == (
        f"{bad}: tokens.0.token_hash: must be `sha256:` followed by 64 lowercase hex digits, not the token itself"
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text("users:\n  - {name: a, role: admin, password_hash: hunter2}\n", encoding="utf-8")
    with pytest.raises(AuthConfigError, match="must be an argon2 hash"):
        load_auth_settings(plain)
    role = tmp_path / "role.yaml"
    role.write_text("users:\n  - {name: a, role: root, password_hash: '$argon2id$x'}\n", encoding="utf-8")
    with pytest.raises(AuthConfigError, match=r"users\.0\.role"):
        load_auth_settings(role)


# -- OpenID Connect ------------------------------------------------------------------------------

ISSUER = "https://sso.klima.test/realms/klima"
AUDIENCE = "klimaflow"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(key: rsa.RSAPrivateKey, kid: str = "k1") -> str:
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return json.dumps({"keys": [jwk]})


def _jwt(key: Any, *, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-1",
        "preferred_username": "olga",
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["offline_access", "klima-viewer"]},
        **claims,
    }
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def _oidc(**kw: Any) -> OidcSettings:
    return OidcSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        role_claim="realm_access.roles",
        role_map={"klima-viewer": "reader", "klima-ops": "admin"},
        leeway=0,
        **kw,
    )


async def _client_with(api: Api, settings: AuthSettings) -> httpx.AsyncClient:
    app = create_app(api.supervisor, Authenticator(settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_oidc_jwt_roles_issuer_audience_expiry_and_keys(
    api: Api, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(_jwks(rsa_key), encoding="utf-8")
    async with await _client_with(api, AuthSettings(oidc=_oidc(jwks_file=str(jwks)))) as client:
        viewer = _jwt(rsa_key)
        me = await client.get("/api/auth/me", headers=bearer(viewer))
        assert me.json() == {"subject": "olga", "role": "reader", "via": "oidc"}
        assert (await client.post("/api/inject/tick", headers=bearer(viewer))).status_code == 403
        ops = _jwt(rsa_key, realm_access={"roles": ["klima-viewer", "klima-ops"]})
        assert (await client.post("/api/inject/tick", headers=bearer(ops))).status_code == 200

        async def detail(token: str) -> tuple[int, str]:
            r = await client.get("/api/status", headers=bearer(token))
            return r.status_code, r.json()["detail"]

        assert await detail(_jwt(rsa_key, exp=int(time.time()) - 10)) == (401, "token expired")
        assert await detail(_jwt(rsa_key, aud="other-client")) == (
            401,
            "invalid token: Audience doesn't match",
        )
        assert await detail(_jwt(rsa_key, iss="https://evil.test")) == (401, "invalid token: Invalid issuer")
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await detail(_jwt(other_key)) == (401, "invalid token: Signature verification failed")
        assert await detail(_jwt(rsa_key, kid="k2")) == (401, "token signed with an unknown key")
        assert (await detail(_jwt("shared-secret-shared-secret-32by", alg="HS256")))[0] == 401
        assert await detail(_jwt(rsa_key, realm_access={"roles": ["offline_access"]})) == (
            403,
            "olga has no klimaflow role (claim 'realm_access.roles')",
        )
        # Revoked JWTs are refused until they expire.
        r = await client.post("/api/auth/revoke", headers=bearer(viewer))
        assert r.status_code == 200
        assert await detail(viewer) == (401, "token revoked")


class _JwksHandler(BaseHTTPRequestHandler):
    body = b""
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """The issuer's JWKS endpoint, on loopback."""
    _JwksHandler.body = _jwks(rsa_key).encode()
    _JwksHandler.hits = 0
    server = HTTPServer(("127.0.0.1", 0), _JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/realms/klima/protocol/openid-connect/certs"
    finally:
        server.shutdown()
        server.server_close()


async def test_oidc_keys_from_a_jwks_url_are_fetched_once(
    api: Api, jwks_server: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    async with await _client_with(api, AuthSettings(oidc=_oidc(jwks_url=jwks_server))) as client:
        for _ in range(3):
            r = await client.get("/api/flows", headers=bearer(_jwt(rsa_key)))
            assert r.status_code == 200
    assert _JwksHandler.hits == 1


async def test_oidc_with_an_unreachable_jwks_url_is_401_not_500(api: Api, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = AuthSettings(oidc=_oidc(jwks_url="http://127.0.0.1:9/certs"))
    async with await _client_with(api, settings) as client:
        r = await client.get("/api/flows", headers=bearer(_jwt(rsa_key)))
    assert r.status_code == 401
    assert r.json() == {"detail": "cannot check the token right now (identity provider unreachable)"}


@pytest.mark.parametrize(("trusted", "xff_counts"), [("127.0.0.1", True), ("192.0.2.1", False)])
async def test_the_throttle_sees_the_forwarded_address_only_from_a_trusted_proxy(
    api: Api, trusted: str, xff_counts: bool
) -> None:
    """--trusted-proxies: behind a proxy, clients are told apart by X-Forwarded-For, else not."""
    auth = Authenticator(auth_settings(), monotonic=Clock())
    server = ApiServer(create_app(api.supervisor, auth), bind("127.0.0.1", 0), trusted_proxies=trusted)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:

            async def login(user: str, password: str, client_address: str) -> int:
                r = await client.post(
                    "/api/auth/login",
                    json={"username": user, "password": password},
                    headers={"X-Forwarded-For": client_address},
                )
                return r.status_code

            for i in range(5):  # one client behind the proxy guesses five names
                assert await login(f"mallory{i}", "wrong", "203.0.113.5") == 401
            assert await login("alice", PASSWORD, "203.0.113.5") == 429
            # Another client behind the same proxy: its own address if the proxy is trusted,
            # otherwise the proxy's (this test's) address, which is locked.
            assert await login("alice", PASSWORD, "203.0.113.6") == (200 if xff_counts else 429)
    finally:
        await server.stop()
