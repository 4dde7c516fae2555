"""``json``: convert a message property between JSON text and objects."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import jsonschema
from pydantic import Field, field_validator

from engine.errors import DecodeError, MessageError
from engine.message import Message
from engine.node import Node
from engine.paths import get_msg, set_msg
from engine.types import NodeConfig


class JsonConfig(NodeConfig):
    """Which property to convert and in which direction.

    With ``action: auto`` text (``str`` or ``bytes``) is parsed and anything else is
    serialized, like Node-RED's JSON node. ``parse`` passes a value that is already an
    object through unchanged, ``serialize`` passes text through unchanged.
    """

    action: Literal["auto", "parse", "serialize"] = Field(
        default="auto",
        description="`parse` text to an object, `serialize` an object to text, or `auto`: parse text, serialize anything else.",
    )
    property: str = Field(
        default="payload",
        description="Dotted path of the property to convert in place (`payload`, `payload.raw`).",
    )
    pretty: bool = Field(default=False, description="Serialize with line breaks and indentation.")
    indent: int = Field(default=2, ge=0, le=8, description="Spaces per level when `pretty` is on.")
    schema_: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="JSON Schema the object (parsed, or about to be serialized) must match; a mismatch is a `MessageError`.",
    )

    @field_validator("schema_")
    @classmethod
    def _check_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"invalid JSON Schema: {exc.message}") from None
        return value


def _json_default(value: Any) -> Any:
    """Timestamps are common in climate data; everything else unknown is an error."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def parse_json(value: str | bytes | bytearray) -> Any:
    """Parse JSON text; every failure is a :class:`DecodeError` saying where."""
    if isinstance(value, bytes | bytearray):
        try:
            text = bytes(value).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"JSON is not valid UTF-8 at byte {exc.start}: {exc.reason}") from None
    else:
        text = value.removeprefix("\ufeff")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from None


def serialize_json(value: Any, indent: int | None = None) -> str:
    """Serialize to JSON text; values JSON cannot represent are a :class:`MessageError`."""
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"cannot serialize to JSON: {exc}") from None


class JsonNode(Node):
    """Parse JSON text into an object, or serialize an object into JSON text."""

    type_name = "json"
    category = "parser"
    Config = JsonConfig
    outputs = ("out",)
    color = "#debd5c"
    icon = "parser-json"
    config: JsonConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = self.config.schema_
        self._validator: jsonschema.protocols.Validator | None = (
            jsonschema.validators.validator_for(schema)(schema) if schema is not None else None
        )

    def _validate(self, value: Any) -> None:
        if self._validator is None:
            return
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise MessageError(
                f"{self.config.property} does not match the schema at {where}: {error.message}"
            )

    async def on_message(self, msg: Message) -> None:
        c = self.config
        value = get_msg(msg, c.property)
        is_text = isinstance(value, str | bytes | bytearray)
        if c.action == "parse" or (c.action == "auto" and is_text):
            if is_text:
                value = parse_json(value)
            self._validate(value)
        elif not isinstance(value, str):
            self._validate(value)
            value = serialize_json(value, c.indent if c.pretty else None)
        set_msg(msg, c.property, value)
        await self.emit(msg)
