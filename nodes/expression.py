"""``expression``: compute a new payload (or another property) with JSONata."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from engine.errors import MessageError
from engine.message import Message
from engine.node import Node
from engine.paths import set_msg
from engine.types import NodeConfig
from nodes._jsonata import UNDEFINED, Expression, JsonataExpr
from nodes.change import WritablePath


class ExpressionConfig(NodeConfig):
    """The expression, where its result goes, and what happens when it has no result.

    Example: ``{expr: "payload.celsius * 1.8 + 32", target: payload.fahrenheit}``, or as a
    filter, ``{expr: "payload.battery < 3.3 ? payload", on_undefined: drop}``.
    """

    expr: JsonataExpr = Field(
        description="JSONata expression over the message (`payload`, `topic`, meta keys), e.g. `payload.celsius * 1.8 + 32`."
    )
    target: WritablePath = Field(
        default="payload", description="Property the result is written to, e.g. `payload.fahrenheit`."
    )
    on_undefined: Literal["drop", "null", "error"] = Field(
        default="drop",
        description=(
            "When the result is undefined (e.g. a missing property, a `?` without `:`): "
            "`drop` the message, set the target to `null`, or raise an `ExpressionError`. "
            "A JSON `null` result is a value and is always written."
        ),
    )


class ExpressionNode(Node):
    """Set the payload (or another property) to the result of a JSONata expression.

    Errors while evaluating raise ``ExpressionError``. Messages dropped because the result
    was undefined are counted in the node's ``dropped`` counter.
    """

    type_name = "expression"
    category = "function"
    Config = ExpressionConfig
    outputs = ("out",)
    color = "#e2d96e"
    icon = "function"
    config: ExpressionConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expr = Expression(self.config.expr)

    async def on_message(self, msg: Message) -> None:
        c = self.config
        result = self._expr.evaluate(msg.to_dict())
        if result is UNDEFINED:
            if c.on_undefined == "drop":
                self.ctx.counters.dropped += 1
                return
            if c.on_undefined == "error":
                raise self._expr.error("the result is undefined")
            result = None
        try:
            set_msg(msg, c.target, result)
        except (KeyError, ValueError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise MessageError(f"cannot write the result to {c.target!r}: {reason}") from exc
        await self.emit(msg)
