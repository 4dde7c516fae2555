"""Login, token revocation and the token list. Tokens appear in exactly one response: the login."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from editor_api.app import AUTH_RESPONSES, Admin, Authenticated, State, bearer
from editor_api.auth import AuthError, LoginThrottled
from editor_api.models import Detail, LoginRequest, LoginResponse, Me, RevokeRequest, TokenInfo

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=LoginResponse,
    responses={
        401: {"model": Detail},
        404: {"model": Detail},
        429: {"model": Detail, "description": "Too many failed logins; see `Retry-After` (seconds)."},
    },
    summary="Log in with a password",
)
async def login(body: LoginRequest, state: State, request: Request) -> Response:
    """Issues a bearer token that expires after `token_ttl` (auth config; default 12 h).
    After `login_throttle.max_failures` failures (default 5) within `window` (5 min) for a
    user name or from a client address, that name or address is refused with 429 for
    `lockout` (5 min), without a look at the password."""
    if not state.auth.enabled:
        raise HTTPException(404, "authentication is off (--no-auth)")
    address = request.client.host if request.client else None
    try:
        token, issued = state.auth.login(body.username, body.password, address)
    except LoginThrottled as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    # Not through the redactor: this is the one response that must carry a secret.
    return Response(
        LoginResponse(
            token=token, id=issued.id, role=issued.role, expires_at=issued.expires_at or 0.0
        ).model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@router.get("/me", response_model=Me, responses=AUTH_RESPONSES, summary="Who am I")
async def me(state: State, who: Authenticated) -> Response:
    return state.json({"subject": who.subject, "role": who.role, "via": who.via})


@router.post(
    "/revoke",
    responses={**AUTH_RESPONSES, 404: {"model": Detail}},
    summary="Revoke a token",
)
async def revoke(
    state: State,
    _who: Authenticated,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    body: RevokeRequest | None = None,
) -> Response:
    """Revokes the given token (holding a token is enough to revoke it), or the caller's own.
    Revocation lasts until the process restarts; remove an API token from the auth config
    to revoke it for good."""
    token = (
        body.token if body is not None and body.token else credentials.credentials if credentials else None
    )
    if token is None:
        raise HTTPException(400, "give the token to revoke")
    if not await state.auth.revoke_token(token):
        raise HTTPException(404, "unknown token")
    return state.json({"ok": True})


@router.get("/tokens", response_model=list[TokenInfo], responses=AUTH_RESPONSES, summary="Tokens")
async def tokens(state: State, _who: Admin) -> Response:
    """Every token this process accepts, without the tokens themselves."""
    return state.json(state.auth.tokens())


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenInfo,
    responses={**AUTH_RESPONSES, 404: {"model": Detail}},
    summary="Revoke a token by id",
)
async def delete_token(token_id: str, state: State, _who: Admin) -> Response:
    issued = state.auth.revoke(token_id)
    if issued is None:
        raise HTTPException(404, f"no token {token_id!r}")
    return state.json(issued.public())
