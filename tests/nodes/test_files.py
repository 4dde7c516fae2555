"""file-in, watch and zip: file messages from real files, real inotify events and real archives."""

from __future__ import annotations

import asyncio
import io
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from engine.message import Message
from nodes.files import WatchNode, file_message, glob_base, glob_match, passive_watch
from tests.flowkit import FlowHarness, run_flow


async def wait_for(h: FlowHarness, node: str, n: int, timeout: float = 10.0) -> list[Message]:
    deadline = time.monotonic() + timeout
    while len(h.received(node)) < n:
        assert time.monotonic() < deadline, f"only {len(h.received(node))} of {n} messages arrived at {node}"
        await asyncio.sleep(0.01)
    return h.received(node)


def file_meta(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "name": path.name, "size": st.st_size, "mtime": st.st_mtime}


# -- file-in --------------------------------------------------------------------------------------


def file_in_flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "read", "type": "file-in", "wires": {"out": ["out"], "error": ["bad"]}, **config},
            {"id": "out", "type": "collect"},
            {"id": "bad", "type": "collect"},
        ],
    }


async def test_file_in_reads_the_path_in_the_payload_as_raw_bytes(tmp_path: Path) -> None:
    f = tmp_path / "Wasserstand.csv"
    f.write_bytes("Datum;Wasserstand\r\n01.02.2020;35,1\r\n".encode("latin-1") + b"\xe4")
    async with run_flow(file_in_flow()) as h:
        await h.send("read", str(f), "trigger", keep="me")
        [msg] = await wait_for(h, "out", 1)
    assert msg.payload == f.read_bytes()
    assert msg.topic == str(f)
    assert msg.meta["file"] == file_meta(f)
    assert msg.meta["keep"] == "me"


async def test_file_in_reads_the_configured_path_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    f = tmp_path / "data" / "a.csv"
    f.write_bytes(b"x\n1\n")
    monkeypatch.chdir(tmp_path)
    async with run_flow(file_in_flow(path="data/a.csv")) as h:
        await h.send("read", "ignored")
        [msg] = await wait_for(h, "out", 1)
    assert (msg.payload, msg.topic, msg.meta["file"]) == (b"x\n1\n", str(f), file_meta(f))


async def test_file_in_reports_missing_and_unreadable_files_with_the_reason(tmp_path: Path) -> None:
    async with run_flow(file_in_flow()) as h:
        await h.send("read", str(tmp_path / "missing.csv"))
        await h.send("read", str(tmp_path))
        await h.send("read", {"path": "x"})
        errors = await wait_for(h, "bad", 3)
    assert [(e.meta["error"]["class"], e.meta["error"]["message"]) for e in errors] == [
        ("FileReadError", f"cannot read {tmp_path / 'missing.csv'}: No such file or directory"),
        ("FileReadError", f"cannot read {tmp_path}: Is a directory"),
        ("MessageError", "no file to read: `path` is not set and the payload is a dict, not a file path"),
    ]
    assert "MessageError" in errors[0].meta["error"]["classes"]
    assert h.received("out") == []


# -- watch ----------------------------------------------------------------------------------------


def watch_flow(paths: list[str], **config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "w", "type": "watch", "paths": paths, "wires": ["out"], **config},
            {"id": "out", "type": "collect"},
        ],
    }


async def test_watch_emits_existing_matches_sorted_at_start(tmp_path: Path) -> None:
    for name in ("b.csv", "a.csv", "c.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.csv").write_text("d")
    async with run_flow(watch_flow([f"{tmp_path}/*.csv", f"{tmp_path}/*.zip"], debounce="100ms")) as h:
        msgs = await wait_for(h, "out", 2)
        # a sentinel created now arrives after anything else the start could have emitted
        (tmp_path / "z.zip").write_bytes(b"z")
        msgs = await wait_for(h, "out", 3)
    assert [(m.topic, m.payload) for m in msgs] == [
        (str(tmp_path / "a.csv"), b"a.csv"),
        (str(tmp_path / "b.csv"), b"b.csv"),
        (str(tmp_path / "z.zip"), b"z"),
    ]
    assert msgs[0].meta["file"] == file_meta(tmp_path / "a.csv")


async def test_watch_emits_a_new_file_and_ignores_non_matching_ones(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text("old")
    async with run_flow(watch_flow([f"{tmp_path}/*.csv"], debounce="100ms")) as h:
        await wait_for(h, "out", 1)  # the initial scan runs once the watcher is subscribed
        (tmp_path / "notes.txt").write_text("no")
        (tmp_path / "new.CSV").write_text("no: glob matching is case-sensitive")
        (tmp_path / "new.csv").write_text("Datum;Wert\n")
        msg = (await wait_for(h, "out", 2))[1]
        (tmp_path / "sentinel.csv").write_text("s")
        msgs = await wait_for(h, "out", 3)
    assert [m.topic for m in msgs] == [
        str(tmp_path / "old.csv"),
        str(tmp_path / "new.csv"),
        str(tmp_path / "sentinel.csv"),
    ]
    assert msg.payload == b"Datum;Wert\n"
    assert msg.meta["file"] == file_meta(tmp_path / "new.csv")


async def test_watch_without_initial_emits_only_what_changes(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text("old")
    async with run_flow(watch_flow([f"{tmp_path}/*.csv"], initial=False, debounce="100ms")) as h:
        deadline = time.monotonic() + 10
        n = 0
        while not h.received("out"):  # the watcher subscribes at some point after start
            assert time.monotonic() < deadline, "new.csv never arrived"
            n += 1
            (tmp_path / "new.csv").write_text(f"version {n}")
            await asyncio.sleep(0.3)
        first = h.received("out")[0]
    assert first.topic == str(tmp_path / "new.csv")
    assert first.payload.startswith(b"version ")


async def test_watch_emits_a_file_written_in_steps_once_when_complete(tmp_path: Path) -> None:
    f = tmp_path / "station.csv"
    f.write_bytes(b"v1\n")
    async with run_flow(watch_flow([f"{tmp_path}/*.csv"], debounce="1s")) as h:
        [first] = await wait_for(h, "out", 1)
        assert first.payload == b"v1\n"
        with f.open("ab") as out:
            for i in range(5):
                out.write(f"row {i}\n".encode())
                out.flush()
                os.fsync(out.fileno())
                await asyncio.sleep(0.1)  # longer than watchfiles groups events (50 ms)
        changed = (await wait_for(h, "out", 2))[1]
        (tmp_path / "sentinel.csv").write_text("s")
        msgs = await wait_for(h, "out", 3)
    assert changed.payload == b"v1\nrow 0\nrow 1\nrow 2\nrow 3\nrow 4\n"
    assert changed.meta["file"]["size"] == len(changed.payload)
    assert [m.topic for m in msgs] == [str(f), str(f), str(tmp_path / "sentinel.csv")]


async def test_watch_emits_a_file_saved_atomically_by_rename(tmp_path: Path) -> None:
    async with run_flow(watch_flow([f"{tmp_path}/*.csv"], debounce="100ms")) as h:
        (tmp_path / "first.csv").write_text("1")
        await wait_for(h, "out", 1)
        tmp = tmp_path / ".station.csv.part"
        tmp.write_text("complete content")
        os.replace(tmp, tmp_path / "station.csv")
        msgs = await wait_for(h, "out", 2)
        (tmp_path / "sentinel.csv").write_text("s")
        msgs = await wait_for(h, "out", 3)
    assert [(m.topic, m.payload) for m in msgs[1:]] == [
        (str(tmp_path / "station.csv"), b"complete content"),
        (str(tmp_path / "sentinel.csv"), b"s"),
    ]


async def test_watch_recursive_glob(tmp_path: Path) -> None:
    deep = tmp_path / "2024" / "jan"
    deep.mkdir(parents=True)
    (deep / "a.csv").write_text("a")
    async with run_flow(watch_flow([f"{tmp_path}/**/*.csv"], debounce="100ms")) as h:
        [initial] = await wait_for(h, "out", 1)
        assert initial.topic == str(deep / "a.csv")
        (deep / "b.csv").write_text("b")
        msgs = await wait_for(h, "out", 2)
    assert msgs[1].topic == str(deep / "b.csv")


async def test_watch_stops_cleanly(tmp_path: Path) -> None:
    async with run_flow(watch_flow([f"{tmp_path}/*.csv"], debounce="100ms")) as h:
        node = h.engine.node("w")
        assert isinstance(node, WatchNode)
        watcher = node._watcher
        assert watcher is not None
        assert not watcher.done()
    assert watcher.done()
    assert not watcher.cancelled()  # ended by the stop event, not cancelled
    assert node._watcher is None


async def test_watch_in_import_mode_neither_scans_nor_watches(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("a")
    with passive_watch():
        async with run_flow(watch_flow([f"{tmp_path}/*.csv"], debounce="100ms")) as h:
            node = h.engine.node("w")
            assert isinstance(node, WatchNode)
            assert node._watcher is None
            assert h.engine.runtimes["w"].status.text == "import mode: not watching"
            await h.idle()
    assert h.received("out") == []


async def test_watch_missing_directory_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    async with run_flow(watch_flow([f"{tmp_path}/nope/*.csv"])) as h:
        await h.idle()
        status = h.engine.runtimes["w"].status
    assert (status.level, status.text) == ("warning", f"missing: {tmp_path}/nope")


def test_glob_helpers() -> None:
    assert glob_base("/data/gw/*.csv") == Path("/data/gw")
    assert glob_base("/data/*/x/*.csv") == Path("/data")
    assert glob_match("/data/gw/a.csv", "/data/gw/*.csv")
    assert not glob_match("/data/gw/sub/a.csv", "/data/gw/*.csv")
    assert glob_match("/data/gw/sub/deeper/a.csv", "/data/**/*.csv")
    assert glob_match("/data/a.csv", "/data/**/*.csv")


# -- zip ------------------------------------------------------------------------------------------


def make_zip(members: dict[str, bytes], *, dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d, date_time=(2024, 3, 1, 12, 0, 0)), b"")
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 3, 1, 12, 30, 0)), data)
    return buf.getvalue()


def zip_flow(**config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "read", "type": "file-in", "wires": ["unzip"]},
            {"id": "unzip", "type": "zip", "wires": {"out": ["out"], "error": ["bad"]}, **config},
            {"id": "out", "type": "collect"},
            {"id": "bad", "type": "collect"},
        ],
    }


async def test_zip_emits_matching_members_as_file_messages(tmp_path: Path) -> None:
    archive = tmp_path / "38404690,52.157338,12.607846.zip"
    archive.write_bytes(
        make_zip(
            {"a.csv": b"a;1\n", "sub/b.csv": b"b;2\n", "readme.txt": b"no", "__MACOSX/._a.csv": b"\x00\x05"},
            dirs=("sub/", "empty.csv/"),
        )
    )
    async with run_flow(zip_flow(members="*.csv")) as h:
        await h.send("read", str(archive))
        await h.idle()
        msgs = h.received("out")
    mtime = time.mktime((2024, 3, 1, 12, 30, 0, 0, 0, -1))
    assert [(m.topic, m.payload, m.meta["file"]) for m in msgs] == [
        (
            f"{archive}!a.csv",
            b"a;1\n",
            {
                "path": f"{archive}!a.csv",
                "name": "a.csv",
                "archive": str(archive),
                "archive_name": archive.name,
                "size": 4,
                "mtime": mtime,
            },
        ),
        (
            f"{archive}!sub/b.csv",
            b"b;2\n",
            {
                "path": f"{archive}!sub/b.csv",
                "name": "b.csv",
                "archive": str(archive),
                "archive_name": archive.name,
                "size": 4,
                "mtime": mtime,
            },
        ),
    ]
    assert h.received("bad") == []


async def test_zip_member_path_pattern_and_default_all(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    archive.write_bytes(make_zip({"a.csv": b"a", "sub/b.csv": b"b", "readme.txt": b"r"}, dirs=("sub/",)))
    async with run_flow(zip_flow(members="sub/*.csv")) as h:
        await h.send("read", str(archive))
        await h.idle()
        assert [m.meta["file"]["name"] for m in h.received("out")] == ["b.csv"]
    async with run_flow(zip_flow()) as h:
        await h.send("read", str(archive))
        await h.idle()
        assert [m.meta["file"]["name"] for m in h.received("out")] == ["a.csv", "b.csv", "readme.txt"]


async def test_zip_passes_other_payloads_through_unchanged(tmp_path: Path) -> None:
    f = tmp_path / "plain.csv"
    f.write_bytes(b"Datum;Wert\n")
    async with run_flow(zip_flow()) as h:
        await h.send("read", str(f))
        await h.send("unzip", "some text", "t")
        await h.idle()
        msgs = sorted(h.received("out"), key=lambda m: m.topic or "")
    assert [(m.topic, m.payload) for m in msgs] == [(str(f), b"Datum;Wert\n"), ("t", "some text")]
    assert msgs[0].meta["file"] == file_meta(f)


async def test_zip_corrupt_archive_is_a_decode_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    good = make_zip({"a.csv": b"a" * 1000})
    # a member whose compressed data is damaged: the CRC check fails while inflating
    damaged_data = bytearray(good)
    start = good.index(b"a.csv") + len("a.csv")
    damaged_data[start + 2 : start + 6] = b"\xff\xff\xff\xff"
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(damaged_data))
    async with run_flow(zip_flow()) as h:
        await h.send("read", str(broken))
        await h.send("read", str(damaged))
        await h.idle()
        errors = h.received("bad")
        assert h.received("out") == []
    assert [e.meta["error"]["class"] for e in errors] == ["DecodeError", "DecodeError"]
    assert (
        errors[0].meta["error"]["message"] == f"{broken}: not a readable ZIP archive: File is not a zip file"
    )
    assert errors[1].meta["error"]["message"].startswith(f"{damaged}!a.csv: cannot be extracted: ")


async def test_zip_bomb_guard_rejects_oversized_members(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(make_zip({"small.csv": b"x" * 100, "huge.csv": b"0" * 1_000_000}))
    async with run_flow(zip_flow(max_member_size=1000)) as h:
        await h.send("read", str(archive))
        await h.idle()
        [small] = h.received("out")
        [err] = h.received("bad")
    assert small.payload == b"x" * 100
    assert err.meta["error"]["class"] == "ZipMemberTooLarge"
    assert "DecodeError" in err.meta["error"]["classes"]
    assert (
        err.meta["error"]["message"]
        == f"{archive}!huge.csv: 1000000 bytes uncompressed, more than 1000 allowed"
    )


def test_zip_member_whose_declared_size_lies_is_rejected(tmp_path: Path) -> None:
    """zipfile stops at the declared size; the CRC then fails: an error, never a huge buffer."""
    from engine.errors import DecodeError
    from nodes.files import ZipNode

    zf = zipfile.ZipFile(io.BytesIO(make_zip({"huge.csv": b"0" * 100_000})))
    [info] = zf.infolist()
    info.file_size = 10  # what a hostile central directory would claim
    node = ZipNode.__new__(ZipNode)
    node.config = ZipNode.Config.model_validate({"max_member_size": 1000})
    with pytest.raises(DecodeError) as err:
        node._read(zf, info, "bomb.zip")
    assert str(err.value) == "bomb.zip!huge.csv: cannot be extracted: Bad CRC-32 for file 'huge.csv'"


def test_file_message_helper(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_bytes(b"abc")
    msg = file_message(f)
    assert (msg.payload, msg.topic, msg.meta) == (b"abc", str(f), {"file": file_meta(f)})
