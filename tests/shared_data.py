"""Locate the shared test data (``shared/data`` beside the repository checkout).

CI clones the repository with ``shared/`` next to it; here that is ``/work/shared/data``.
``KLIMAFLOW_SHARED_DATA`` overrides the location. Tests that need the data call
:func:`shared_path`, which skips them with the reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The shared data directory, or None if it cannot be found."""
    env = os.environ.get("KLIMAFLOW_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def shared_path(*parts: str) -> Path:
    """Path inside the shared data directory; skips the calling test if it is not there."""
    base = shared_data_dir()
    if base is None:
        pytest.skip(
            f"shared test data not found (expected {REPO.parent / 'shared' / 'data'} or $KLIMAFLOW_SHARED_DATA)"
        )
    path = base.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data file missing: {path}")
    return path
