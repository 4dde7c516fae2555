"""A test-only parser for the importer tests, called by a ``python`` node (``input: message``).

Rows ``date;level`` (``31.12.2024;35.5``) become readings of ``gw_test`` tagged with the
station (the file name without extension); a bad row raises RecordRejected, which the
python node routes as it is, exactly as a real parser node reports a skipped row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.errors import RecordRejected


def reading(msg: dict[str, Any]) -> dict[str, Any]:
    row = msg["payload"]
    path = msg["file"]["path"]
    line = msg["csv"]["line"]
    try:
        day = dt.datetime.strptime(str(row["date"]), "%d.%m.%Y").replace(tzinfo=dt.UTC)
    except ValueError:
        raise RecordRejected(path, line, f"date {row['date']!r} is not DD.MM.YYYY") from None
    level = row["level"]
    if isinstance(level, bool) or not isinstance(level, int | float):
        raise RecordRejected(path, line, f"level {level!r} is not a number")
    return {
        "measurement": "gw_test",
        "tags": {"station": msg["file"]["name"].rsplit(".", 1)[0]},
        "fields": {"level": float(level)},
        "time": int(day.timestamp()) * 1_000_000_000,
    }
