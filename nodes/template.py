"""``template``: render a Jinja2 template with the message into a property.

Templates come from flow files that many people edit, so they run in Jinja2's
immutable sandbox: they can read the message but not call unsafe attributes or
mutate the objects they are given.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import Field, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from engine.errors import ExpressionError
from engine.message import Message
from engine.node import Node
from engine.paths import set_msg
from engine.types import NodeConfig

_TEMPLATE_FILE = "<template>"


def de_number(value: Any, decimals: int | None = None, grouping: bool = True) -> str:
    """A number as Germans write it: ``1234.5`` → ``"1.234,5"``.

    Rounds half up (kaufmännisch, as readers expect: 0.125 → "0,13"), not half to even.
    ``None`` renders as an empty string so a missing reading leaves a blank.
    """
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal | str):
        raise TypeError(f"de_number needs a number, got {type(value).__name__}")
    if decimals is not None and decimals < 0:
        raise ValueError("de_number: decimals must be 0 or more")
    try:
        number = decimal.Decimal(repr(value) if isinstance(value, float) else value)
    except decimal.InvalidOperation:
        raise ValueError(f"de_number needs a number, got {value!r}") from None
    if not number.is_finite():
        return str(number)
    with decimal.localcontext(prec=200):
        if decimals is not None:
            number = number.quantize(decimal.Decimal(1).scaleb(-decimals), rounding=decimal.ROUND_HALF_UP)
        if number.is_zero():
            number = abs(number)  # no "-0,0"
        text = format(number, ",f" if grouping else "f")
    return text.translate(str.maketrans(",.", ".,"))


def localtime(value: Any, tz: str = "Europe/Berlin", fmt: str = "%d.%m.%Y %H:%M", unit: str = "auto") -> str:
    """A timestamp in local time: epoch seconds or ms, ISO text or a datetime.

    ``unit="auto"`` treats numbers of magnitude 1e11 or more as milliseconds (1e11 s is
    the year 5138). Naive datetimes and ISO texts without an offset are UTC; a plain
    date (``2024-08-15``) is a calendar day and is not shifted.
    """
    if value is None:
        return ""
    zone = ZoneInfo(tz)
    moment: dt.datetime | dt.date
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            if len(text) == 10:
                return dt.date.fromisoformat(text).strftime(fmt)
            moment = dt.datetime.fromisoformat(text)
            value = moment
    if isinstance(value, bool):
        raise TypeError("localtime needs a timestamp, got bool")
    if isinstance(value, int | float):
        if unit not in ("auto", "s", "ms"):
            raise ValueError(f"localtime: unit must be 'auto', 's' or 'ms', not {unit!r}")
        ms = unit == "ms" or (unit == "auto" and abs(value) >= 1e11)
        return dt.datetime.fromtimestamp(value / 1000 if ms else value, tz=zone).strftime(fmt)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(zone).strftime(fmt)
    if isinstance(value, dt.date):
        return value.strftime(fmt)
    raise TypeError(f"localtime needs a timestamp, got {type(value).__name__}")


def make_environment(
    *, autoescape: bool = False, strict: bool = True, trim_blocks: bool = True
) -> ImmutableSandboxedEnvironment:
    """The sandboxed Jinja2 environment with klimaflow's filters."""
    env = ImmutableSandboxedEnvironment(
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
        trim_blocks=trim_blocks,
        lstrip_blocks=trim_blocks,
    )
    env.filters["de_number"] = de_number
    env.filters["localtime"] = localtime
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
    return env


class TemplateConfig(NodeConfig):
    """The template and what to do with its output.

    Variables: ``payload``, ``topic``, every ``meta`` key, and ``msg`` (all of them,
    Node-RED style: ``{{ msg.payload.temp }}``). Extra filters: ``de_number(decimals)``
    (``1.234,5``) and ``localtime(tz="Europe/Berlin", fmt="%d.%m.%Y %H:%M")``. Use
    ``tojson`` to put values into JSON output. HTML escaping is off by default because
    most output is text, JSON or YAML; switch ``autoescape`` on for HTML.
    """

    template: str = Field(
        description="Jinja2 template text, e.g. `Temperatur: {{ payload.temp | de_number(1) }} °C`."
    )
    property: str = Field(
        default="payload", description="Dotted path of the property that receives the output."
    )
    format: Literal["text", "json", "yaml"] = Field(
        default="text",
        description="Keep the output as `text`, or parse it as `json` or `yaml` into an object.",
    )
    autoescape: bool = Field(default=False, description="HTML-escape inserted values (for HTML output).")
    strict: bool = Field(
        default=True,
        description="A variable or key the message does not have is an error; off, it renders as an empty string.",
    )
    trim_blocks: bool = Field(
        default=True, description="Remove the newline and indentation around `{% ... %}` block tags."
    )

    @field_validator("template")
    @classmethod
    def _compile(cls, value: str) -> str:
        try:
            make_environment().from_string(value)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
        return value


def _template_line(tb: TracebackType | None) -> int | None:
    """Line in the template where rendering failed (Jinja2 rewrites tracebacks to point there)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class TemplateNode(Node):
    """Render a Jinja2 template with the message (text, or parsed as JSON/YAML)."""

    type_name = "template"
    category = "function"
    Config = TemplateConfig
    outputs = ("out",)
    color = "#e7e7ae"
    icon = "template"
    config: TemplateConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        env = make_environment(autoescape=c.autoescape, strict=c.strict, trim_blocks=c.trim_blocks)
        self._template = env.from_string(c.template)
        self._yaml = YAML(typ="safe", pure=True)

    def render(self, msg: Message) -> str:
        view = msg.to_dict()
        try:
            return self._template.render({**view, "msg": view})
        except Exception as exc:
            line = _template_line(exc.__traceback__)
            where = f" at line {line}" if line is not None else ""
            detail = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
            raise ExpressionError(f"template render failed{where}: {detail}") from exc

    def _parse(self, text: str) -> Any:
        fmt = self.config.format
        if fmt == "json":
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ExpressionError(
                    f"template output is not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
                ) from None
        if fmt == "yaml":
            try:
                return self._yaml.load(text)
            except YAMLError as exc:
                raise ExpressionError(f"template output is not valid YAML: {exc}") from None
        return text

    async def on_message(self, msg: Message) -> None:
        set_msg(msg, self.config.property, self._parse(self.render(msg)))
        await self.emit(msg)
