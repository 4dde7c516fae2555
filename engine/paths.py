"""Dotted property paths on a message's dict view: ``payload.soil.moisture``, ``topic``, ``meta_key``.

Node configs name message properties the way Node-RED does (``msg.payload.x`` without
the ``msg.``); these helpers are the one implementation every node uses.
"""

from __future__ import annotations

from typing import Any

from engine.message import Message

_MISSING = object()


def split_path(path: str) -> list[str]:
    p = path.strip()
    if p.startswith("msg."):
        p = p[4:]
    if p.startswith("meta."):
        # Meta keys sit at the top level of the message's dict view; accept the
        # explicit spelling too, so `meta.error` and `error` name the same thing.
        p = p[5:]
    if not p or p == "msg":
        return []
    return p.split(".")


def _step(cur: Any, part: str) -> Any:
    if isinstance(cur, dict):
        return cur.get(part, _MISSING)
    if isinstance(cur, list) and part.lstrip("-").isdigit():
        i = int(part)
        return cur[i] if -len(cur) <= i < len(cur) else _MISSING
    return _MISSING


def get_path(data: Any, path: str, default: Any = None) -> Any:
    """Value at ``path`` in nested dicts/lists (``a.b.0``), or ``default`` if any part is missing."""
    cur = data
    for part in split_path(path):
        cur = _step(cur, part)
        if cur is _MISSING:
            return default
    return cur


def has_path(data: Any, path: str) -> bool:
    return get_path(data, path, _MISSING) is not _MISSING


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path``, creating intermediate dicts; list indices must exist."""
    parts = split_path(path)
    if not parts:
        raise ValueError("cannot replace the whole message; name a property such as 'payload'")
    cur: Any = data
    for part in parts[:-1]:
        nxt = _step(cur, part)
        if nxt is _MISSING or not isinstance(nxt, dict | list):
            if not isinstance(cur, dict):
                raise KeyError(f"cannot create {part!r} inside a {type(cur).__name__}")
            nxt = {}
            cur[part] = nxt
        cur = nxt
    last = parts[-1]
    if isinstance(cur, dict):
        cur[last] = value
    elif isinstance(cur, list) and last.lstrip("-").isdigit() and -len(cur) <= int(last) < len(cur):
        cur[int(last)] = value
    else:
        raise KeyError(f"cannot set {path!r}")


def delete_path(data: dict[str, Any], path: str) -> bool:
    """Delete ``path``; returns whether something was deleted."""
    parts = split_path(path)
    if not parts:
        return False
    parent = get_path(data, ".".join(parts[:-1]), _MISSING) if len(parts) > 1 else data
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and last.lstrip("-").isdigit() and -len(parent) <= int(last) < len(parent):
        del parent[int(last)]
        return True
    return False


def get_msg(msg: Message, path: str, default: Any = None) -> Any:
    """Fast path for the common properties, general path otherwise."""
    if path == "payload":
        return msg.payload
    if path == "topic":
        return msg.topic
    if path.startswith("payload."):
        return get_path(msg.payload, path[8:], default)
    return get_path(msg.to_dict(), path, default)


def set_msg(msg: Message, path: str, value: Any) -> None:
    if path in ("payload", "msg.payload"):
        msg.payload = value
        return
    if path in ("topic", "msg.topic"):
        msg.topic = None if value is None else str(value)
        return
    view = msg.to_dict()
    set_path(view, path, value)
    msg.update_from_dict(view)
