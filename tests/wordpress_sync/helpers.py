"""Shared bits of the WordPress tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from tests.services.wordpress import WordPress
from wordpress_sync.client import RetryPolicy, WordPressClient

FAST_RETRY = RetryPolicy(initial=0.1, maximum=0.5, give_up_after=None)
# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5c1d1a00000000049454e44ae426082"
)


def new_slug(prefix: str = "kf") -> str:
    """A slug no other test (in this session's shared WordPress) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def client(wp: WordPress, role: str = "administrator", **kwargs: object) -> WordPressClient:
    return WordPressClient(wp.url, role, wp.users[role].app_password, **kwargs)  # type: ignore[arg-type]


async def until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)
