"""``opensensemap-measurements``: openSenseMap API answers -> readings.

Two answers of the documented API (https://docs.opensensemap.org, ``sensebox/openSenseMap-API``)
are understood, told apart by their shape:

* ``GET /boxes/:senseBoxId`` (an object with ``sensors``): each sensor's ``lastMeasurement``
  newer than the one seen before becomes a reading on ``out``, and, when ``sensors`` is wired,
  a message per such sensor (payload ``{box_id, box_name, sensor_id, phenomenon, unit,
  sensor_type, from_date}``, the same in ``meta.opensensemap``) so a following
  ``http-request`` can fetch everything since the last poll from
  ``GET /boxes/:senseBoxId/data/:sensorId?from-date=...``.
* that endpoint's answer (a list of ``{createdAt, value, location}``), with the sensor
  named by ``meta.opensensemap``: every measurement newer than the last one emitted.

Values arrive as strings (``"11.36"``) and become floats; locations are GeoJSON order
``[lon, lat(, height)]``. Timestamps come from ``createdAt``, so storing the same
measurement twice overwrites one point. The newest timestamp per sensor is kept in the
node's data directory (``remember``), so a restart continues where the last run stopped.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import math
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from engine.errors import MessageError, RecordRejected
from engine.message import Message
from engine.node import Node
from engine.types import NodeConfig
from nodes.ttn import Reading

#: The API refuses windows longer than a month (``from-date`` older than this is clamped).
MAX_WINDOW = dt.timedelta(days=31)


class OpenSenseMapConfig(NodeConfig):
    """Measurement name of the readings; tags are `box_id`, `box_name`, `sensor_id`, `phenomenon`
    (the sensor title), `unit`, `sensor_type`; fields `value`, `lon`, `lat`."""

    measurement: str = Field(default="opensensemap", min_length=1, description="Measurement name.")
    remember: bool = Field(
        default=True,
        description="Keep the newest timestamp per sensor in the node's data directory, so a restart "
        "neither fetches nor stores again what was already there.",
    )


def parse_time(value: Any) -> tuple[int, dt.datetime]:
    """Nanoseconds since the epoch from an RFC 3339 time such as ``2024-06-20T13:04:51.112Z``."""
    if not isinstance(value, str):
        raise ValueError(f"createdAt is not a time: {value!r}")
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"createdAt is not an RFC 3339 time: {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"createdAt has no time zone: {value!r}")
    utc = moment.astimezone(dt.UTC)
    return calendar.timegm(utc.timetuple()) * 1_000_000_000 + utc.microsecond * 1000, utc


def parse_value(value: Any) -> float:
    """A finite float from the API's string (or number) value."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"value is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"value is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"value is not a finite number: {value!r}")
    return number


def parse_location(value: Any) -> tuple[float, float] | None:
    """(lon, lat) from ``[lon, lat(, height)]``; None if absent, ValueError if malformed."""
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) in (2, 3)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        lon, lat = float(value[0]), float(value[1])
        if -180 <= lon <= 180 and -90 <= lat <= 90:
            return lon, lat
    raise ValueError(f"location is not [lon, lat]: {value!r}")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


class OpenSenseMapNode(Node):
    """Turn openSenseMap API answers (a box, or one sensor's measurements) into readings.

    A box (`GET /boxes/:id`) yields its sensors' new `lastMeasurement`s on `out` and one
    message per sensor with new data on `sensors` (to fetch `GET /boxes/:id/data/:sensorId`);
    a measurement list with `meta.opensensemap` yields every new measurement on `out`. Readings
    leave as one list per answer. Unusable records go to the error path as `RecordRejected`.
    """

    type_name = "opensensemap-measurements"
    category = "parser"
    Config = OpenSenseMapConfig
    outputs = ("out", "sensors")
    color = "#c0deed"
    icon = "sensor"
    config: OpenSenseMapConfig

    #: Wall clock for the one-month limit of ``from_date``; tests replace it to replay old data.
    _now: ClassVar[Any] = staticmethod(time.time)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Newest timestamp (ns) emitted per sensor id, and its createdAt text.
        self._last: dict[str, tuple[int, str]] = {}
        self._state_file: Path | None = None

    async def start(self) -> None:
        if not self.config.remember:
            return
        self._state_file = Path(self.ctx.data_dir()) / "last.json"
        try:
            saved = json.loads(self._state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.log.warning("ignoring %s: %s", self._state_file, exc)
            return
        if isinstance(saved, dict):
            for sensor_id, created in saved.items():
                try:
                    self._last[str(sensor_id)] = (parse_time(created)[0], created)
                except ValueError:
                    continue

    def _save(self) -> None:
        """Written atomically: a crash leaves the old state, never half a file."""
        if self._state_file is None:
            return
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: v[1] for k, v in self._last.items()}, indent=0), encoding="utf-8")
        os.replace(tmp, self._state_file)

    def _reading(self, ctx: dict[str, str], t: int, value: float, loc: tuple[float, float] | None) -> Reading:
        tags = {
            k: ctx[k]
            for k in ("box_id", "box_name", "sensor_id", "phenomenon", "unit", "sensor_type")
            if ctx.get(k)
        }
        fields: dict[str, float | int | bool | str] = {"value": value}
        if loc is not None:
            fields["lon"], fields["lat"] = loc
        return {"measurement": self.config.measurement, "tags": tags, "fields": fields, "time": t}

    @staticmethod
    def _source(msg: Message, fallback: str) -> str:
        req = msg.meta.get("http_request")
        url = req.get("url") if isinstance(req, dict) else None
        return url if isinstance(url, str) and url else fallback

    async def on_message(self, msg: Message) -> None:
        payload = msg.payload
        if isinstance(payload, dict) and isinstance(payload.get("sensors"), list):
            await self._box(msg, payload)
        elif isinstance(payload, list):
            await self._measurements(msg, payload)
        else:
            raise MessageError(
                "expected an openSenseMap box (an object with `sensors`) or a measurement list, "
                f"got {type(payload).__name__}"
            )

    async def _box(self, msg: Message, box: dict[str, Any]) -> None:
        box_id = _text(box.get("_id"))
        if not box_id:
            raise MessageError("the box has no `_id`")
        source = self._source(msg, f"openSenseMap box {box_id}")
        box_name = _text(box.get("name"))
        location = box.get("currentLocation")
        try:
            loc = parse_location(location.get("coordinates") if isinstance(location, dict) else None)
        except ValueError:
            loc = None  # a box with a broken position still has good measurements
        readings: list[Reading] = []
        requests: list[dict[str, Any]] = []
        floor = dt.datetime.fromtimestamp(self._now(), dt.UTC) - MAX_WINDOW
        for index, sensor in enumerate(box["sensors"], start=1):
            sensor_id = _text(sensor.get("_id")) if isinstance(sensor, dict) else ""
            if not sensor_id:
                await self.emit_error(
                    msg.derive(sensor), RecordRejected(source, index, "sensor without `_id`")
                )
                continue
            assert isinstance(sensor, dict)
            ctx = {
                "box_id": box_id,
                "box_name": box_name,
                "sensor_id": sensor_id,
                "phenomenon": _text(sensor.get("title")),
                "unit": _text(sensor.get("unit")),
                "sensor_type": _text(sensor.get("sensorType")),
            }
            last = sensor.get("lastMeasurement")
            if last is None:
                continue  # a sensor that never measured
            try:
                if not isinstance(last, dict):
                    raise ValueError(f"lastMeasurement is not an object: {last!r}")
                t, _moment = parse_time(last.get("createdAt"))
                value = parse_value(last.get("value"))
            except ValueError as exc:
                reason = f"sensor {sensor_id} ({ctx['phenomenon']}): {exc}"
                await self.emit_error(msg.derive(sensor), RecordRejected(source, index, reason))
                continue
            previous = self._last.get(sensor_id)
            if previous is not None and t <= previous[0]:
                continue
            from_date: str | None = None
            if previous is not None:
                _t, prev_moment = parse_time(previous[1])
                from_date = max(prev_moment, floor).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self._last[sensor_id] = (t, last["createdAt"])
            readings.append(self._reading(ctx, t, value, loc))
            requests.append({**ctx, "from_date": from_date})
        if readings:
            self._save()
            await self.emit(msg.derive(readings))
        if self.ctx.has_wires("sensors"):
            for req in requests:
                ctx = {k: v for k, v in req.items() if k != "from_date"}
                await self.emit(msg.derive(req, opensensemap=ctx), "sensors")

    async def _measurements(self, msg: Message, records: list[Any]) -> None:
        ctx = msg.meta.get("opensensemap")
        if not isinstance(ctx, dict) or not ctx.get("sensor_id"):
            raise MessageError(
                "a measurement list needs meta.opensensemap naming the sensor "
                "(the `sensors` output of an opensensemap-measurements node sets it)"
            )
        sensor_id = str(ctx["sensor_id"])
        source = self._source(msg, f"openSenseMap sensor {sensor_id}")
        previous = self._last.get(sensor_id)
        newest = previous
        readings: list[Reading] = []
        for index, record in enumerate(records, start=1):
            try:
                if not isinstance(record, dict):
                    raise ValueError(f"a measurement is an object, not {record!r}")
                t, _moment = parse_time(record.get("createdAt"))
                value = parse_value(record.get("value"))
                loc = parse_location(record.get("location"))
            except ValueError as exc:
                await self.emit_error(msg.derive(record), RecordRejected(source, index, str(exc)))
                continue
            if previous is not None and t <= previous[0]:
                continue
            if newest is None or t > newest[0]:
                newest = (t, str(record["createdAt"]))
            readings.append(self._reading({k: str(v) for k, v in ctx.items()}, t, value, loc))
        if newest is not None and newest != previous:
            self._last[sensor_id] = newest
            self._save()
        if readings:
            readings.sort(key=lambda r: r["time"])
            await self.emit(msg.derive(readings))
