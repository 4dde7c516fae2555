"""The editor API's real HTTP server in front of a running Supervisor, for tests that call it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from editor_api import create_app
from editor_api.auth import Authenticator, AuthSettings, TokenEntry, hash_token
from editor_api.server import ApiServer, bind
from engine.supervisor import Supervisor


@asynccontextmanager
async def api_server(supervisor: Supervisor, tokens: Mapping[str, str]) -> AsyncIterator[str]:
    """Serve ``supervisor`` on a free loopback port; ``tokens`` maps role -> bearer token.

    Yields the base URL; the server stops when the block ends (the supervisor does not).
    """
    auth = Authenticator(
        AuthSettings(
            tokens=[TokenEntry(id=role, role=role, token_hash=hash_token(t)) for role, t in tokens.items()]
        )
    )
    server = ApiServer(create_app(supervisor, auth), bind("127.0.0.1", 0))
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()
