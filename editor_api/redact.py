"""Keep secrets out of API responses and streams.

Flow documents are served as written (``${ENV}`` references, never resolved values), but
other texts can carry a resolved secret by accident: a node status or an error message
quoting a URL with ``user:password@``, a log-like reload message. Everything the API
sends passes through :class:`Redactor`, which masks the secret values of the running
configs (every pydantic ``SecretStr``) and the password part of URLs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from engine.validation import ValidatedDeployment

MASK = "***"
#: ``scheme://user:password@host`` -> ``scheme://user:***@host``
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"']*:)[^/\s@\"']+(?=@)")
#: Shorter secrets would mask ordinary words; a real secret is longer than this.
MIN_SECRET_LENGTH = 4


def secret_values(validated: ValidatedDeployment | None) -> set[str]:
    """Every resolved secret of a deployment's node and connection configs."""
    if validated is None:
        return set()
    found: set[str] = set()
    for cfg in (*validated.node_configs.values(), *validated.connection_configs.values()):
        _collect(cfg, found, 0)
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH}


def _collect(value: Any, out: set[str], depth: int) -> None:
    if depth > 16:
        return
    if isinstance(value, SecretStr):
        out.add(value.get_secret_value())
    elif isinstance(value, SecretBytes):
        out.add(value.get_secret_value().decode("utf-8", "replace"))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name, None), out, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _collect(v, out, depth + 1)


class Redactor:
    """Masks known secret values and URL passwords in text and in JSON-like data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for s in secrets:
            if len(s) >= MIN_SECRET_LENGTH:
                values.add(s)
                # As it appears inside JSON text (quotes, backslashes, non-ASCII escaped or not).
                values.add(json.dumps(s)[1:-1])
                values.add(json.dumps(s, ensure_ascii=False)[1:-1])
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted(values, key=len, reverse=True)

    def text(self, value: str) -> str:
        for s in self._secrets:
            if s in value:
                value = value.replace(s, MASK)
        return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, value)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every string (keys too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    def dumps(self, value: Any) -> str:
        """JSON text of ``value`` with secrets masked (also inside non-string values' text)."""
        return self.text(json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")))
