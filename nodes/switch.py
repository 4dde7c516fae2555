"""``switch``: route each message to named output ports by rules (Node-RED's switch node)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from engine.message import Message
from engine.model import ERROR_PORT
from engine.node import Node
from engine.paths import get_path
from engine.schema import ID_PATTERN
from engine.types import NodeConfig
from nodes._jsonata import Expression, JsonataExpr
from nodes.change import PropertyPath

_MISSING = object()
_PORT_RE = re.compile(ID_PATTERN)

JsonType = Literal["string", "number", "boolean", "array", "object", "null"]


def _check_port(port: str) -> str:
    if port == ERROR_PORT:
        raise ValueError(f"{ERROR_PORT!r} is the error port of every node; choose another name")
    if not _PORT_RE.match(port):
        raise ValueError(f"invalid port name {port!r}: use letters, digits, '_', '-', '.', ':'")
    return port


PortName = Annotated[str, AfterValidator(_check_port)]


class _Rule(BaseModel):
    kind: ClassVar[str]
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    port: PortName = Field(description="Output port a matching message goes to.")


class _PropertyRule(_Rule):
    property: PropertyPath = Field(
        default="payload", description="Property tested, e.g. `payload.temperature`, `topic`."
    )


class CompareRule(_PropertyRule):
    """Compare the property with `value`. `eq`/`neq` are type-strict (`1` is not `"1"` nor `true`); ordering needs two numbers or two strings, otherwise the rule does not match."""

    kind: ClassVar[str] = "compare"

    op: Literal["eq", "neq", "lt", "lte", "gt", "gte"] = Field(description="Comparison.")
    value: Any = Field(description="Value compared with.")


class BetweenRule(_PropertyRule):
    """`min <= property <= max` (both inclusive), for numbers or strings."""

    kind: ClassVar[str] = "between"

    op: Literal["between"] = Field(description="Range test.")
    min: float | str = Field(description="Lower bound (inclusive).")
    max: float | str = Field(description="Upper bound (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> BetweenRule:
        if isinstance(self.min, str) != isinstance(self.max, str):
            raise ValueError("min and max must both be numbers or both be strings")
        if self.min > self.max:  # type: ignore[operator]
            raise ValueError(f"min ({self.min!r}) is greater than max ({self.max!r})")
        return self


class ContainsRule(_PropertyRule):
    """A string property contains `value` as a substring, or a list property contains `value` as an element."""

    kind: ClassVar[str] = "contains"

    op: Literal["contains"] = Field(description="Containment test.")
    value: Any = Field(description="Substring or element looked for.")


class RegexRule(_PropertyRule):
    """A string property matches the regular expression `pattern` anywhere (Python `re.search`)."""

    kind: ClassVar[str] = "regex"

    op: Literal["regex"] = Field(description="Regular expression test.")
    pattern: str = Field(description="Python regular expression, e.g. `^sensors/(lora|wifi)/`.")
    ignore_case: bool = Field(default=False, description="Match letters regardless of case.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class UnaryRule(_PropertyRule):
    """`is_true`/`is_false`: the property is exactly the boolean. `is_null`: missing or null. `not_null`: present and not null."""

    kind: ClassVar[str] = "unary"

    op: Literal["is_true", "is_false", "is_null", "not_null"] = Field(description="Test without a value.")


class HasKeyRule(_PropertyRule):
    """The property is an object with the key `key`."""

    kind: ClassVar[str] = "has_key"

    op: Literal["has_key"] = Field(description="Key test.")
    key: str = Field(description="Key looked for, e.g. `battery`.")


class IsTypeRule(_PropertyRule):
    """The property has the JSON type `type` (`number` excludes booleans; a missing property has no type)."""

    kind: ClassVar[str] = "is_type"

    op: Literal["is_type"] = Field(description="Type test.")
    type: JsonType = Field(description="JSON type.")


class JsonataRule(_Rule):
    """A JSONata condition over the whole message; it matches when the result is true as by `$boolean()`."""

    kind: ClassVar[str] = "jsonata"

    op: Literal["jsonata"] = Field(description="JSONata condition.")
    expr: JsonataExpr = Field(description="Condition, e.g. `payload.co2 > 1000 and topic = 'room/b1'`.")


_RULE_TYPES: tuple[type[_Rule], ...] = (
    CompareRule,
    BetweenRule,
    ContainsRule,
    RegexRule,
    UnaryRule,
    HasKeyRule,
    IsTypeRule,
    JsonataRule,
)
#: Every ``op`` and the rule model (by tag) that handles it.
_OP_TAGS: dict[str, str] = {
    op: t.kind for t in _RULE_TYPES for op in get_args(t.model_fields["op"].annotation)
}


def _rule_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        op = value.get("op")
        return _OP_TAGS.get(op) if isinstance(op, str) else None
    return value.kind if isinstance(value, _RULE_TYPES) else None


SwitchRule = Annotated[
    Annotated[CompareRule, Tag("compare")]
    | Annotated[BetweenRule, Tag("between")]
    | Annotated[ContainsRule, Tag("contains")]
    | Annotated[RegexRule, Tag("regex")]
    | Annotated[UnaryRule, Tag("unary")]
    | Annotated[HasKeyRule, Tag("has_key")]
    | Annotated[IsTypeRule, Tag("is_type")]
    | Annotated[JsonataRule, Tag("jsonata")],
    Discriminator(
        _rule_tag,
        custom_error_type="switch_op",
        custom_error_message=f"a rule needs `op`, one of: {', '.join(_OP_TAGS)}",
    ),
]


class SwitchConfig(NodeConfig):
    """Rules tested in order; each names the port a matching message goes to.

    Example::

        mode: first
        rules:
          - {port: frost, property: payload.temperature, op: lt, value: 0}
          - {port: comfort, property: payload.temperature, op: between, min: 18, max: 24}
          - {port: lora, property: topic, op: regex, pattern: "^sensors/lora/"}
          - {port: stuffy, op: jsonata, expr: "payload.co2 > 1000"}
        otherwise: else
        wires: {frost: [alert], comfort: [store], lora: [store], stuffy: [alert], else: [log]}
    """

    rules: list[SwitchRule] = Field(min_length=1, description="Rules, tested top to bottom.")
    mode: Literal["first", "all"] = Field(
        default="first",
        description="`first`: only the first matching rule's port. `all`: every matching rule's port (once per port).",
    )
    otherwise: PortName | None = Field(
        default="else",
        description="Port for messages no rule matches; null drops them.",
    )

    @model_validator(mode="after")
    def _otherwise_is_separate(self) -> SwitchConfig:
        if self.otherwise is not None and any(r.port == self.otherwise for r in self.rules):
            raise ValueError(f"port {self.otherwise!r} is used by a rule and as `otherwise`; rename one")
        return self

    def ports(self) -> tuple[str, ...]:
        ports = dict.fromkeys(r.port for r in self.rules)
        if self.otherwise is not None:
            ports[self.otherwise] = None
        return tuple(ports)


# -- tests ---------------------------------------------------------------------------------

Test = Callable[[Message], bool]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same_kind(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _strict_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: bool(a < b),
    "lte": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "gte": lambda a, b: bool(a >= b),
}

_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _value_test(rule: _PropertyRule) -> Callable[[Any], bool]:
    """A predicate on the property's value (``_MISSING`` if absent)."""
    if isinstance(rule, CompareRule):
        want = rule.value
        if rule.op == "eq":
            return lambda v: v is not _MISSING and _strict_eq(v, want)
        if rule.op == "neq":
            return lambda v: v is not _MISSING and not _strict_eq(v, want)
        order = _ORDER[rule.op]
        return lambda v: _same_kind(v, want) and order(v, want)
    if isinstance(rule, BetweenRule):
        lo, hi = rule.min, rule.max
        return lambda v: _same_kind(v, lo) and bool(lo <= v <= hi)
    if isinstance(rule, ContainsRule):
        item = rule.value

        def contains(v: Any) -> bool:
            if isinstance(v, str):
                return isinstance(item, str) and item in v
            if isinstance(v, list):
                return any(_strict_eq(x, item) for x in v)
            return False

        return contains
    if isinstance(rule, RegexRule):
        rx = re.compile(rule.pattern, re.IGNORECASE if rule.ignore_case else 0)
        return lambda v: isinstance(v, str) and rx.search(v) is not None
    if isinstance(rule, UnaryRule):
        return {
            "is_true": lambda v: v is True,
            "is_false": lambda v: v is False,
            "is_null": lambda v: v is None or v is _MISSING,
            "not_null": lambda v: v is not None and v is not _MISSING,
        }[rule.op]
    if isinstance(rule, HasKeyRule):
        key = rule.key
        return lambda v: isinstance(v, dict) and key in v
    if isinstance(rule, IsTypeRule):
        check = _TYPE_CHECKS[rule.type]
        return lambda v: v is not _MISSING and check(v)
    raise TypeError(f"unsupported rule {rule!r}")


def _property_getter(path: str) -> Callable[[Message], Any]:
    if path in ("payload", "msg.payload"):
        return lambda m: m.payload
    if path in ("topic", "msg.topic"):
        return lambda m: m.topic
    if path.startswith("payload."):
        rest = path[len("payload.") :]
        return lambda m: get_path(m.payload, rest, _MISSING)
    return lambda m: get_path(m.to_dict(), path, _MISSING)


def compile_rule(rule: SwitchRule) -> Test:
    """A message predicate for ``rule``; regexes and JSONata are compiled here, once."""
    if isinstance(rule, JsonataRule):
        expr = Expression(rule.expr)
        return lambda m: expr.test(m.to_dict())
    get = _property_getter(rule.property)
    test = _value_test(rule)
    return lambda m: test(get(m))


class SwitchNode(Node):
    """Route messages to named ports by comparisons, regexes or JSONata conditions; unmatched go to `otherwise`.

    Ports are the rules' `port` names plus the `otherwise` port (default `else`); wires
    are checked against them at validation. In `all` mode every matching port receives
    its own copy of the message. A failing JSONata condition sends the message to error
    handling and to no port.
    """

    type_name = "switch"
    category = "function"
    Config = SwitchConfig
    outputs = ("else",)
    color = "#e2d96e"
    icon = "switch"
    config: SwitchConfig

    @classmethod
    def output_ports(cls, config: BaseModel | None) -> tuple[str, ...]:
        if isinstance(config, SwitchConfig):
            return config.ports()
        return cls.outputs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rules = [(r.port, compile_rule(r)) for r in self.config.rules]

    def _matching_ports(self, msg: Message) -> list[str]:
        first = self.config.mode == "first"
        ports: list[str] = []
        for port, test in self._rules:
            if port in ports:
                continue
            if test(msg):
                if first:
                    return [port]
                ports.append(port)
        return ports

    async def on_message(self, msg: Message) -> None:
        ports = self._matching_ports(msg)
        if not ports:
            if self.config.otherwise is not None:
                await self.emit(msg, self.config.otherwise)
            return
        ports = [p for p in ports if self.ctx.has_wires(p)]
        if not ports:
            return
        # Copy before emitting anything: the first receiver may change the original at once.
        copies = [msg.copy() for _ in ports[1:]]
        await self.emit(msg, ports[0])
        for port, cp in zip(ports[1:], copies, strict=True):
            await self.send(cp, port)
