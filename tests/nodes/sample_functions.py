"""Functions the ``python`` node tests call by import path (``tests.nodes.sample_functions:NAME``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from engine.errors import DecodeError

#: Set by :func:`slow_sync` when its sleep is over, so tests can wait for the thread.
slow_sync_finished = threading.Event()

NOT_CALLABLE = 42


def to_fahrenheit(payload: dict[str, Any], *, offset: float = 0.0) -> dict[str, Any]:
    return {"fahrenheit": round((payload["celsius"] + offset) * 1.8 + 32, 2)}


def describe(msg: dict[str, Any]) -> str:
    return f"{msg['topic']}={msg['payload']} from {msg['station']}"


def mutate_and_return(payload: dict[str, Any]) -> dict[str, Any]:
    payload["seen"] = True
    return payload


def keep_positive(payload: float) -> float | None:
    return payload if payload > 0 else None


def readings(payload: dict[str, Any]) -> list[Any]:
    return [*payload["values"], None]


async def async_double(payload: float) -> float:
    await asyncio.sleep(0)
    return payload * 2


async def async_slow(payload: Any) -> Any:
    await asyncio.sleep(5)
    return payload


def slow_sync(payload: Any, *, seconds: float = 0.3) -> Any:
    time.sleep(seconds)
    slow_sync_finished.set()
    return payload


def thread_name(payload: Any) -> str:
    return threading.current_thread().name


def broken(payload: Any) -> Any:
    raise ZeroDivisionError("calibration table is empty")


def rejects(payload: Any) -> Any:
    raise DecodeError(f"not a reading: {payload!r}")
