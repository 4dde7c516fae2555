"""``ttn-uplink``: turn The Things Network (TTS v3) MQTT messages into readings.

A *reading* is the payload contract the storage nodes build on::

    {"measurement": str, "tags": {str: str}, "fields": {str: float | int | bool | str}, "time": int}

``time`` is nanoseconds since the epoch from the message's ``received_at`` (parsed without
going through ``datetime``, which would drop the last three digits).

Decisions, and why:

* **Numbers are floats.** Payload formatters are JavaScript, which has no integer type:
  a battery at exactly 3 V arrives as ``3`` and at 3.31 V as ``3.31``. Writing the first as
  an integer would make InfluxDB reject the field ("field type conflict") for the rest of
  the shard. So every value from ``decoded_payload`` that is a number, or a string holding
  a number (``"24.1"``, ``"3.384 V"``, ``"19.57%"``), becomes a float. Frame counters and
  radio settings (``f_port``, ``f_cnt``, ``gateway_count``, ``spreading_factor``,
  ``frequency`` in Hz) are integers by nature and stay ``int``; ``rssi``/``snr`` are floats.
* **f_port is a field, not a tag.** It describes the frame, not the sensor; as a tag it
  would split one device's series whenever it sends a status frame on another port.
* **Absent means absent.** TTN omits ``f_cnt`` (and every other field) when it is 0; the
  reading then has no ``f_cnt`` rather than an invented 0.
* **One set of LSE01 names.** Dragino's own formatter (``BatV``, ``temp_DS18B20``) is mapped
  to the TTN Device Repository names (``Bat``, ``TempC_DS18B20``); see ``shared/data/ttn/README.md``.
* **Decoding is never guessed.** An uplink without ``decoded_payload`` is decoded only if
  its device id matches an entry of ``decoders`` (exact id or glob) or ``default_decoder`` is
  set. Heuristics by DevEUI prefix or fPort would be wrong: a Dragino LGT-92 GPS tracker
  also has the A84041 prefix and sends on fPort 2.
* Non-uplink messages (join, downlink ack/nack/sent/queued/failed, location, service data,
  and simulated uplinks unless configured otherwise) go to ``events`` unchanged with
  ``meta["ttn_event"]`` = kind (``join``, ``down/ack``, ...).
* A TTN Storage Integration record (``{"result": {...}}``) is unwrapped.
* **Raw bytes take a fast path.** :meth:`UplinkParser.parse_bytes` decodes only the fields
  a reading needs with msgspec Structs (~2.5x faster than ``json.loads`` + dict walking) and
  hands anything but a plain, complete uplink to :meth:`UplinkParser.parse`, so results and
  errors are the same either way.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fnmatch
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from math import isfinite
from typing import Any, Literal, TypedDict

import msgspec
from msgspec import UNSET, UnsetType
from pydantic import Field, field_validator

from engine.errors import DecodeError, MessageError
from engine.message import Message
from engine.node import Node
from engine.types import NodeConfig
from nodes.decoders import DECODERS, Decoder, sensecap_s2120

FieldValue = float | int | bool | str


class Reading(TypedDict):
    """One point for a time-series store."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time: int


@dataclass(frozen=True, slots=True)
class TtnEvent:
    """A TTN message that is not a measurement (join, downlink status, ...)."""

    kind: str
    device_id: str | None
    message: dict[str, Any]


#: Dragino "LSE01_TTN Decoder V1.2.1" name -> TTN Device Repository name (shared/data/ttn/README.md).
LSE01_ALIASES: dict[str, str] = {"BatV": "Bat", "temp_DS18B20": "TempC_DS18B20"}

#: Units that may trail a number inside a decoded string ("3.384 V", "19.57%", "0 uS/cm").
UNITS = frozenset(
    {
        "V",
        "mV",
        "%",
        "%RH",
        "°C",
        "°F",
        "K",
        "uS/cm",
        "µS/cm",
        "μS/cm",
        "mS/cm",
        "dS/m",
        "mm",
        "mm/h",
        "m/s",
        "km/h",
        "hPa",
        "Pa",
        "kPa",
        "lux",
        "lx",
        "ppm",
        "dB",
        "dBm",
        "°",
        "s",
        "ms",
        "min",
        "h",
    }
)

_EVENT_KINDS: dict[str, str] = {
    "join_accept": "join",
    "downlink_ack": "down/ack",
    "downlink_nack": "down/nack",
    "downlink_sent": "down/sent",
    "downlink_queued": "down/queued",
    "downlink_failed": "down/failed",
    "downlink_queue_invalidated": "down/queue_invalidated",
    "location_solved": "location/solved",
    "service_data": "service/data",
}
_ENVELOPE_KEYS = frozenset({"end_device_ids", "correlation_ids", "received_at", "simulated"})
_NUMBER_START = frozenset("0123456789+-.")


class TtnUplinkConfig(NodeConfig):
    """How TTN uplinks become readings."""

    measurement: str = Field(
        default="ttn",
        min_length=1,
        description="Measurement name of every reading (registry-enrich may replace it).",
    )
    decoders: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Device id or glob pattern (`eui-a84041*`) -> decoder for uplinks without `decoded_payload`. "
            f"Decoders: {', '.join(sorted(DECODERS))}. Exact ids win over patterns; patterns are tried in order."
        ),
    )
    default_decoder: str | None = Field(
        default=None, description="Decoder for devices that match no `decoders` entry; empty means: error."
    )
    decode_raw: Literal["missing", "always"] = Field(
        default="missing",
        description="Use the configured decoder only when `decoded_payload` is missing, or always (ignore TTN's).",
    )
    strings: Literal["keep", "drop"] = Field(
        default="keep",
        description="Decoded values that are not numbers (e.g. `Node_type`): keep as string fields or drop.",
    )
    lse01_names: bool = Field(
        default=True,
        description="Map Dragino's LSE01 field names (`BatV`, `temp_DS18B20`) to the Device Repository names.",
    )
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Further field renames (`decoded name: field name`), applied after flattening.",
    )
    radio: bool = Field(
        default=True,
        description="Add `rssi`/`snr` (best gateway), `gateway_count`, `spreading_factor`, `frequency` (Hz).",
    )
    simulated: Literal["events", "readings"] = Field(
        default="events",
        description="Uplinks simulated in the TTN console: to `events` (kind `up/simulated`) or treated as readings.",
    )

    @field_validator("decoders")
    @classmethod
    def _known_decoders(cls, v: dict[str, str]) -> dict[str, str]:
        for key, name in v.items():
            if name not in DECODERS:
                raise ValueError(f"{key}: unknown decoder {name!r} (known: {', '.join(sorted(DECODERS))})")
        return v

    @field_validator("default_decoder")
    @classmethod
    def _known_default(cls, v: str | None) -> str | None:
        if v is not None and v not in DECODERS:
            raise ValueError(f"unknown decoder {v!r} (known: {', '.join(sorted(DECODERS))})")
        return v


# -- value helpers ----------------------------------------------------------------------


def to_number(value: Any) -> float | None:
    """A finite float from a number or numeric string (optionally with a unit), else None."""
    t = type(value)
    if t is float:
        return value if math.isfinite(value) else None
    if t is int:
        return float(value)
    if t is not str:
        return None
    try:
        f = float(value)
    except ValueError:
        s = value.strip()
        i = 0
        n = len(s)
        while i < n and s[i] in _NUMBER_START:
            i += 1
        if i == 0 or s[i:].strip() not in UNITS:
            return None
        try:
            f = float(s[:i])
        except ValueError:
            return None
    return f if math.isfinite(f) else None


_FRACTION_SCALE = [10**9, 10**8, 10**7, 10**6, 10**5, 10**4, 10**3, 10**2, 10, 1]


@lru_cache(maxsize=1024)
def _minute_epoch(prefix: str) -> int:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM`` (cached: uplinks of one minute share it)."""
    if (
        len(prefix) != 16
        or prefix[4] != "-"
        or prefix[7] != "-"
        or prefix[10] not in "Tt "
        or prefix[13] != ":"
        or not (prefix[0:4] + prefix[5:7] + prefix[8:10] + prefix[11:13] + prefix[14:16]).isdigit()
    ):
        raise ValueError(prefix)
    d = dt.datetime(
        int(prefix[0:4]),
        int(prefix[5:7]),
        int(prefix[8:10]),
        int(prefix[11:13]),
        int(prefix[14:16]),
        tzinfo=dt.UTC,
    )
    return int(d.timestamp())


@lru_cache(maxsize=1024)
def _second_epoch(prefix: str) -> int:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM:SS`` (cached: a burst of uplinks shares a second)."""
    secs = prefix[17:19]
    if prefix[16] != ":" or not secs.isdigit() or secs > "60":
        raise ValueError(prefix)
    return _minute_epoch(prefix[:16]) + int(secs)


def rfc3339_to_ns(text: str) -> int:
    """Nanoseconds since the epoch from an RFC 3339 timestamp, keeping all nine fraction digits."""
    try:
        if len(text) == 30 and text[29] == "Z" and text[19] == ".":  # TTN's own form, checked as below
            digits = text[20:29]
            if not digits.isdigit():
                raise ValueError(text)
            return _second_epoch(text[:19]) * 1_000_000_000 + int(digits)
        base = _minute_epoch(text[:16])
        secs = text[17:19]
        if text[16] != ":" or not secs.isdigit() or secs > "60":
            raise ValueError(text)
        end = len(text)
        last = text[-1]
        if last == "Z" or last == "z":
            offset = 0
            end -= 1
        else:
            tz = text[-6:]
            if tz[0] not in "+-" or tz[3] != ":" or not (tz[1:3] + tz[4:6]).isdigit():
                raise ValueError(text)
            offset = (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * (1 if tz[0] == "+" else -1)
            end -= 6
        frac = 0
        if end > 19:
            digits = text[20:end][:9]
            if text[19] != "." or not digits.isdigit():
                raise ValueError(text)
            frac = int(digits) * _FRACTION_SCALE[len(digits)]
        elif end != 19:
            raise ValueError(text)
    except (ValueError, IndexError):
        raise DecodeError(f"invalid RFC 3339 timestamp {text!r}") from None
    return (base + int(secs) - offset) * 1_000_000_000 + frac


def parse_message(payload: Any) -> dict[str, Any]:
    """The TTN message as a dict: JSON text/bytes are parsed once; non-objects are rejected."""
    if isinstance(payload, str | bytes | bytearray):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"TTN message is not valid JSON: {exc}") from None
    if type(payload) is not dict:
        raise MessageError(f"a TTN message must be a JSON object, got {type(payload).__name__}")
    inner = payload.get("result")
    if type(inner) is dict and "end_device_ids" not in payload:
        return inner  # Storage Integration record
    return payload


# -- the fast path's view of an uplink ------------------------------------------------
# Only the fields a reading needs; msgspec skips the rest without building objects. Types
# are the ones JSON gives the dict path, so any other type is a ValidationError and the
# message takes the dict path. gc=False: these never take part in reference cycles.


class _AppIds(msgspec.Struct, gc=False):
    application_id: str | None = None


class _DeviceIds(msgspec.Struct, gc=False):
    device_id: str | None = None
    dev_eui: str | None = None
    application_ids: _AppIds | None = None


class _Lora(msgspec.Struct, gc=False):
    spreading_factor: int | None = None


class _DataRate(msgspec.Struct, gc=False):
    lora: _Lora | None = None


class _Settings(msgspec.Struct, gc=False):
    data_rate: _DataRate | None = None
    frequency: str | int | None = None


class _Gateway(msgspec.Struct, gc=False):
    # UNSET, not None: an absent rssi means channel_rssi, an explicit null does not.
    rssi: int | float | UnsetType | None = UNSET
    channel_rssi: int | float | None = None
    snr: int | float | None = None


class _Uplink(msgspec.Struct, gc=False):
    f_port: int | None = None
    f_cnt: int | None = None
    decoded_payload: dict[str, Any] | None = None
    rx_metadata: list[_Gateway] | None = None
    settings: _Settings | None = None
    received_at: str | None = None


class _Message(msgspec.Struct, gc=False):
    end_device_ids: _DeviceIds | None = None
    received_at: str | None = None
    simulated: bool | None = None
    uplink_message: _Uplink | None = None


_decode_message = msgspec.json.Decoder(_Message).decode


# -- the pure part --------------------------------------------------------------------


class UplinkParser:
    """Config compiled once (aliases, decoder lookup) so :meth:`parse` does only per-message work."""

    def __init__(self, config: TtnUplinkConfig | None = None) -> None:
        c = config or TtnUplinkConfig()
        self.config = c
        self.measurement = c.measurement
        aliases = dict(LSE01_ALIASES) if c.lse01_names else {}
        for src, dst in c.aliases.items():  # user renames apply after the built-in ones
            for k, v in aliases.items():
                if v == src:
                    aliases[k] = dst
            aliases[src] = dst
        self.aliases = aliases
        self.keep_strings = c.strings == "keep"
        self.radio = c.radio
        self.always_decode = c.decode_raw == "always"
        self.simulated_as_event = c.simulated == "events"
        self.exact: dict[str, Decoder] = {}
        self.patterns: list[tuple[str, Decoder]] = []
        for key, name in c.decoders.items():
            if any(ch in key for ch in "*?["):
                self.patterns.append((key, DECODERS[name]))
            else:
                self.exact[key] = DECODERS[name]
        self.default: Decoder | None = DECODERS[c.default_decoder] if c.default_decoder else None

    def decoder_for(self, device_id: str) -> Decoder | None:
        found = self.exact.get(device_id)
        if found is not None:
            return found
        for pattern, decoder in self.patterns:
            if fnmatch.fnmatchcase(device_id, pattern):
                return decoder
        return self.default

    def parse(self, message: dict[str, Any]) -> Reading | TtnEvent:
        """A reading for an uplink, a :class:`TtnEvent` otherwise; raises DecodeError/MessageError."""
        ids = message.get("end_device_ids")
        if type(ids) is not dict or not isinstance(ids.get("device_id"), str) or not ids["device_id"]:
            raise MessageError("not a TTN message: end_device_ids.device_id is missing")
        device_id: str = ids["device_id"]
        up = message.get("uplink_message")
        if type(up) is not dict:
            return TtnEvent(_event_kind(message), device_id, message)
        if self.simulated_as_event and message.get("simulated") is True:
            return TtnEvent("up/simulated", device_id, message)

        received = message.get("received_at") or up.get("received_at")
        if type(received) is not str:
            raise DecodeError(f"uplink of device {device_id} has no received_at")
        time_ns = rfc3339_to_ns(received)

        tags = {"device_id": device_id}
        dev_eui = ids.get("dev_eui")
        if type(dev_eui) is str and dev_eui:
            tags["dev_eui"] = dev_eui.upper()
        app = ids.get("application_ids")
        if type(app) is dict:
            app_id = app.get("application_id")
            if type(app_id) is str and app_id:
                tags["application"] = app_id

        fields: dict[str, FieldValue] = {}
        decoded = up.get("decoded_payload")
        if decoded is None or self.always_decode:
            decoded = self._decode_raw(device_id, up, decoded)
        elif type(decoded) is not dict:
            raise DecodeError(
                f"decoded_payload of device {device_id} is a {type(decoded).__name__}, not an object"
            )
        errors = decoded.get("errors")
        if errors:
            raise DecodeError(
                f"payload decoder for device {device_id} failed: {_join(errors)} (f_port {up.get('f_port')})"
            )
        if sensecap_s2120.is_sensecap(decoded):
            sensecap_s2120.flatten(decoded, fields, to_number, self.keep_strings)
            if self.aliases:
                aliases = self.aliases
                fields = {aliases.get(k, k): v for k, v in fields.items()}
        else:
            self._flatten(decoded, "", fields)

        f_port = up.get("f_port")
        if type(f_port) is int:
            fields["f_port"] = f_port
        f_cnt = up.get("f_cnt")
        if type(f_cnt) is int and f_cnt:
            fields["f_cnt"] = f_cnt
        if self.radio:
            self._radio(up, fields)
        return {"measurement": self.measurement, "tags": tags, "fields": fields, "time": time_ns}

    def parse_bytes(self, data: bytes | bytearray | memoryview | str) -> Reading | TtnEvent:
        """Same result and errors as ``parse(parse_message(data))``, faster for plain uplinks.

        A memoryview is read as the bytes it holds (``parse_message`` would reject it).
        """
        if type(data) is memoryview:
            data = data.tobytes()
        try:
            reading = self._parse_fast(data)
        except Exception:  # the dict path decides what this message is, or raises the precise error
            reading = None
        if reading is None:
            return self.parse(parse_message(data))
        return reading

    def _parse_fast(self, data: bytes | bytearray | str) -> Reading | None:
        """The reading of a plain, complete uplink; None (or any exception) means: use :meth:`parse`."""
        t = type(data)
        if t is bytes or t is bytearray:
            if not data.isascii():
                # msgspec does not check the UTF-8 of skipped strings; json.loads does.
                data.decode("utf-8", "surrogatepass")  # type: ignore[union-attr]
        elif t is not str:
            return None
        m = _decode_message(data)
        ids = m.end_device_ids
        up = m.uplink_message
        if ids is None or up is None or self.always_decode:
            return None
        device_id = ids.device_id
        decoded = up.decoded_payload
        if (
            not device_id
            or decoded is None
            or (m.simulated is True and self.simulated_as_event)
            or decoded.get("errors")
            or type(decoded.get("messages")) is list  # sensecap_s2120.is_sensecap
        ):
            return None
        received = m.received_at or up.received_at
        if received is None:
            return None
        if len(received) == 30 and received[29] == "Z" and received[19] == ".":  # rfc3339_to_ns inlined
            time_ns = _second_epoch(received[:19]) * 1_000_000_000 + int(received[20:29])
        else:
            time_ns = rfc3339_to_ns(received)

        tags = {"device_id": device_id}
        if ids.dev_eui:
            tags["dev_eui"] = ids.dev_eui.upper()
        app = ids.application_ids
        if app is not None and app.application_id:
            tags["application"] = app.application_id

        fields: dict[str, FieldValue] = {}
        # _flatten's top level inlined (to_number's float() tried first, as it does)
        keep = self.keep_strings
        aliases = self.aliases
        for key, value in decoded.items():
            name = aliases.get(key, key)
            vt = type(value)
            if vt is str:
                try:
                    num: float | None = float(value)
                except ValueError:
                    num = to_number(value)
                else:
                    if not isfinite(num):  # type: ignore[arg-type]
                        num = None
                if num is not None:
                    fields[name] = num
                elif keep:
                    fields[name] = value
            elif vt is float or vt is int:
                if isfinite(value):
                    fields[name] = float(value)
            elif vt is bool:
                fields[name] = value
            elif vt is dict:
                self._flatten(value, name + "_", fields)
            elif vt is list:
                self._flatten({str(i): v for i, v in enumerate(value)}, name + "_", fields)
        if up.f_port is not None:
            fields["f_port"] = up.f_port
        if up.f_cnt:
            fields["f_cnt"] = up.f_cnt
        if self.radio:
            rx = up.rx_metadata
            if rx:
                if len(rx) == 1:  # the usual case, without the comparisons
                    gw = rx[0]
                    r = gw.rssi
                    if r is UNSET:
                        r = gw.channel_rssi
                    if r is not None:
                        fields["rssi"] = float(r)
                    if gw.snr is not None:
                        fields["snr"] = float(gw.snr)
                    fields["gateway_count"] = 1
                else:
                    self._radio_fast(rx, fields)
            settings = up.settings
            if settings is not None:
                data_rate = settings.data_rate
                if data_rate is not None and data_rate.lora is not None:
                    sf = data_rate.lora.spreading_factor
                    if sf is not None:
                        fields["spreading_factor"] = sf
                freq = settings.frequency
                if type(freq) is str:
                    if freq.isdigit():
                        fields["frequency"] = int(freq)
                elif freq is not None:
                    fields["frequency"] = freq
        return {"measurement": self.measurement, "tags": tags, "fields": fields, "time": time_ns}

    @staticmethod
    def _radio_fast(rx: list[_Gateway], fields: dict[str, FieldValue]) -> None:
        """_radio's gateway loop over decoded Structs."""
        rssi: float | None = None
        snr: float | None = None
        for gw in rx:
            r = gw.rssi
            if r is UNSET:
                r = gw.channel_rssi
            if r is not None and (rssi is None or r > rssi):
                rssi = r
            s = gw.snr
            if s is not None and (snr is None or s > snr):
                snr = s
        if rssi is not None:
            fields["rssi"] = float(rssi)
        if snr is not None:
            fields["snr"] = float(snr)
        fields["gateway_count"] = len(rx)

    def _decode_raw(self, device_id: str, up: dict[str, Any], ttn_decoded: Any) -> dict[str, Any]:
        decoder = self.decoder_for(device_id)
        if decoder is None:
            if ttn_decoded is not None and type(ttn_decoded) is dict:
                return ttn_decoded  # decode_raw=always, but nothing configured for this device
            raise DecodeError(
                f"uplink has no decoded_payload and no decoder is configured for device {device_id}"
            )
        frm = up.get("frm_payload")
        if type(frm) is not str or not frm:
            raise DecodeError(f"uplink of device {device_id} has no frm_payload to decode")
        try:
            raw = base64.b64decode(frm, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError(
                f"frm_payload of device {device_id} is not valid base64: {frm[:40]!r}"
            ) from None
        f_port = up.get("f_port")
        result = decoder(raw, f_port if type(f_port) is int else 0)
        return result

    def _flatten(self, obj: dict[str, Any], prefix: str, fields: dict[str, FieldValue]) -> None:
        keep = self.keep_strings
        aliases = self.aliases
        for key, value in obj.items():
            name = prefix + key if prefix else key
            name = aliases.get(name, name)
            t = type(value)
            if t is float or t is int:
                if math.isfinite(value):
                    fields[name] = float(value)
            elif t is str:
                num = to_number(value)
                if num is not None:
                    fields[name] = num
                elif keep:
                    fields[name] = value
            elif t is bool:
                fields[name] = value
            elif t is dict:
                self._flatten(value, name + "_", fields)
            elif t is list:
                self._flatten({str(i): v for i, v in enumerate(value)}, name + "_", fields)

    @staticmethod
    def _radio(up: dict[str, Any], fields: dict[str, FieldValue]) -> None:
        rx = up.get("rx_metadata")
        if type(rx) is list and rx:
            rssi: float | None = None
            snr: float | None = None
            for gw in rx:
                if type(gw) is not dict:
                    continue
                r = gw.get("rssi", gw.get("channel_rssi"))
                if (type(r) is int or type(r) is float) and (rssi is None or r > rssi):
                    rssi = r
                s = gw.get("snr")
                if (type(s) is int or type(s) is float) and (snr is None or s > snr):
                    snr = s
            if rssi is not None:
                fields["rssi"] = float(rssi)
            if snr is not None:
                fields["snr"] = float(snr)
            fields["gateway_count"] = len(rx)
        settings = up.get("settings")
        if type(settings) is dict:
            lora = (settings.get("data_rate") or {}).get("lora")
            if type(lora) is dict:
                sf = lora.get("spreading_factor")
                if type(sf) is int:
                    fields["spreading_factor"] = sf
            freq = settings.get("frequency")
            if type(freq) is str and freq.isdigit():
                fields["frequency"] = int(freq)
            elif type(freq) is int:
                fields["frequency"] = freq


def _join(errors: Any) -> str:
    return "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors)


def _event_kind(message: dict[str, Any]) -> str:
    for key in message:
        kind = _EVENT_KINDS.get(key)
        if kind is not None:
            return kind
    for key in message:
        if key not in _ENVELOPE_KEYS:
            return "down/" + key[9:] if key.startswith("downlink_") else key
    return "unknown"


_parsers: dict[int, tuple[TtnUplinkConfig | None, UplinkParser]] = {}


def uplink_to_reading(message: Any, config: TtnUplinkConfig | None = None) -> Reading | TtnEvent:
    """Pure conversion of one TTN message (dict, or JSON str/bytes); parsers are cached per config object."""
    entry = _parsers.get(id(config))
    if entry is None or entry[0] is not config:
        if len(_parsers) > 64:
            _parsers.clear()
        entry = (config, UplinkParser(config))
        _parsers[id(config)] = entry
    return entry[1].parse(parse_message(message))


# -- the node ---------------------------------------------------------------------------


class TtnUplinkNode(Node):
    """Decode TTN v3 uplinks into readings; joins, downlink events etc. go to `events`."""

    type_name = "ttn-uplink"
    category = "parser"
    Config = TtnUplinkConfig
    outputs = ("out", "events")
    color = "#8fd2e8"
    icon = "ttn"
    config: TtnUplinkConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parser = UplinkParser(self.config)

    def parse_payload(self, payload: Any) -> Reading | TtnEvent:
        """One payload -> reading or event: raw JSON takes the fast path, a dict the dict path."""
        if type(payload) is bytes or type(payload) is bytearray or type(payload) is str:
            return self.parser.parse_bytes(payload)
        return self.parser.parse(parse_message(payload))

    async def on_message(self, msg: Message) -> None:
        result = self.parse_payload(msg.payload)
        port = self._apply(msg, result)
        await self.emit(msg, port)

    async def on_batch(self, msgs: list[Message]) -> None:
        """Readings leave as one batch; an event or a failure flushes what came before it (order kept)."""
        out: list[Message] = []
        parse = self.parse_payload
        for msg in msgs:
            try:
                result = parse(msg.payload)
            except Exception as exc:  # this message's problem, not the batch's
                await self.emit_many(out)
                out = []
                await self.emit_error(msg, exc)
                continue
            if type(result) is dict:
                msg.payload = result
                msg.meta["device_id"] = result["tags"]["device_id"]
                out.append(msg)
            else:
                await self.emit_many(out)
                out = []
                await self.emit(msg, self._apply(msg, result))
        await self.emit_many(out)

    @staticmethod
    def _apply(msg: Message, result: Reading | TtnEvent) -> str:
        """Put the result into the message; the port it leaves by."""
        if type(result) is TtnEvent:
            msg.payload = result.message
            msg.meta["ttn_event"] = result.kind
            if result.device_id is not None:
                msg.meta["device_id"] = result.device_id
            return "events"
        assert type(result) is dict
        msg.payload = result
        msg.meta["device_id"] = result["tags"]["device_id"]
        return "out"
