"""``${VAR}``, ``${VAR:-default}`` and ``${file:/path}`` references in flow values.

Flow files stay free of secrets: a password is written as ``${MQTT_PASSWORD}`` or
``${file:/run/secrets/mqtt}`` and resolved when the flow is loaded. ``$${`` writes a
literal ``${``. Lookup order for a name: the flow's ``env`` section, then the process
environment (as in Node-RED, where flow variables shadow the environment).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.errors import SecretError

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Lookup = Callable[[str], str | None]


def make_lookup(
    flow_env: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> Lookup:
    env = os.environ if environ is None else environ
    local = flow_env or {}

    def lookup(name: str) -> str | None:
        if name in local:
            return local[name]
        return env.get(name)

    return lookup


def has_reference(value: str) -> bool:
    return any(m.group(0) != "$${" for m in _REF.finditer(value))


def substitute(value: str, lookup: Lookup, base_dir: Path | None = None) -> str:
    """Resolve every reference in ``value``; raises :class:`SecretError` naming the missing one."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        expr = m.group(1)
        if expr is None:
            raise SecretError("unterminated reference: '${' without '}' (write $${ for a literal ${)")
        if expr.startswith("file:"):
            raw_path = expr[5:]
            path = Path(raw_path)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                return path.read_bytes().decode("utf-8").rstrip("\r\n")
            except OSError as exc:
                raise SecretError(f"cannot read ${{file:{raw_path}}}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise SecretError(f"cannot read ${{file:{raw_path}}}: not UTF-8 text") from None
        name, sep, default = expr.partition(":-")
        name = name.strip()
        if not _NAME.match(name):
            raise SecretError(
                f"invalid reference ${{{expr}}}: expected ${{NAME}}, ${{NAME:-default}} or ${{file:/path}}"
            )
        found = lookup(name)
        if found is None or (sep and found == ""):
            if sep:
                return default
            raise SecretError(
                f"environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            )
        return found

    return _REF.sub(repl, value)


def resolve(
    value: Any,
    lookup: Lookup,
    base_dir: Path | None = None,
    on_error: Callable[[tuple[Any, ...], SecretError], None] | None = None,
    path: tuple[Any, ...] = (),
) -> Any:
    """Recursively substitute references in strings inside dicts/lists.

    With ``on_error`` each failing string is reported with its path and left as it was,
    so one validation pass finds every unresolved reference.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value
        try:
            return substitute(value, lookup, base_dir)
        except SecretError as exc:
            if on_error is None:
                raise
            on_error(path, exc)
            return value
    if isinstance(value, dict):
        return {k: resolve(v, lookup, base_dir, on_error, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, lookup, base_dir, on_error, (*path, i)) for i, v in enumerate(value)]
    return value
