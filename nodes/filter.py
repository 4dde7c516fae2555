"""``filter``: report by exception (Node-RED's ``rbe``), with deadband and narrowband modes.

Sensors repeat themselves; storing every unchanged reading wastes the database and
hides the changes that matter. State is kept per key (by default the topic), so each
sensor is compared with its own last value.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Literal

from pydantic import Field, model_validator

from engine.errors import MessageError
from engine.message import Message
from engine.node import Node
from engine.paths import get_msg
from engine.types import NodeConfig

_MISSING = object()


def state_key(value: Any) -> Any:
    """A hashable stand-in for a key property's value (dicts and lists become JSON text)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def to_number(value: Any, what: str) -> float:
    """A finite float from a number or numeric string; anything else is a :class:`MessageError`."""
    if isinstance(value, bool):
        raise MessageError(f"{what} is a boolean, not a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise MessageError(f"{what} is not a number: {value!r:.60}") from None
    else:
        raise MessageError(f"{what} is not a number: {type(value).__name__} {value!r:.60}")
    if not math.isfinite(number):
        raise MessageError(f"{what} is not a finite number: {value!r:.60}")
    return number


class FilterConfig(NodeConfig):
    """Which value to watch, how much change counts, and per what key state is kept."""

    property: str = Field(
        default="payload",
        description="Dotted path of the value to compare (`payload`, `payload.temperature`).",
    )
    mode: Literal["changed", "deadband", "narrowband"] = Field(
        default="changed",
        description=(
            "`changed`: pass only when the value differs from the last one. "
            "`deadband`: pass when it moved by at least `band` (numbers only). "
            "`narrowband`: pass only when it moved by less than `band`, blocking outliers (numbers only)."
        ),
    )
    band: float = Field(default=0.0, ge=0, description="Width of the band for `deadband` / `narrowband`.")
    band_unit: Literal["absolute", "percent"] = Field(
        default="absolute",
        description=(
            "`absolute`: `band` is in the value's unit; `percent`: `band` is a percentage of the last value "
            "(so around a last value of 0 the band is 0 wide)."
        ),
    )
    compare: Literal["sent", "input"] = Field(
        default="sent",
        description=(
            "Compare with the last value *sent* on (slow drifts eventually pass) "
            "or with the last value *received* (only steps between consecutive readings pass)."
        ),
    )
    key: str | None = Field(
        default="topic",
        description="Property whose value selects the state (e.g. `topic`, `payload.device_id`); empty means one state for all messages.",
    )
    ignore_initial: bool = Field(
        default=False,
        description="Block the first value of each key (it only sets the reference).",
    )
    start_value: float | None = Field(
        default=None,
        description="`narrowband` only: reference for the first value of each key (default: the first value itself).",
    )

    @model_validator(mode="after")
    def _check_band(self) -> FilterConfig:
        if self.mode != "changed" and self.band <= 0:
            raise ValueError(f"mode {self.mode} needs a band greater than 0")
        if self.start_value is not None and self.mode != "narrowband":
            raise ValueError("start_value applies only to mode narrowband")
        return self


class FilterNode(Node):
    """Pass a message only when its value changed (by more than a deadband), per key.

    A message with a truthy ``reset`` property clears the stored value of its key (all
    keys if no key is configured or present) and is not passed on.
    """

    type_name = "filter"
    category = "function"
    Config = FilterConfig
    outputs = ("out",)
    color = "#e2d96e"
    icon = "filter"
    config: FilterConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last: dict[Any, Any] = {}

    def _key(self, msg: Message) -> Any:
        c = self.config
        return state_key(get_msg(msg, c.key)) if c.key else None

    async def on_message(self, msg: Message) -> None:
        c = self.config
        if msg.meta.get("reset"):
            key_value = get_msg(msg, c.key, _MISSING) if c.key else _MISSING
            if key_value is _MISSING or key_value is None:
                self.last.clear()
            else:
                self.last.pop(state_key(key_value), None)
            return
        value = get_msg(msg, c.property, _MISSING)
        if value is _MISSING:
            raise MessageError(f"message has no property {c.property!r}")
        key = self._key(msg)
        number = None if c.mode == "changed" else to_number(value, c.property)
        if c.ignore_initial and key not in self.last:
            self.last[key] = copy.deepcopy(value) if number is None else number
            return
        if number is None:
            passes, current = self._changed(key, value)
        else:
            passes, current = self._band(key, number)
        if passes or c.compare == "input":
            self.last[key] = current
        if passes:
            await self.emit(msg)

    def _changed(self, key: Any, value: Any) -> tuple[bool, Any]:
        current = copy.deepcopy(value)
        if key not in self.last:
            return True, current
        return self.last[key] != value, current

    def _band(self, key: Any, value: float) -> tuple[bool, float]:
        c = self.config
        previous: float | None = self.last.get(key)
        if previous is None:
            if c.mode == "deadband" or c.start_value is None:
                return True, value
            previous = c.start_value
        band = abs(previous * c.band / 100.0) if c.band_unit == "percent" else c.band
        delta = abs(value - previous)
        if c.mode == "deadband":
            # A percent band around 0 is 0 wide: any change passes, a repeat still does not.
            return delta > 0 and delta >= band, value
        return delta < band, value
