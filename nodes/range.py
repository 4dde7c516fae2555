"""``range``: map a number linearly from one range to another (Node-RED's ``range``).

Raw sensor readings arrive as ADC counts or 4-20 mA; the platform stores physical
units. Numeric strings are accepted because many devices send ``"24.1"``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.message import Message
from engine.node import Node
from engine.paths import get_msg, set_msg
from engine.types import NodeConfig
from nodes.filter import to_number


class RangeConfig(NodeConfig):
    """The input range, the output range, and what to do with values outside the input range."""

    property: str = Field(
        default="payload",
        description="Dotted path of the number to scale; the result replaces it (`payload`, `payload.raw`).",
    )
    in_min: float = Field(description="Input value that maps to `out_min`.")
    in_max: float = Field(description="Input value that maps to `out_max`.")
    out_min: float = Field(description="Output for an input of `in_min`.")
    out_max: float = Field(description="Output for an input of `in_max`.")
    action: Literal["scale", "clamp", "wrap"] = Field(
        default="scale",
        description=(
            "`scale`: extrapolate values outside the input range; "
            "`clamp`: limit the input to the input range first; "
            "`wrap`: wrap the input into the input range first (e.g. angles)."
        ),
    )
    decimals: int | None = Field(
        default=None,
        ge=0,
        le=15,
        description="Round the result to this many decimal places; 0 gives an integer. Empty: no rounding.",
    )

    @model_validator(mode="after")
    def _check_range(self) -> RangeConfig:
        if self.in_min == self.in_max:
            raise ValueError("in_min and in_max must differ")
        return self


def scale(value: float, c: RangeConfig) -> float | int:
    """Apply ``c``'s action, the linear map and the rounding to ``value``."""
    lo, hi = min(c.in_min, c.in_max), max(c.in_min, c.in_max)
    if c.action == "clamp":
        value = min(max(value, lo), hi)
    elif c.action == "wrap":
        value = (value - lo) % (hi - lo) + lo
    result = (value - c.in_min) / (c.in_max - c.in_min) * (c.out_max - c.out_min) + c.out_min
    if c.decimals is None:
        return result
    if c.decimals == 0:
        return round(result)
    return round(result, c.decimals)


class RangeNode(Node):
    """Scale a number linearly from an input range to an output range (clamp or wrap optional)."""

    type_name = "range"
    category = "function"
    Config = RangeConfig
    outputs = ("out",)
    color = "#e2d96e"
    icon = "range"
    config: RangeConfig

    async def on_message(self, msg: Message) -> None:
        c = self.config
        number = to_number(get_msg(msg, c.property), c.property)
        set_msg(msg, c.property, scale(number, c))
        await self.emit(msg)
