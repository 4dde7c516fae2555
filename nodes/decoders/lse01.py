"""Dragino LSE01 soil moisture / temperature / EC probe: fPort 2 frame decoder.

Reproduces the two payload formatters found in TTN applications byte for byte, so a
frame decoded here is indistinguishable from one TTN decoded (same names, same strings):

* ``device_repository`` — TheThingsNetwork/lorawan-devices ``vendor/dragino/lse01.js``:
  ``Bat``, ``TempC_DS18B20``, ``water_SOIL``, ``temp_SOIL``, ``conduct_SOIL``; ignores the
  flags byte; other fPorts give ``{"errors": ["unknown FPort"]}``.
* ``dragino_v121`` — Dragino's own "LSE01_TTN Decoder V1.2.1": ``BatV``, ``temp_DS18B20``
  and, depending on the MOD bit, either the three soil values or the raw dielectric values,
  plus ``s_flag``, ``i_flag``, ``Mod``, ``Node_type``.

Both vendor formulas compute a negative soil temperature as ``(v - 0xFFFF) / 100``, one LSB
too high (0xFF6A gives "-1.49", not "-1.50"). We keep that on purpose: series decoded by TTN
and series decoded here must not disagree by 0.01 °C depending on where decoding happened.
"""

from __future__ import annotations

from typing import Any, Literal

FRAME_LENGTH = 11
DATA_PORT = 2

Formatter = Literal["device_repository", "dragino_v121"]


def _fixed(value: float, decimals: int) -> str:
    """JavaScript ``Number.prototype.toFixed`` for the values these frames can produce."""
    if value == 0:
        value = 0.0  # toFixed never prints "-0.00"
    return f"{value:.{decimals}f}"


def decode(payload: bytes, f_port: int, formatter: Formatter = "device_repository") -> dict[str, Any]:
    """Decode one uplink like the named TTN formatter; failures come back as ``{"errors": [...]}``."""
    if f_port != DATA_PORT:
        return {"errors": ["unknown FPort"]}
    if len(payload) != FRAME_LENGTH:
        return {"errors": [f"LSE01 frame must be {FRAME_LENGTH} bytes, got {len(payload)}"]}
    b = payload
    battery = ((b[0] << 8 | b[1]) & 0x3FFF) / 1000
    ds = b[2] << 8 | b[3]
    if ds & 0x8000:
        ds -= 0x10000
    water_raw = b[4] << 8 | b[5]
    soil_raw = b[6] << 8 | b[7]
    soil_temp = (soil_raw - 0xFFFF) / 100 if soil_raw & 0x8000 else soil_raw / 100
    conduct = b[8] << 8 | b[9]
    if formatter == "device_repository":
        return {
            "Bat": battery,
            "TempC_DS18B20": _fixed(ds / 10, 1),
            "water_SOIL": _fixed(water_raw / 100, 2),
            "temp_SOIL": _fixed(soil_temp, 2),
            "conduct_SOIL": conduct,
        }
    flags = b[10]
    mod = (flags >> 7) & 1
    out: dict[str, Any] = {"BatV": battery, "temp_DS18B20": _fixed(ds / 10, 2)}
    if mod == 0:
        out["water_SOIL"] = _fixed(water_raw / 100, 2)
        out["temp_SOIL"] = _fixed(soil_temp, 2)
        out["conduct_SOIL"] = conduct
    else:
        out["Soil_dielectric_constant"] = _fixed(water_raw / 10, 1)
        out["Raw_water_SOIL"] = soil_raw
        out["Raw_conduct_SOIL"] = conduct
    out["s_flag"] = (flags >> 4) & 1
    out["i_flag"] = flags & 0x0F
    out["Mod"] = mod
    out["Node_type"] = "LSE01"
    return out


def decode_dragino_v121(payload: bytes, f_port: int) -> dict[str, Any]:
    """:func:`decode` with Dragino's own V1.2.1 field names (registered as ``lse01-dragino``)."""
    return decode(payload, f_port, "dragino_v121")
