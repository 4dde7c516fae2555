"""SenseCAP S2120 8-in-1 weather station: raw frame decoder and decoded-payload flattening.

The TTN Device Repository decoder returns ``{"err", "payload", "valid", "messages"}`` where
``messages`` is a list of lists of items (``measurementId``/``measurementValue``/``type``, or
the battery/version item with keys such as ``"Battery(%)"``). :func:`flatten` turns that into
flat reading fields named by measurement id, so a renamed ``type`` text in a future decoder
version does not rename the series. :func:`decode` reproduces the repository decoder's output
for the frames documented in the user guide (0x01, 0x02, 0x04); other frame ids are reported
as errors rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import DecodeError

#: measurementId -> field name (units: °C, %RH, lux, -, m/s, °, mm/h, Pa).
MEASUREMENT_FIELDS: dict[str, str] = {
    "4097": "air_temperature",
    "4098": "air_humidity",
    "4099": "light_intensity",
    "4190": "uv_index",
    "4105": "wind_speed",
    "4104": "wind_direction",
    "4113": "rain_hourly",
    "4101": "barometric_pressure",
}

#: Keys of the battery/version item -> field name; versions stay strings ("1.10" is not 1.1).
ITEM_FIELDS: dict[str, str] = {
    "Battery(%)": "battery",
    "Hardware Version": "hardware_version",
    "Firmware Version": "firmware_version",
    "measureInterval": "measure_interval",
    "gpsInterval": "gps_interval",
}
STRING_FIELDS = frozenset({"hardware_version", "firmware_version"})

_TYPES = {
    "4097": "Air Temperature",
    "4098": "Air Humidity",
    "4099": "Light Intensity",
    "4190": "UV Index",
    "4105": "Wind Speed",
    "4104": "Wind Direction Sensor",
    "4113": "Rain Gauge",
    "4101": "Barometric Pressure",
}


def is_sensecap(decoded: dict[str, Any]) -> bool:
    """Whether a decoded_payload has the SenseCAP ``messages`` list-of-lists shape."""
    return type(decoded.get("messages")) is list


def _snake(name: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "_" for c in name)
    return "_".join(p for p in out.split("_") if p)


def flatten(
    decoded: dict[str, Any],
    fields: dict[str, Any],
    number: Callable[[Any], float | None],
    keep_strings: bool,
) -> None:
    """Add the measurements of a SenseCAP decoded_payload to ``fields``; ``err``/``valid``/``payload`` are dropped."""
    if decoded.get("valid") is False or decoded.get("err") not in (0, None):
        raise DecodeError(f"SenseCAP decoder reported an invalid frame (err={decoded.get('err')!r})")
    for group in decoded["messages"]:
        items = group if type(group) is list else [group]
        for item in items:
            if type(item) is not dict:
                continue
            if "measurementId" in item:
                mid = str(item["measurementId"])
                name = MEASUREMENT_FIELDS.get(mid) or _snake(str(item.get("type") or f"measurement {mid}"))
                value = number(item.get("measurementValue"))
                if value is not None:
                    fields[name] = value
                continue
            for key, raw in item.items():
                name = ITEM_FIELDS.get(key) or _snake(key)
                if name in STRING_FIELDS or type(raw) is bool:
                    if keep_strings or type(raw) is bool:
                        fields[name] = raw
                    continue
                value = number(raw)
                if value is not None:
                    fields[name] = value
                elif keep_strings and type(raw) is str:
                    fields[name] = raw


def _js_string(value: float) -> str:
    """JavaScript ``String(number)`` for one-decimal values (``-10`` not ``-10.0``)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _item(mid: str, value: float | int) -> dict[str, Any]:
    # The repository decoder returns negative values as strings, positive ones as numbers.
    # JSON of a JS number: integral values have no ".0".
    shown: Any = _js_string(float(value)) if value < 0 else int(value) if float(value).is_integer() else value
    return {"measurementValue": shown, "measurementId": mid, "type": _TYPES[mid]}


def decode(payload: bytes, f_port: int) -> dict[str, Any]:
    """Decode an S2120 uplink like the TTN Device Repository decoder (fPort is ignored, as there)."""
    messages: list[list[dict[str, Any]]] = []
    i = 0
    n = len(payload)
    b = payload
    try:
        while i < n:
            frame = b[i]
            if frame == 0x01:
                if i + 11 > n:
                    raise IndexError
                t = b[i + 1] << 8 | b[i + 2]
                if t & 0x8000:
                    t -= 0x10000
                light = int.from_bytes(b[i + 4 : i + 8], "big")
                messages.append(
                    [
                        _item("4097", t / 10),
                        _item("4098", b[i + 3]),
                        _item("4099", light),
                        _item("4190", b[i + 8] / 10),
                        _item("4105", (b[i + 9] << 8 | b[i + 10]) / 10),
                    ]
                )
                i += 11
            elif frame == 0x02:
                if i + 9 > n:
                    raise IndexError
                rain = int.from_bytes(b[i + 3 : i + 7], "big")
                messages.append(
                    [
                        _item("4104", b[i + 1] << 8 | b[i + 2]),
                        _item("4113", rain / 1000),
                        _item("4101", (b[i + 7] << 8 | b[i + 8]) * 10),
                    ]
                )
                i += 9
            elif frame == 0x04:
                if i + 10 > n:
                    raise IndexError
                messages.append(
                    [
                        {
                            "Battery(%)": b[i + 1],
                            "Hardware Version": f"{b[i + 2]}.{b[i + 3]}",
                            "Firmware Version": f"{b[i + 4]}.{b[i + 5]}",
                            "measureInterval": (b[i + 6] << 8 | b[i + 7]) * 60,
                            "gpsInterval": (b[i + 8] << 8 | b[i + 9]) * 60,
                        }
                    ]
                )
                i += 10
            else:
                return {"errors": [f"unsupported SenseCAP S2120 frame id 0x{frame:02X} at byte {i}"]}
    except IndexError:
        return {"errors": [f"SenseCAP S2120 frame 0x{b[i]:02X} at byte {i} is truncated"]}
    return {"err": 0, "payload": payload.hex().upper(), "valid": True, "messages": messages}
