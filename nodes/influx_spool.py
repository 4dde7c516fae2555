"""On-disk spool for line-protocol batches InfluxDB could not take yet.

Layout: a directory of segment files ``0000000000000001.lp``, ``...2.lp`` (oldest
first). Each segment is a sequence of records, one per batch::

    # klimaflow-spool v1 n=3 bytes=61 crc=1a2b3c4d lens=20,20,19
    <the batch's lines joined by "\\n">

The header is a line-protocol comment, so a segment is still valid line protocol
(``curl --data-binary @0000000000000001.lp .../write?db=...`` replays it by hand).
``lens`` gives each line's length in characters because a string field may contain a
raw newline; ``crc`` and ``bytes`` detect a record torn by a crash (its batch was never
acknowledged, so its source still has it).

A segment is only ever appended to by the process that created it and is deleted as a
whole once all its records were written to InfluxDB, so a crash at any point leaves
either whole records or a torn tail. Replaying a record twice (crash after the write,
before the delete) is harmless: InfluxDB overwrites identical points.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("klimaflow.influx_spool")

_HEADER_RE = re.compile(rb"^# klimaflow-spool v1 n=(\d+) bytes=(\d+) crc=([0-9a-f]{8}) lens=([0-9,]*)\n$")
_SEGMENT_RE = re.compile(r"^(\d{16})\.lp$")


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled batch: where it lives and its lines."""

    segment: Path
    lines: list[str]
    nbytes: int


def encode_record(lines: list[str]) -> bytes:
    body = "\n".join(lines).encode("utf-8")
    lens = ",".join(str(len(line)) for line in lines)
    header = (
        f"# klimaflow-spool v1 n={len(lines)} bytes={len(body)} crc={zlib.crc32(body):08x} lens={lens}\n"
    ).encode("ascii")
    return header + body + b"\n"


def decode_records(data: bytes) -> tuple[list[list[str]], int]:
    """Records of a segment's bytes, and how many trailing bytes were torn or corrupt."""
    out: list[list[str]] = []
    pos = 0
    size = len(data)
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        m = _HEADER_RE.match(data[pos : nl + 1])
        if not m:
            break
        n, nbytes, crc = int(m.group(1)), int(m.group(2)), int(m.group(3), 16)
        start = nl + 1
        end = start + nbytes
        if end + 1 > size or data[end : end + 1] != b"\n":
            break
        body = data[start:end]
        if zlib.crc32(body) != crc:
            break
        text = body.decode("utf-8")
        lens = [int(x) for x in m.group(4).split(b",")] if n else []
        lines: list[str] = []
        i = 0
        for ln in lens:
            lines.append(text[i : i + ln])
            i += ln + 1
        out.append(lines)
        pos = end + 1
    return out, size - pos


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """How much a spool holds: what the node's status and ``/metrics`` report."""

    bytes: int
    points: int


class Spool:
    """FIFO of batches on disk, bounded in bytes. Not thread-safe: one writer task uses it."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, segment_bytes: int | None = None):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(1, min(16 * 1024 * 1024, max_bytes // 16))
        self.bytes = 0
        self.points = 0
        self.corrupt_bytes = 0
        self._segments: deque[Path] = deque()
        self._sizes: dict[Path, int] = {}
        self._points: dict[Path, int] = {}
        self._next_seq = 1
        self._current: Path | None = None
        self._head: deque[Record] | None = None
        self._head_path: Path | None = None

    # -- opening --------------------------------------------------------------------------

    def open(self) -> Spool:
        """Pick up segments left by an earlier run (they are replayed first)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        found = sorted(
            (int(m.group(1)), p)
            for p in self.dir.iterdir()
            if (m := _SEGMENT_RE.match(p.name)) and p.is_file()
        )
        for seq, path in found:
            data = path.read_bytes()
            records, torn = decode_records(data)
            if torn:
                log.warning(
                    "spool segment %s: %d byte(s) at the end are torn or corrupt and are skipped",
                    path,
                    torn,
                )
                self.corrupt_bytes += torn
            npoints = sum(len(r) for r in records)
            if not records:
                path.unlink()
                continue
            self._segments.append(path)
            self._sizes[path] = len(data)
            self._points[path] = npoints
            self.bytes += len(data)
            self.points += npoints
            self._next_seq = max(self._next_seq, seq + 1)
        return self

    @property
    def empty(self) -> bool:
        return not self._segments

    @property
    def segments(self) -> int:
        return len(self._segments)

    def stats(self) -> SpoolStats:
        """A snapshot, safe to hand to other tasks (the counters change as the writer works)."""
        return SpoolStats(self.bytes, self.points)

    def has_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit; an empty spool takes any one batch, so nothing deadlocks."""
        return self.bytes == 0 or self.bytes + nbytes <= self.max_bytes

    # -- writing --------------------------------------------------------------------------

    def append(self, data: bytes, npoints: int) -> None:
        """Append one encoded record (see :func:`encode_record`) durably (fsync) before returning."""
        path = self._current
        new = path is None or self._sizes.get(path, 0) >= self.segment_bytes
        if new:
            path = self.dir / f"{self._next_seq:016d}.lp"
            self._next_seq += 1
        assert path is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            self._fsync_dir()
            self._segments.append(path)
            self._sizes[path] = 0
            self._points[path] = 0
            self._current = path
        self._sizes[path] += len(data)
        self._points[path] += npoints
        self.bytes += len(data)
        self.points += npoints

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading --------------------------------------------------------------------------

    def peek(self) -> Record | None:
        """The oldest record not yet committed, or None if the spool is empty."""
        while self._segments:
            path = self._segments[0]
            if self._head_path != path or self._head is None:
                if path == self._current:
                    self._current = None  # appends go to a new segment from now on
                records, torn = decode_records(path.read_bytes())
                self.corrupt_bytes += torn
                self._head = deque(Record(path, r, 0) for r in records)
                self._head_path = path
            if self._head:
                return self._head[0]
            self._drop_head()
        return None

    def commit(self, record: Record) -> None:
        """Forget ``record`` (it was written); deletes its segment once all its records were."""
        assert self._head
        assert self._head[0] is record
        self._head.popleft()
        self._points[record.segment] -= len(record.lines)
        self.points -= len(record.lines)
        if not self._head:
            self._drop_head()

    def _drop_head(self) -> None:
        path = self._segments.popleft()
        self.bytes -= self._sizes.pop(path, 0)
        self.points -= self._points.pop(path, 0)
        self._head = None
        self._head_path = None
        if self._current == path:
            self._current = None
        path.unlink(missing_ok=True)
