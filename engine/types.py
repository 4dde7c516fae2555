"""Reusable config field types for node and connection specs.

These are pydantic ``Annotated`` types, so the same declaration validates a flow
file, renders as the right widget in the editor (through its JSON Schema) and is
described in the generated docs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

CONNECTION_MARKER = "x-klimaflow-connection"


def parse_duration(value: Any) -> float:
    """Seconds from ``5``, ``2.5``, ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '500ms', '5s', '1m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(
        f"invalid duration {value!r}: use seconds (e.g. 5) or a string like '500ms', '5s', '1m', '1h'"
    )


def _format_duration(seconds: float) -> str | float:
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(_format_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION_RE.pattern},
            ],
            "x-klimaflow-widget": "duration",
        }
    ),
]
"""Seconds as float; accepts ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"1d"`` or a number."""


def connection_field(connection_type: str, description: str, **kwargs: Any) -> Any:
    """A config field naming a connection of ``connection_type`` (checked by the validator)."""
    return Field(
        description=description,
        json_schema_extra={CONNECTION_MARKER: connection_type},
        **kwargs,
    )


def _literal_ints(annotation: Any) -> set[int]:
    """Integer members of any ``Literal[...]`` inside an annotation (unions, Annotated...)."""
    found: set[int] = set()
    if get_origin(annotation) is Literal:
        found.update(a for a in get_args(annotation) if isinstance(a, int) and not isinstance(a, bool))
    else:
        for arg in get_args(annotation):
            found |= _literal_ints(arg)
    return found


class _EnvFriendly(BaseModel):
    """Accepts ``"1"`` for ``Literal[0, 1, 2]``: ``${VAR}`` references always resolve to text.

    pydantic's lax mode already turns ``"5"`` into ``5`` for int fields and ``"true"`` into
    True for bools, but not for literal choices such as an MQTT QoS.
    """

    @model_validator(mode="before")
    @classmethod
    def _env_literals(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = None
        for name, info in cls.model_fields.items():
            key = info.alias or name
            value = data.get(key)
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                ints = _literal_ints(info.annotation)
                if int(value) in ints:
                    out = out if out is not None else dict(data)
                    out[key] = int(value)
        return out if out is not None else data


class NodeConfig(_EnvFriendly):
    """Base of every node type's config model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConnectionConfig(_EnvFriendly):
    """Base of every connection type's config model."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
