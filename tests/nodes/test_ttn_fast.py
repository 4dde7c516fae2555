"""ttn-uplink's msgspec fast path: ``parse_bytes`` gives exactly what ``parse(parse_message())`` gives.

Equivalence is checked over every JSON message of shared/data/ttn, uplinks shaped like the
ingest benchmark's, and variants that must take the dict path (results and errors alike).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.ttn import TtnEvent, TtnUplinkConfig, UplinkParser, parse_message
from tests.flowkit import run_flow
from tests.shared_data import shared_path

CONFIGS: dict[str, TtnUplinkConfig] = {
    "default": TtnUplinkConfig(),
    "no-radio": TtnUplinkConfig(radio=False),
    "drop-strings": TtnUplinkConfig(strings="drop", aliases={"water_SOIL": "soil_moisture"}),
    "dragino-names": TtnUplinkConfig(lse01_names=False),
    "simulated-readings": TtnUplinkConfig(simulated="readings"),
    "decoders": TtnUplinkConfig(decoders={"eui-a84041*": "lse01"}, default_decoder="sensecap-s2120"),
    "always": TtnUplinkConfig(decoders={"eui-a84041*": "lse01"}, decode_raw="always"),
}
PARSERS = {name: UplinkParser(c) for name, c in CONFIGS.items()}
TEMPLATE = ("messages", "up_lse01_device_repo_formatter.json")
Mutate = Callable[[dict[str, Any]], object]


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """A result or an exception, comparable with ==."""
    try:
        result = fn()
    except Exception as exc:  # errors must match too
        return ("error", type(exc), str(exc))
    if type(result) is TtnEvent:
        return ("event", result.kind, result.device_id, result.message)
    return ("ok", result, list(result["fields"]))  # key order of fields too


def assert_same(data: bytes | bytearray | str, parser: UplinkParser | None = None) -> tuple[Any, ...]:
    parsers = [parser] if parser is not None else list(PARSERS.values())
    first: tuple[Any, ...] = ()
    for p in parsers:
        slow = outcome(lambda p=p: p.parse(parse_message(data)))  # type: ignore[misc]
        fast = outcome(lambda p=p: p.parse_bytes(data))  # type: ignore[misc]
        assert fast == slow, (p.config, data[:200])
        first = first or slow
    return first


def takes_fast_path(data: bytes | str, parser: UplinkParser | None = None) -> bool:
    try:
        return (parser or PARSERS["default"])._parse_fast(data) is not None
    except Exception:  # any exception means: dict path
        return False


def template() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(shared_path("ttn", *TEMPLATE).read_bytes())
    return data


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- every JSON document of shared/data/ttn ----------------------------------------------


def _shared_messages() -> Iterator[tuple[str, bytes]]:
    root = shared_path("ttn")
    for path in sorted(root.rglob("*.json")):
        raw = path.read_bytes()
        name = str(path.relative_to(root))
        yield name, raw
        try:
            doc = json.loads(raw)
        except ValueError:
            for i, line in enumerate(raw.splitlines()):  # JSON lines, or a broken file
                yield f"{name}:{i}", line
            continue
        items = doc if isinstance(doc, list) else [doc]
        for i, item in enumerate(items):
            yield f"{name}[{i}]", dumps(item)
            if isinstance(item, dict) and type(item.get("result")) is dict:
                yield f"{name}[{i}].result", dumps(item["result"])  # the unwrapped record


def test_every_shared_message_gives_the_same_result() -> None:
    seen = 0
    fast = 0
    for _name, raw in _shared_messages():
        assert_same(raw)
        assert_same(raw.decode("utf-8", "surrogatepass"))
        seen += 1
        fast += takes_fast_path(raw)
    assert seen > 50
    assert fast >= 44  # the 41 real LSE01 records, unwrapped, and the constructed LSE01 uplinks


def _vector_payloads() -> Iterator[dict[str, Any]]:
    for name in ("lse01_test_vectors.json", "sensecap_s2120_test_vectors.json"):
        doc = json.loads(shared_path("ttn", "test_vectors", name).read_text())
        for vector in doc["vectors"]:
            expected = vector.get("expected")
            if isinstance(expected, dict):
                nested = [v for v in expected.values() if isinstance(v, dict)]
                yield from nested or [expected]


def test_test_vector_payloads_as_decoded_payload() -> None:
    payloads = list(_vector_payloads())
    assert payloads
    for decoded in payloads:
        msg = template()
        msg["uplink_message"]["decoded_payload"] = decoded
        assert_same(dumps(msg))


# -- the benchmark's uplinks ---------------------------------------------------------------


def _bench_uplinks(count: int) -> Iterator[bytes]:
    """As bench.ingest.make_uplinks builds them, serialised as the publishers send them."""
    devices = ["eui-a84041edd184a0c0", "eui-a8404194a1875ff3", "eui-2cf7f1c044300015"]
    base = template()
    for seq in range(count):
        msg = copy.deepcopy(base)
        msg["end_device_ids"]["device_id"] = devices[seq % len(devices)]
        up = msg["uplink_message"]
        up["f_cnt"] = seq + 1
        up["decoded_payload"]["water_SOIL"] = f"{10 + (seq % 900) / 100:.2f}"
        yield json.dumps(msg, separators=(",", ":")).encode()


def test_bench_uplinks_take_the_fast_path_with_the_same_result() -> None:
    for data in _bench_uplinks(60):
        result = assert_same(data)
        assert result[0] == "ok"
        assert takes_fast_path(data)
        assert takes_fast_path(data.decode())


# -- variants --------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Mutate:
    *parents, last = path.split(".")

    def apply(msg: dict[str, Any]) -> None:
        node = msg
        for p in parents:
            node = node[p] if not isinstance(node, list) else node[int(p)]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _del(path: str) -> Mutate:
    *parents, last = path.split(".")

    def apply(msg: dict[str, Any]) -> None:
        node = msg
        for p in parents:
            node = node[p] if not isinstance(node, list) else node[int(p)]
        del node[last]

    return apply


GW = "uplink_message.rx_metadata.0"

#: Variants that must take the dict path: it decides (event, error, or a reading msgspec would not give).
FALLBACK: dict[str, Mutate] = {
    "no device_id": _del("end_device_ids.device_id"),
    "empty device_id": _set("end_device_ids.device_id", ""),
    "device_id a number": _set("end_device_ids.device_id", 42),
    "end_device_ids null": _set("end_device_ids", None),
    "f_cnt a string": _set("uplink_message.f_cnt", "1432"),
    "f_port a bool": _set("uplink_message.f_port", True),
    "f_port a float": _set("uplink_message.f_port", 2.0),
    "simulated": _set("simulated", True),
    "simulated a string": _set("simulated", "yes"),
    "decoder errors": _set("uplink_message.decoded_payload.errors", ["bad frame"]),
    "decoded_payload missing": _del("uplink_message.decoded_payload"),
    "decoded_payload null": _set("uplink_message.decoded_payload", None),
    "decoded_payload a list": _set("uplink_message.decoded_payload", [1, 2]),
    "sensecap shaped": _set("uplink_message.decoded_payload", {"err": 0, "messages": [[]], "valid": True}),
    "no uplink_message": _del("uplink_message"),
    "uplink_message a string": _set("uplink_message", "x"),
    "no received_at": lambda m: (m.pop("received_at"), m["uplink_message"].pop("received_at", None)),
    "received_at a number": _set("received_at", 1715678467),
    "received_at invalid": _set("received_at", "2024-05-14 09:21"),
    "received_at unicode digits": _set("received_at", "2024-05-14T09:21:07.56949883²Z"),
    "rssi a string": _set(f"{GW}.rssi", "-97"),
    "gateway not an object": _set(GW, "gw"),
    "rx_metadata an object": _set("uplink_message.rx_metadata", {}),
    "data_rate a list": _set("uplink_message.settings.data_rate", ["lora"]),
    "data_rate empty list": _set("uplink_message.settings.data_rate", []),
    "lora a string": _set("uplink_message.settings.data_rate.lora", "SF9"),
    "spreading_factor a float": _set("uplink_message.settings.data_rate.lora.spreading_factor", 9.0),
    "frequency a float": _set("uplink_message.settings.frequency", 868.1),
    "frequency superscript digits": _set("uplink_message.settings.frequency", "86810000²"),
    "dev_eui a number": _set("end_device_ids.dev_eui", 1),
    "application_ids a list": _set("end_device_ids.application_ids", []),
    "huge int in payload": _set("uplink_message.decoded_payload.big", 10**400),
    "huge rssi": _set(f"{GW}.rssi", 10**400),
    "join_accept": lambda m: (m.pop("uplink_message"), m.update(join_accept={"session_key_id": "AY"})),
    "downlink_ack": lambda m: (m.pop("uplink_message"), m.update(downlink_ack={"f_port": 1})),
    "downlink_queued": lambda m: (m.pop("uplink_message"), m.update(downlink_queued={"f_port": 1})),
}

#: Variants the fast path handles itself (and must get right).
FAST: dict[str, Mutate] = {
    "as is": lambda m: None,
    "no rssi, channel_rssi": _del(f"{GW}.rssi"),
    "rssi null, channel_rssi set: no rssi": _set(f"{GW}.rssi", None),
    "no rssi, no channel_rssi": lambda m: (_del(f"{GW}.rssi")(m), _del(f"{GW}.channel_rssi")(m)),
    "int snr and rssi": lambda m: (_set(f"{GW}.rssi", -97)(m), _set(f"{GW}.snr", 6)(m)),
    "float rssi": _set(f"{GW}.rssi", -97.5),
    "big int rssi": _set(f"{GW}.rssi", 10**30),
    "no gateways": _set("uplink_message.rx_metadata", []),
    "rx_metadata null": _set("uplink_message.rx_metadata", None),
    "three gateways": lambda m: m["uplink_message"].update(
        rx_metadata=[
            {"rssi": -120, "snr": -3.5},
            {"channel_rssi": -90.5, "snr": 2},
            {"rssi": None, "snr": None},
        ]
    ),
    "f_cnt absent": _del("uplink_message.f_cnt"),
    "f_cnt 0": _set("uplink_message.f_cnt", 0),
    "f_port null": _set("uplink_message.f_port", None),
    "frequency an int": _set("uplink_message.settings.frequency", 868100000),
    "frequency not digits": _set("uplink_message.settings.frequency", "868.1 MHz"),
    "frequency empty": _set("uplink_message.settings.frequency", ""),
    "no settings": _del("uplink_message.settings"),
    "data_rate null": _set("uplink_message.settings.data_rate", None),
    "data_rate empty": _set("uplink_message.settings.data_rate", {}),
    "top received_at empty, uplink's used": _set("received_at", ""),
    "top received_at null": _set("received_at", None),
    "received_at with offset": _set("received_at", "2024-05-14T11:21:07.5694+02:00"),
    "received_at lower z": _set("received_at", "2024-05-14T09:21:07.569498830z"),
    "received_at ten digits": _set("received_at", "2024-05-14T09:21:07.5694988301Z"),
    "dev_eui lower case": _set("end_device_ids.dev_eui", "a84041edd184a0c0"),
    "dev_eui empty": _set("end_device_ids.dev_eui", ""),
    "no application_ids": _del("end_device_ids.application_ids"),
    "simulated false": _set("simulated", False),
    "result key beside end_device_ids": _set("result", {"end_device_ids": {"device_id": "other"}}),
    "decoder errors empty": _set("uplink_message.decoded_payload.errors", []),
    "nested payload": _set(
        "uplink_message.decoded_payload.nested",
        {"a": [1, "2.5 V", {"b": True}], "c": None, "d": "text", "e": "nan", "f": "1e999", "g": "3.3%"},
    ),
    "BatV alias": lambda m: m["uplink_message"]["decoded_payload"].update(BatV=3.1, temp_DS18B20="-1.5"),
    "unicode strings": _set("uplink_message.decoded_payload.Node_type", "LSE01 °C ✓ \U0001f600"),
    "empty payload": _set("uplink_message.decoded_payload", {}),
}


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_variants_that_take_the_dict_path(name: str) -> None:
    msg = template()
    FALLBACK[name](msg)
    data = dumps(msg)
    assert not takes_fast_path(data, PARSERS["default"])
    assert_same(data)
    assert_same(data.decode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("name", sorted(FAST))
def test_variants_on_the_fast_path(name: str) -> None:
    msg = template()
    FAST[name](msg)
    data = dumps(msg)
    assert takes_fast_path(data, PARSERS["default"])
    assert_same(data)
    assert_same(data.decode())
    assert_same(bytearray(data))


@pytest.mark.parametrize(
    "data",
    [
        b'{"result": ' + shared_path("ttn", *TEMPLATE).read_bytes() + b"}",
        b"",
        b"   ",
        b"[1, 2]",
        b'"uplink"',
        b"null",
        b"{",
        b'{"end_device_ids": {"device_id": "x"}} trailing',
        b"\xef\xbb\xbf{}",  # UTF-8 BOM: json.loads accepts it in bytes
        '\ufeff{"end_device_ids": {"device_id": "x"}}',
        "{}".encode("utf-16"),
        b'{"received_at": NaN}',
        b'{"received_at": Infinity}',
        '{"x": "\ud800"}',  # a lone surrogate in str input
    ],
    ids=repr,
)
def test_odd_documents(data: bytes | str) -> None:
    assert_same(data)


def _into_template(extra: bytes) -> bytes:
    """The compact template with raw JSON text spliced in as a first (unknown) key."""
    return b'{"zz":' + extra + b"," + dumps(template())[1:]


@pytest.mark.parametrize(
    "extra",
    [
        b'"\xff"',  # invalid UTF-8 in a field msgspec skips: json.loads rejects it
        b'"\xc0\xaf"',  # overlong encoding
        b'"\xed\xa0\x80"',  # an encoded surrogate: json.loads accepts it (surrogatepass)
        b'"\\ud800"',
        b'"\\ud83d\\ude00"',
        b'"caf\xc3\xa9"',
        b"NaN",
        b"-Infinity",
        b"1e999",
        b"1" * 500,
        b"[" * 100 + b"]" * 100,
        b"[" * 3000 + b"]" * 3000,  # both paths hit the recursion limit
    ],
    ids=repr,
)
def test_unusual_json_in_skipped_fields(extra: bytes) -> None:
    assert_same(_into_template(extra))


def test_duplicate_keys_last_wins_on_both_paths() -> None:
    body = dumps(template())[1:]
    data = b'{"uplink_message":{"f_port":9},"end_device_ids":{"device_id":"gone"},' + body
    assert assert_same(data)[0] == "ok"
    data = b"{" + body[:-1] + b',"simulated":false,"simulated":true}'
    assert assert_same(data)[0] == "event"
    payload = b'{"a":1,"b":"x","a":"2.5"}'
    msg = dumps(template()).replace(b'"decoded_payload":{', b'"decoded_payload":' + payload + b',"x":{', 1)
    assert assert_same(msg)[0] == "ok"


def test_memoryview_is_read_as_bytes() -> None:
    data = next(_bench_uplinks(1))
    p = PARSERS["default"]
    assert p.parse_bytes(memoryview(data)) == p.parse(parse_message(data))
    assert outcome(lambda: p.parse_bytes(memoryview(b"[]"))) == outcome(lambda: p.parse(parse_message(b"[]")))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["3.384 V", "19.57%", " 24.1 ", "1_000", "inf", "-0", "0x10", "1e5", "٣"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8))
def test_any_decoded_payload(decoded: dict[str, Any]) -> None:
    msg = json.loads(shared_path("ttn", *TEMPLATE).read_bytes())
    msg["uplink_message"]["decoded_payload"] = decoded
    data = json.dumps(msg).encode()
    assert_same(data, PARSERS["default"])
    assert_same(data, PARSERS["drop-strings"])


# -- the node --------------------------------------------------------------------------------

FLOW = {
    "id": "ttn",
    "nodes": [
        {
            "id": "ttn",
            "type": "ttn-uplink",
            "wires": {"out": ["readings"], "events": ["events"], "error": ["errors"]},
        },
        {"id": "readings", "type": "collect"},
        {"id": "events", "type": "collect"},
        {"id": "errors", "type": "collect"},
    ],
}


async def test_node_bytes_str_and_dict_payloads_give_the_same_messages() -> None:
    raws = [r for _name, r in _shared_messages() if not _name.startswith("test_vectors")]
    raws += list(_bench_uplinks(5))
    outputs: list[list[Any]] = []
    for form in ("bytes", "str", "dict"):
        async with run_flow(FLOW) as h:
            for raw in raws:
                try:
                    payload: Any = {"bytes": raw, "str": raw.decode(), "dict": json.loads(raw)}[form]
                except ValueError:
                    continue  # the malformed sample has no dict form
                await h.send("ttn", payload)
            await h.idle()
            outputs.append(
                [
                    [(m.payload, m.meta.get("device_id"), m.meta.get("ttn_event")) for m in h.received(port)]
                    for port in ("readings", "events")
                ]
            )
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0][0]) >= 48


def test_shared_data_is_found() -> None:
    assert isinstance(shared_path("ttn"), Path)
