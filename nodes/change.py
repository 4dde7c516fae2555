"""``change``: set, delete and move message properties by an ordered list of rules (Node-RED's change node)."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from engine.errors import MessageError
from engine.message import Message
from engine.node import Node
from engine.paths import delete_path, get_path, set_path, split_path
from engine.types import NodeConfig
from nodes._jsonata import UNDEFINED, Expression, JsonataExpr

_READ_ONLY: Final = frozenset({"_msgid", "entered_at"})
_MISSING: Final = object()


def _check_path(path: str) -> str:
    parts = split_path(path)
    if not parts:
        raise ValueError("name a message property such as 'payload' or 'payload.temperature'")
    if any(not p for p in parts):
        raise ValueError(f"{path!r} has an empty part")
    return path


def _check_writable(path: str) -> str:
    _check_path(path)
    if split_path(path)[0] in _READ_ONLY:
        raise ValueError(f"{split_path(path)[0]!r} is read-only")
    return path


PropertyPath = Annotated[str, AfterValidator(_check_path)]
"""A dotted message property (``payload.temperature``, ``topic``, a meta key); ``msg.`` is optional."""

WritablePath = Annotated[str, AfterValidator(_check_writable)]
"""A property a node may write: anything except the message id and entry time."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SetRule(_Rule):
    """Set a property to exactly one of: a literal (`to`), a JSONata result (`expr`), another property (`from`).

    If `expr` yields no value (undefined) or `from` names a missing property, the target
    property is deleted, as assigning `undefined` does in Node-RED.
    """

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["to"]}, {"required": ["expr"]}, {"required": ["from"]}]}
    )

    set: WritablePath = Field(description="Property to set, e.g. `payload.unit`.")
    to: Any = Field(default=None, description='Literal value (any JSON, e.g. `"°C"`, `0`, `{"a": 1}`).')
    expr: JsonataExpr | None = Field(
        default=None,
        description="JSONata expression over the message, e.g. `payload.celsius * 1.8 + 32`.",
    )
    from_: PropertyPath | None = Field(
        default=None, alias="from", description="Property whose value is copied, e.g. `payload.raw.temp`."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SetRule:
        given = [
            name
            for name, present in (
                ("to", "to" in self.model_fields_set),
                ("expr", self.expr is not None),
                ("from", self.from_ is not None),
            )
            if present
        ]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"set needs exactly one of to, expr, from (found: {found})")
        return self


class DeleteRule(_Rule):
    """Delete a property; deleting a missing property is not an error."""

    delete: WritablePath = Field(description="Property to delete, e.g. `payload.raw`.")


class MoveRule(_Rule):
    """Move a property to another path (copy, then delete the original); a missing source deletes the target."""

    move: WritablePath = Field(description="Property to move, e.g. `payload.temp`.")
    to: WritablePath = Field(description="Where it goes, e.g. `payload.temperature`.")


def _rule_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kinds = [k for k in ("set", "delete", "move") if k in value]
        return kinds[0] if len(kinds) == 1 else None
    if isinstance(value, SetRule):
        return "set"
    if isinstance(value, DeleteRule):
        return "delete"
    if isinstance(value, MoveRule):
        return "move"
    return None


Rule = Annotated[
    Annotated[SetRule, Tag("set")] | Annotated[DeleteRule, Tag("delete")] | Annotated[MoveRule, Tag("move")],
    Discriminator(
        _rule_kind,
        custom_error_type="rule_kind",
        custom_error_message="a rule is a mapping with exactly one of the keys set, delete, move",
    ),
]


class ChangeConfig(NodeConfig):
    """Rules applied in order to the same message; a later rule sees what earlier rules did.

    Example::

        rules:
          - {set: payload.fahrenheit, expr: "payload.celsius * 1.8 + 32"}
          - {set: payload.unit, to: "°F"}
          - {move: payload.hum, to: payload.humidity}
          - {set: station, from: payload.device_id}
          - {delete: payload.raw}
    """

    rules: list[Rule] = Field(min_length=1, description="Rules, applied top to bottom.")


class _Compiled:
    """A rule with its expression compiled, ready to apply to a message's dict view."""

    __slots__ = ("expr", "rule")

    def __init__(self, rule: SetRule | DeleteRule | MoveRule) -> None:
        self.rule = rule
        self.expr = Expression(rule.expr) if isinstance(rule, SetRule) and rule.expr is not None else None

    def describe(self, index: int) -> str:
        r = self.rule
        if isinstance(r, SetRule):
            return f"rule {index} (set {r.set})"
        if isinstance(r, DeleteRule):
            return f"rule {index} (delete {r.delete})"
        return f"rule {index} (move {r.move} to {r.to})"

    def apply(self, view: dict[str, Any]) -> None:
        r = self.rule
        if isinstance(r, DeleteRule):
            delete_path(view, r.delete)
            return
        if isinstance(r, MoveRule):
            value = get_path(view, r.move, _MISSING)
            delete_path(view, r.move)
            _assign(view, r.to, value)
            return
        if self.expr is not None:
            result = self.expr.evaluate(view)
            _assign(view, r.set, _MISSING if result is UNDEFINED else result)
        elif r.from_ is not None:
            value = get_path(view, r.from_, _MISSING)
            _assign(view, r.set, value if value is _MISSING else copy.deepcopy(value))
        else:
            _assign(view, r.set, copy.deepcopy(r.to))


def _assign(view: dict[str, Any], path: str, value: Any) -> None:
    if value is _MISSING:
        delete_path(view, path)
    else:
        set_path(view, path, value)


class ChangeNode(Node):
    """Set, delete or move message properties by rules, in order (literal, JSONata or copied values).

    A failing rule (JSONata error, a path that cannot be created such as an index past the
    end of a list) raises ``ExpressionError`` / ``MessageError``; the message then goes to
    error handling with the changes of the rules before it applied.
    """

    type_name = "change"
    category = "function"
    Config = ChangeConfig
    outputs = ("out",)
    color = "#e2d96e"
    icon = "swap"
    config: ChangeConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rules = [_Compiled(r) for r in self.config.rules]

    async def on_message(self, msg: Message) -> None:
        view = msg.to_dict()
        try:
            for index, rule in enumerate(self._rules, start=1):
                try:
                    rule.apply(view)
                except (KeyError, ValueError, TypeError) as exc:
                    reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                    raise MessageError(f"{rule.describe(index)}: {reason}") from exc
        finally:
            msg.update_from_dict(view)
        await self.emit(msg)
