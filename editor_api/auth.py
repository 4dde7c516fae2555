"""Authentication and roles for the editor API: on by default, never off by accident.

Three ways to hold a bearer token, all checked by :class:`Authenticator`:

* API tokens from the auth config file, stored there only as ``sha256:HEX`` hashes;
* tokens issued by ``POST /api/auth/login`` (argon2 password hashes in the config file),
  kept in memory as hashes with an expiry, so a restart ends every login session;
* JWTs from an OpenID Connect issuer (e.g. Keycloak), verified against its JWKS (RS256,
  issuer and audience checked) with a role claim mapped to klimaflow's roles.

With no users, tokens or OIDC configured, :meth:`Authenticator.generate_admin_token`
makes one admin token for this process (printed once, as Jupyter does), so even a local
run answers 401 to a request without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import KlimaflowError
from engine.types import Duration

log = logging.getLogger("klimaflow.api.auth")

Role = Literal["reader", "editor", "admin"]
ROLE_RANK: dict[str, int] = {"reader": 1, "editor": 2, "admin": 3}
TOKEN_PREFIX = "kf_"
_IDENTITY_ROLES: dict[str, Role] = {"reader": "reader", "editor": "editor", "admin": "admin"}
_TOKEN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


class AuthConfigError(KlimaflowError):
    """The auth config file is missing, unreadable or wrong; the server does not start."""


class AuthError(Exception):
    """A request is not authenticated (HTTP 401); the message is safe to show."""


class NoRoleError(AuthError):
    """Authenticated, but the identity maps to no klimaflow role (HTTP 403)."""


class LoginThrottled(AuthError):
    """Too many failed logins for this user name or client address (HTTP 429, ``Retry-After``)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


def hash_token(token: str) -> str:
    """How tokens are stored: high-entropy random strings need a fast hash, not a slow KDF."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    """An argon2id hash for the ``users`` section of the auth config."""
    return PasswordHasher().hash(password)


# -- config file -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserEntry(_Strict):
    """A person who logs in with a password."""

    name: str = Field(min_length=1, description="Login name.")
    role: Role = Field(description="reader, editor or admin.")
    password_hash: str = Field(
        repr=False, description="argon2 hash (`klimaflow auth hash-password`); never the password."
    )

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: str) -> str:
        if not value.startswith("$argon2"):
            raise ValueError("must be an argon2 hash such as `klimaflow auth hash-password` prints")
        return value


class TokenEntry(_Strict):
    """A long-lived API token (scripts, CI, Prometheus); only its hash is stored."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the token.")
    role: Role = Field(description="reader, editor or admin.")
    token_hash: str = Field(repr=False, description="`sha256:HEX` of the token (`klimaflow auth new-token`).")

    @field_validator("token_hash")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if not _TOKEN_HASH.match(value):
            raise ValueError("must be `sha256:` followed by 64 lowercase hex digits, not the token itself")
        return value


class OidcSettings(_Strict):
    """Accept JWTs from an OpenID Connect issuer such as Keycloak."""

    issuer: str = Field(description="Expected `iss` claim, e.g. https://sso.example/realms/klima.")
    audience: str = Field(description="Expected `aud` claim (the client id).")
    jwks_url: str | None = Field(default=None, description="URL of the issuer's JWKS (fetched, cached).")
    jwks_file: str | None = Field(default=None, description="A JWKS file instead of a URL (offline setups).")
    role_claim: str = Field(
        default="roles",
        description="Dotted path of the claim holding roles, e.g. `realm_access.roles` for Keycloak.",
    )
    role_map: dict[str, Role] = Field(
        default_factory=dict,
        description="Claim value -> klimaflow role; without a map, the values reader/editor/admin are used as is.",
    )
    leeway: float = Field(default=30.0, ge=0, description="Seconds of clock skew tolerated for exp/nbf.")

    @model_validator(mode="after")
    def _one_source(self) -> OidcSettings:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("set exactly one of jwks_url and jwks_file")
        return self


class LoginThrottleSettings(_Strict):
    """Password guessing: refuse logins for a user name or a client address that failed too often."""

    max_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Failed logins for one user name, or from one client address, that lock it.",
    )
    window: Duration = Field(default=300.0, gt=0, description="The failures count within this time.")
    lockout: Duration = Field(
        default=300.0, gt=0, description="How long a locked user name or address is refused (HTTP 429)."
    )
    max_entries: int = Field(
        default=10_000,
        ge=10,
        description="User names and addresses remembered at most; stale ones go first, locked ones last.",
    )


class AuthSettings(_Strict):
    """The auth config file (YAML or JSON)."""

    users: list[UserEntry] = Field(default_factory=list, description="Password logins.")
    tokens: list[TokenEntry] = Field(default_factory=list, description="API tokens (hashes).")
    token_ttl: Duration = Field(default=12 * 3600.0, description="Lifetime of a login token.")
    oidc: OidcSettings | None = Field(default=None, description="OpenID Connect JWTs.")
    login_throttle: LoginThrottleSettings = Field(
        default_factory=LoginThrottleSettings, description="Lockout after repeated failed logins."
    )

    @property
    def empty(self) -> bool:
        return not (self.users or self.tokens or self.oidc)


def load_auth_settings(path: Path) -> AuthSettings:
    """Read the auth config; every problem is one :class:`AuthConfigError` naming the file."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthConfigError(f"{path}: cannot read auth config: {exc.strerror or exc}") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise AuthConfigError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    try:
        settings = AuthSettings.model_validate(data if data is not None else {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise AuthConfigError(f"{path}: {where + ': ' if where else ''}{msg}") from None
    if settings.oidc is not None and settings.oidc.jwks_file is not None:
        jwks = Path(settings.oidc.jwks_file)
        if not jwks.is_absolute():  # relative to the config file, like flow file references
            settings = settings.model_copy(
                update={"oidc": settings.oidc.model_copy(update={"jwks_file": str(path.parent / jwks)})}
            )
    names = [u.name for u in settings.users]
    ids = [t.id for t in settings.tokens]
    for kind, values in (("user", names), ("token", ids)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise AuthConfigError(f"{path}: duplicate {kind} {dupes[0]!r}")
    return settings


# -- runtime ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, and with which role."""

    subject: str
    role: Role
    via: Literal["token", "login", "generated", "oidc", "none"]
    token_id: str | None = None

    def allows(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass
class IssuedToken:
    """A token this process accepts; the token itself is never kept, only its hash."""

    id: str
    subject: str
    role: Role
    kind: Literal["token", "login", "generated"]
    token_hash: str = field(repr=False)
    created_at: float
    expires_at: float | None = None
    revoked: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "role": self.role,
            "kind": self.kind,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
        }


@dataclass(slots=True)
class _Failures:
    """Recent failed logins of one user name or address, and the end of its lockout."""

    times: deque[float]
    locked_until: float = -math.inf


class LoginThrottle:
    """Counts failed logins per user name and per client address (monotonic clock).

    ``max_failures`` failures within ``window`` lock the user name, or the address, for
    ``lockout``; the count then starts afresh (a fixed lockout, no backoff). A success clears
    both. Unknown user names count like known ones, so a lockout tells nothing about which
    names exist. IPv6 addresses count per /64, the block one host usually holds. At most
    ``max_entries`` names and addresses are remembered: stale ones are dropped first, then
    the least recently failed, locked ones last.
    """

    def __init__(self, settings: LoginThrottleSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _keys(username: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("user", username[:200])]
        if address:
            keys.append(("address", _address_key(address)))
        return keys

    def retry_after(self, username: str, address: str | None) -> int:
        """Whole seconds until this user name and address may try again; 0: they may now."""
        now = self.clock()
        wait = 0.0
        for key in self._keys(username, address):
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until > now:
                wait = max(wait, entry.locked_until - now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self, username: str, address: str | None) -> None:
        now = self.clock()
        s = self.settings
        for key in self._keys(username, address):
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= s.max_entries:
                    self._make_room(now)
                entry = self._entries[key] = _Failures(deque(maxlen=s.max_failures))
            else:
                self._entries.move_to_end(key)
            times = entry.times
            times.append(now)
            while times and times[0] <= now - s.window:
                times.popleft()
            if len(times) >= s.max_failures:
                times.clear()
                entry.locked_until = now + s.lockout
                kind, value = key
                log.warning(
                    "%d failed logins within %.0f s: %s %r locked for %.0f s (last try: user %r from %r)",
                    s.max_failures,
                    s.window,
                    kind,
                    value,
                    s.lockout,
                    username[:64],
                    address,
                )

    def succeeded(self, username: str, address: str | None) -> None:
        for key in self._keys(username, address):
            self._entries.pop(key, None)

    def _make_room(self, now: float) -> None:
        """Drop entries with neither a recent failure nor a lockout; if that is not enough,
        drop down to 90% of the cap, least recently failed first, locked entries last."""
        horizon = now - self.settings.window
        entries = self._entries
        for key in [
            k for k, e in entries.items() if e.locked_until <= now and (not e.times or e.times[-1] <= horizon)
        ]:
            del entries[key]
        cap = self.settings.max_entries
        if len(entries) < cap:
            return
        excess = len(entries) - (cap - max(1, cap // 10))
        victims = [k for k, e in entries.items() if e.locked_until <= now][:excess]
        if len(victims) < excess:
            victims += [k for k, e in entries.items() if e.locked_until > now][: excess - len(victims)]
        for key in victims:
            del entries[key]


def _address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class OidcVerifier:
    """RS256 JWTs checked against the issuer's keys; the role comes from a (mapped) claim."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.jwks_file is not None:
            try:
                self._keys = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text(encoding="utf-8"))
            except (OSError, jwt.PyJWKSetError, json.JSONDecodeError) as exc:
                raise AuthConfigError(f"oidc.jwks_file {settings.jwks_file}: {exc}") from None
        else:
            assert settings.jwks_url is not None
            self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=3600, timeout=10)

    async def _key(self, token: str) -> Any:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.DecodeError:
            raise AuthError("malformed token") from None
        if self._keys is not None:
            keys = self._keys.keys
            match = [k for k in keys if k.key_id == kid] if kid else keys[:1] if len(keys) == 1 else []
            if not match:
                raise AuthError("token signed with an unknown key")
            return match[0].key
        assert self._client is not None
        try:
            return (await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)).key
        except jwt.PyJWKClientConnectionError:
            log.error("cannot fetch the OIDC keys from %s", self.settings.jwks_url)
            raise AuthError("cannot check the token right now (identity provider unreachable)") from None
        except jwt.PyJWKClientError:
            raise AuthError("token signed with an unknown key") from None

    async def verify(self, token: str) -> tuple[Principal | None, dict[str, Any]]:
        """The principal (None: valid token but no klimaflow role) and the claims."""
        s = self.settings
        key = await self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        role = self._role(claims)
        return (Principal(_claims_subject(claims), role, "oidc") if role else None), claims

    def _role(self, claims: Mapping[str, Any]) -> Role | None:
        value: Any = claims
        for part in self.settings.role_claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        mapping: Mapping[str, Role] = self.settings.role_map or _IDENTITY_ROLES
        roles: list[Role] = [mapping[v] for v in values if isinstance(v, str) and v in mapping]
        if not roles:
            return None
        return sorted(roles, key=ROLE_RANK.__getitem__)[-1]


@dataclass(repr=False)
class Authenticator:
    """Checks bearer tokens and issues login tokens. ``enabled=False`` only via ``--no-auth``.

    ``clock`` (wall time) dates tokens; ``monotonic`` times the login throttle."""

    settings: AuthSettings = field(default_factory=AuthSettings)
    enabled: bool = True
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._hasher = PasswordHasher()
        # A real hash to verify against for unknown users: the answer takes as long either way.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        self._users = {u.name: u for u in self.settings.users}
        self._tokens: dict[str, IssuedToken] = {}
        self._by_hash: dict[str, str] = {}
        self._revoked_jwts: dict[str, float] = {}
        now = self.clock()
        for t in self.settings.tokens:
            self._add(IssuedToken(t.id, t.id, t.role, "token", t.token_hash, now))
        self.oidc = OidcVerifier(self.settings.oidc) if self.settings.oidc else None
        self.throttle = LoginThrottle(self.settings.login_throttle, self.monotonic)

    @property
    def needs_generated_token(self) -> bool:
        return self.enabled and self.settings.empty

    def _add(self, issued: IssuedToken) -> None:
        self._tokens[issued.id] = issued
        self._by_hash[issued.token_hash] = issued.id

    def generate_admin_token(self) -> str:
        """The token of a run without configured users; the caller prints it once."""
        token = new_token()
        self._add(IssuedToken("generated", "admin", "admin", "generated", hash_token(token), self.clock()))
        return token

    def login(self, username: str, password: str, address: str | None = None) -> tuple[str, IssuedToken]:
        """A login token for a right password. ``address`` is the client's, for the throttle:
        while the user name or the address is locked, :class:`LoginThrottled` is raised at
        once, without looking at the password."""
        wait = self.throttle.retry_after(username, address)
        if wait:
            raise LoginThrottled(wait)
        user = self._users.get(username)
        ok: bool
        try:
            ok = self._hasher.verify(user.password_hash if user else self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if user is None or not ok:
            log.warning("failed login for user %r from %r", username[:64], address)
            self.throttle.failed(username, address)
            raise AuthError("wrong user name or password")
        self.throttle.succeeded(username, address)
        token = new_token()
        now = self.clock()
        issued = IssuedToken(
            secrets.token_hex(6),
            user.name,
            user.role,
            "login",
            hash_token(token),
            now,
            now + self.settings.token_ttl,
        )
        self._add(issued)
        self._expire(now)
        log.info("user %s logged in (token %s, role %s)", user.name, issued.id, user.role)
        return token, issued

    def _expire(self, now: float) -> None:
        """Forget login tokens an hour past their expiry, so memory stays bounded."""
        for tid in [t.id for t in self._tokens.values() if t.expires_at and t.expires_at + 3600 < now]:
            self._by_hash.pop(self._tokens.pop(tid).token_hash, None)
        for h in [h for h, exp in self._revoked_jwts.items() if exp + 3600 < now]:
            del self._revoked_jwts[h]

    async def authenticate(self, token: str | None) -> Principal:
        if not self.enabled:
            return Principal("anonymous", "admin", "none")
        if not token:
            raise AuthError("authentication required: send 'Authorization: Bearer TOKEN'")
        if token.count(".") == 2 and not token.startswith(TOKEN_PREFIX):
            if self.oidc is None:
                raise AuthError("invalid token")
            if hash_token(token) in self._revoked_jwts:
                raise AuthError("token revoked")
            principal, claims = await self.oidc.verify(token)
            if principal is None:
                raise NoRoleError(
                    f"{_claims_subject(claims)} has no klimaflow role "
                    f"(claim {self.oidc.settings.role_claim!r})"
                )
            return principal
        tid = self._by_hash.get(hash_token(token))
        issued = self._tokens.get(tid) if tid else None
        if issued is None:
            raise AuthError("invalid token")
        if issued.revoked:
            raise AuthError("token revoked")
        if issued.expires_at is not None and self.clock() >= issued.expires_at:
            raise AuthError("token expired")
        return Principal(issued.subject, issued.role, issued.kind, issued.id)

    def revoke(self, token_id: str) -> IssuedToken | None:
        issued = self._tokens.get(token_id)
        if issued is not None and not issued.revoked:
            issued.revoked = True
            log.info("token %s (%s) revoked", issued.id, issued.subject)
        return issued

    async def revoke_token(self, token: str) -> bool:
        """Revoke by the token itself (what a client holds); JWTs are refused until they expire."""
        tid = self._by_hash.get(hash_token(token))
        if tid is not None:
            return self.revoke(tid) is not None
        if self.oidc is not None and token.count(".") == 2:
            try:
                _principal, claims = await self.oidc.verify(token)
            except AuthError:
                return False
            self._revoked_jwts[hash_token(token)] = float(claims.get("exp", self.clock()))
            log.info("OIDC token of %s revoked", _claims_subject(claims))
            return True
        return False

    def tokens(self) -> list[dict[str, Any]]:
        return [t.public() for t in self._tokens.values()]


def _claims_subject(claims: Mapping[str, Any]) -> str:
    return str(claims.get("preferred_username") or claims.get("sub") or "oidc-user")
