"""The on-disk spool: order, durability across reopen, torn tails, limits."""

from __future__ import annotations

from pathlib import Path

from nodes.influx_spool import Spool, decode_records, encode_record


def spool_lines(sp: Spool) -> list[list[str]]:
    out = []
    while (rec := sp.peek()) is not None:
        out.append(rec.lines)
        sp.commit(rec)
    return out


def test_records_come_back_in_order_and_segments_are_deleted(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10_000, segment_bytes=50).open()
    batches = [[f"m v={i}{j} {i}{j}" for j in range(3)] for i in range(5)]
    for b in batches:
        sp.append(encode_record(b), len(b))
    assert sp.points == 15
    assert sp.segments == 5  # each record exceeds the 50-byte segment size
    assert spool_lines(sp) == batches
    assert sp.empty
    assert sp.points == 0
    assert sp.bytes == 0
    assert list(tmp_path.iterdir()) == []


def test_reopen_replays_what_an_earlier_run_left(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10_000).open()
    sp.append(encode_record(["a v=1 1", 'b s="two\nlines" 2']), 2)
    sp.append(encode_record(["c v=3 3"]), 1)
    first = sp.peek()
    assert first is not None
    assert first.lines == ["a v=1 1", 'b s="two\nlines" 2']
    # "crash": a new instance on the same directory sees both records, then appends after them
    sp2 = Spool(tmp_path, max_bytes=10_000).open()
    assert sp2.points == 3
    sp2.append(encode_record(["d v=4 4"]), 1)
    assert spool_lines(sp2) == [["a v=1 1", 'b s="two\nlines" 2'], ["c v=3 3"], ["d v=4 4"]]


def test_segment_is_valid_line_protocol_with_comment_headers(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=10_000).open()
    sp.append(encode_record(["m v=1 1", "m v=2 2"]), 2)
    (seg,) = tmp_path.iterdir()
    text = seg.read_text()
    assert text.splitlines()[1:] == ["m v=1 1", "m v=2 2"]
    assert text.startswith("# klimaflow-spool v1 n=2 bytes=15 crc=")


def test_torn_tail_is_skipped_not_fatal(tmp_path: Path) -> None:
    good = encode_record(["m v=1 1"])
    torn = encode_record(["m v=2 2", "m v=3 3"])[:-5]
    assert decode_records(good + torn) == ([["m v=1 1"]], len(torn))
    (tmp_path / "0000000000000001.lp").write_bytes(good + torn)
    sp = Spool(tmp_path, max_bytes=10_000).open()
    assert sp.corrupt_bytes == len(torn)
    assert spool_lines(sp) == [["m v=1 1"]]


def test_room_is_bounded_but_an_empty_spool_takes_one_batch(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=100).open()
    big = encode_record(["m v=1 1"] * 20)
    assert len(big) > 100
    assert sp.has_room(len(big))
    sp.append(big, 20)
    assert not sp.has_room(1)
    spool_lines(sp)
    small = encode_record(["m v=1 1"])
    sp.append(small, 1)
    assert sp.has_room(100 - len(small))
    assert not sp.has_room(101 - len(small))
