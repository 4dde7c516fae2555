"""Grafana's InfluxQL macro and template-variable expansion, to run panel queries without Grafana.

Mirrors what Grafana's InfluxDB datasource (InfluxQL mode) sends for a raw query:
``$timeFilter`` becomes ``time >= <from>ms and time <= <to>ms``, ``$__interval`` the
interval Grafana picked, and a variable inside a regex (``=~ /^$device$/``) its value
regex-escaped, several values as ``(a|b)``, "All" as the variable's ``allValue``
(``.*``, inserted unescaped). Used by the tests that prove the panels against a real
InfluxDB, and by anyone checking a generated query by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_GRAFANA_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def escape_regex(value: str) -> str:
    """Grafana's ``escapeRegex`` (the characters it escapes, and only those)."""
    return _GRAFANA_REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), value)


def format_regex_values(values: Sequence[str] | None, all_value: str = ".*") -> str:
    """A multi/include-all variable's value in a regex: None means "All"."""
    if values is None:
        return all_value
    escaped = [escape_regex(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand_influxql(
    query: str,
    *,
    from_ms: int,
    to_ms: int,
    interval: str,
    variables: Mapping[str, Sequence[str] | None] | None = None,
) -> str:
    """The query Grafana sends for ``query`` over ``[from_ms, to_ms]`` with the chosen variable values."""
    values = variables or {}
    text = query.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    text = text.replace("$__timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    text = text.replace("$__interval_ms", str(_interval_ms(interval))).replace("$__interval", interval)

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name not in values:
            return m.group(0)
        return format_regex_values(values[name])

    return _VARIABLE.sub(sub, text)


def _interval_ms(interval: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", interval)
    if not m:
        raise ValueError(f"not a Grafana interval: {interval!r}")
    factor = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2)]
    return int(m.group(1)) * factor
