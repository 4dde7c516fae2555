"""JSONata for node configs: checked when a flow is validated, compiled once per node, bounded at run time.

Expressions see a message's dict view (:meth:`engine.message.Message.to_dict`), so they
read like Node-RED's: ``payload.temperature * 1.8 + 32``, ``topic``, or any meta key.

Evaluation runs on the event loop, so every evaluation is boxed by jsonata-python's
:class:`jsonata.Timebox` (time and recursion depth): a runaway expression fails with an
:class:`~engine.errors.ExpressionError` instead of stalling the whole engine. The box is
created per evaluation because a box made at compile time (``Jsonata(expr, timeout=...)``)
starts its clock when the expression is compiled, not when it runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import jsonata
from pydantic import AfterValidator, WithJsonSchema

from engine.errors import ExpressionError

#: Longest an evaluation may take; it blocks the event loop while it runs.
TIMEOUT_MS: Final = 500
#: Deepest evaluation nesting; well below the point where Python itself overflows.
MAX_DEPTH: Final = 500

_SHOWN_CHARS = 120


class _Undefined:
    """JSONata's *undefined* (no value), as opposed to JSON ``null`` (None)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()
"""Returned by :meth:`Expression.evaluate` when the result is undefined (e.g. a missing path)."""


def _shown(source: str) -> str:
    s = " ".join(source.split())
    return s if len(s) <= _SHOWN_CHARS else s[: _SHOWN_CHARS - 1] + "…"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, jsonata.JException):
        # Positions are reliable for syntax errors (S0xxx) only.
        where = f" (at character {exc.location})" if str(exc.error).startswith("S") else ""
        return f"{exc}{where} [{exc.error}]"
    if isinstance(exc, RecursionError):
        return "expression nests too deeply"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _compile(source: str) -> jsonata.Jsonata:
    expr = jsonata.Jsonata(source)
    # Messages may carry non-JSON values (bytes payloads, tuples in meta); an expression
    # that never touches them should still work, so the input is not validated up front.
    expr.set_validate_input(False)
    # Keep JSON null distinguishable from undefined: null comes back as Utils.NULL_VALUE.
    expr.set_output_convert_nulls(False)
    return expr


def check_expression(source: str) -> str:
    """Pydantic validator: a syntax error becomes a config error at ``klimaflow validate``."""
    if not source.strip():
        raise ValueError("empty JSONata expression")
    try:
        _compile(source)
    except Exception as exc:
        raise ValueError(f"invalid JSONata expression: {_reason(exc)}") from None
    return source


JsonataExpr = Annotated[
    str,
    AfterValidator(check_expression),
    WithJsonSchema({"type": "string", "minLength": 1, "x-klimaflow-widget": "jsonata"}),
]
"""A config field holding a JSONata expression, checked for syntax during validation."""


def _plain(value: Any, source: str) -> Any:
    """Plain Python data: jsonata's sequence subclasses become lists, its null becomes None."""
    if value is jsonata.Utils.NULL_VALUE:
        return None
    if isinstance(value, dict):
        return {k: _plain(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, source) for v in value]
    if isinstance(value, jsonata.Jsonata.JFunctionCallable | jsonata.Parser.Symbol):
        raise ExpressionError(f"JSONata {_shown(source)!r}: the result is a function, not a value")
    return value


class Expression:
    """A compiled JSONata expression; one per node, evaluated one message at a time."""

    def __init__(self, source: str, *, timeout_ms: int = TIMEOUT_MS, max_depth: int = MAX_DEPTH) -> None:
        self.source = source
        self.timeout_ms = timeout_ms
        self.max_depth = max_depth
        try:
            self._expr = _compile(source)
        except Exception as exc:  # configs are validated first; this is for direct use
            raise ExpressionError(f"JSONata {_shown(source)!r}: {_reason(exc)}") from exc

    def evaluate(self, data: Any, undefined: Any = UNDEFINED) -> Any:
        """Result as plain data; ``undefined`` (default :data:`UNDEFINED`) if there is none.

        Raises :class:`ExpressionError` naming the expression and the reason.
        """
        frame = jsonata.Jsonata.Frame(None)
        jsonata.Timebox(frame, self.timeout_ms, self.max_depth)
        try:
            result = self._expr.evaluate(data, frame)
        except Exception as exc:
            raise self.error(_reason(exc)) from exc
        if result is None:
            return undefined
        return _plain(result, self.source)

    def error(self, reason: str) -> ExpressionError:
        """An error naming this expression (shortened) and ``reason``."""
        return ExpressionError(f"JSONata {_shown(self.source)!r}: {reason}")

    def test(self, data: Any) -> bool:
        """The result cast to a boolean the way JSONata's ``$boolean()`` does (undefined is false)."""
        result = self.evaluate(data)
        if result is UNDEFINED:
            return False
        return bool(jsonata.Jsonata.boolize(result))

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"
