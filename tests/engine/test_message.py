"""Message envelope and Delivery reference counting."""

from __future__ import annotations

import threading

import pytest

from engine.message import Delivery, Message, merge_deliveries, new_message_id, release_all, retain_all


def test_copy_deep_copies_payload_and_meta_and_retains_deliveries() -> None:
    settled: list[bool] = []
    d = Delivery(settled.append)
    msg = Message({"t": [1, 2]}, "a/b", meta={"parts": {"index": 0}}, deliveries=(d,))
    cp = msg.copy()
    assert (cp.id, cp.topic, cp.entered_at, cp.payload, cp.meta) == (
        msg.id,
        "a/b",
        msg.entered_at,
        {"t": [1, 2]},
        {"parts": {"index": 0}},
    )
    cp.payload["t"].append(3)
    cp.meta["parts"]["index"] = 9
    assert msg.payload == {"t": [1, 2]}
    assert msg.meta == {"parts": {"index": 0}}
    assert cp.deliveries == (d,)
    assert d.pending == 2
    msg.release()
    assert settled == []
    cp.release()
    assert settled == [True]


def test_a_payload_that_cannot_be_copied_does_not_leak_a_retain() -> None:
    d = Delivery()
    msg = Message({"lock": threading.Lock()}, deliveries=(d,))
    with pytest.raises(TypeError):
        msg.copy()
    assert d.pending == 1


def test_derive_keeps_identity_and_deliveries_with_a_new_payload() -> None:
    d = Delivery()
    msg = Message([1, 2], "rows", meta={"file": {"name": "a.csv"}}, deliveries=(d,))
    part = msg.derive(1, parts={"index": 0, "count": 2})
    assert (part.id, part.topic, part.entered_at, part.payload) == (msg.id, "rows", msg.entered_at, 1)
    assert part.meta == {"file": {"name": "a.csv"}, "parts": {"index": 0, "count": 2}}
    part.meta["file"]["name"] = "changed"
    assert msg.meta == {"file": {"name": "a.csv"}}  # no nested sharing
    assert d.pending == 2


def test_to_dict_and_update_from_dict_round_trip() -> None:
    msg = Message({"t": 21.5}, "sensors/1", meta={"device": "lse01", "rssi": -80})
    view = msg.to_dict()
    assert view == {
        "payload": {"t": 21.5},
        "topic": "sensors/1",
        "_msgid": msg.id,
        "entered_at": msg.entered_at,
        "device": "lse01",
        "rssi": -80,
    }
    other = Message()
    other.update_from_dict(view)
    assert (other.payload, other.topic, other.meta) == (
        {"t": 21.5},
        "sensors/1",
        {"device": "lse01", "rssi": -80},
    )
    assert other.id != msg.id  # identity is not part of the editable view
    view["topic"] = 7
    view["added"] = True
    del view["rssi"]
    msg.update_from_dict(view)
    assert (msg.topic, msg.meta) == ("7", {"device": "lse01", "added": True})
    msg.update_from_dict({"payload": 1, "topic": None})
    assert (msg.payload, msg.topic, msg.meta) == (1, None, {})


def test_delivery_settles_once_and_remembers_failure() -> None:
    results: list[bool] = []
    d = Delivery(results.append)
    d.retain(2)
    d.release()
    d.release(ok=False)
    assert (results, d.settled, d.pending) == ([], False, 1)
    d.release()
    assert (results, d.settled, d.pending) == ([False], True, 0)
    d.retain()
    d.release()  # after settling, nothing changes and nothing is reported again
    assert (results, d.pending) == ([False], 0)


def test_merge_deliveries_retains_each_distinct_delivery_once() -> None:
    a, b = Delivery(), Delivery()
    msgs = [Message(1, deliveries=(a,)), Message(2, deliveries=(a, b)), Message(3)]
    assert merge_deliveries(msgs) == (a, b)
    assert (a.pending, b.pending) == (2, 2)


def test_message_ids_are_unique() -> None:
    ids = {new_message_id() for _ in range(1000)} | {Message().id for _ in range(1000)}
    assert len(ids) == 2000


def test_retain_all_and_release_all_count_per_message_across_shared_and_separate_deliveries() -> None:
    settled: list[tuple[str, bool]] = []
    shared = Delivery(lambda ok: settled.append(("shared", ok)))
    own = Delivery(lambda ok: settled.append(("own", ok)))
    msgs = [Message(i, deliveries=(shared,)) for i in range(3)]
    msgs.insert(1, Message("x", deliveries=(own,)))
    msgs.append(Message("none"))
    retain_all(msgs)  # a hop: every message holds one more reference
    assert (shared.pending, own.pending) == (4, 2)
    release_all(msgs)
    assert (shared.pending, own.pending) == (1, 1)
    assert settled == []
    shared.release()
    own.release(ok=False)
    assert settled == [("shared", True), ("own", False)]
