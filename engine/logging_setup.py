"""Log output for the command line: rich on a terminal, plain timestamped lines elsewhere.

Plain lines are what systemd, Docker and CI keep readably; rich's columns and
wrapping only help a person watching a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from rich.console import Console
from rich.logging import RichHandler

LogFormat = Literal["auto", "rich", "plain"]
LEVELS = ("debug", "info", "warning", "error")

_PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(short_name)s: %(message)s"


class _ShortName(logging.Filter):
    """``klimaflow.node.show`` -> ``node.show``: the prefix is the same on every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.short_name = record.name.removeprefix("klimaflow.")
        return True


def setup_logging(level: str = "info", fmt: LogFormat = "auto") -> logging.Handler:
    """Send klimaflow's logs at ``level`` (others at warning and above) to stderr; returns the handler."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use one of {', '.join(LEVELS)})")
    use_rich = fmt == "rich" or (fmt == "auto" and sys.stderr.isatty())
    handler: logging.Handler
    if use_rich:
        handler = RichHandler(
            console=Console(stderr=True),
            show_path=False,
            markup=False,
            rich_tracebacks=True,
            log_time_format="[%X]",
        )
        handler.setFormatter(logging.Formatter("%(short_name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_PLAIN_FORMAT))
    handler.addFilter(_ShortName())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("klimaflow").setLevel(numeric)
    return handler
