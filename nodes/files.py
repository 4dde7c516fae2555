"""``file-in``, ``watch`` and ``zip``: files as messages, the entry of every file importer.

A *file message* (shared by all three, consumed by the parsers)::

    payload  the raw content as bytes (never decoded: parsers detect the encoding)
    topic    the file path
    meta["file"] = {"path": absolute path, "name": basename, "size": int, "mtime": epoch s}

A ZIP member's path is ``/abs/x.zip!member.csv`` and its meta also names the ``archive``
and ``archive_name``.

Decisions, and why:

* **watch debounces per file and checks that the file stopped changing.** A download or a
  copy writes a file in many steps; inotify reports each one. A file is emitted only when
  no event arrived for ``debounce`` and its size and mtime are the same as at the last
  event, so a file is parsed once, complete, not once per chunk.
* **Unchanged files are not emitted again.** Touching a directory or an editor's atomic
  save can report a file whose content did not change (same size and mtime): skipped.
* **Deletions are ignored.** Imported data stays in the database when its source file goes.
* **zip guards against bombs** by the declared member size and again while inflating
  (declared sizes can lie), so a hostile archive cannot fill memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fnmatch
import glob
import io
import os
import zipfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import watchfiles
from pydantic import Field, field_validator

from engine.errors import DecodeError, MessageError
from engine.message import Message
from engine.node import Node
from engine.types import Duration, NodeConfig

#: False while ``klimaflow import`` starts a flow: watch nodes then neither scan nor watch,
#: the importer injects the files itself.
_SCANNING: ContextVar[bool] = ContextVar("klimaflow_watch_scanning", default=True)

_GLOB_CHARS = frozenset("*?[")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with members / an empty archive
#: Resource forks macOS's Finder adds to archives (``__MACOSX/._data.csv``): never data.
_MACOS_FORKS = "__MACOSX/"


@contextlib.contextmanager
def passive_watch() -> Iterator[None]:
    """Watch nodes started inside this block do not scan or watch their paths (import mode)."""
    token = _SCANNING.set(False)
    try:
        yield
    finally:
        _SCANNING.reset(token)


class FileReadError(MessageError):
    """A file named by a message or config could not be read (missing, a directory, no permission)."""


# -- file messages ------------------------------------------------------------------------------


def file_info(path: Path, size: int, mtime: float) -> dict[str, Any]:
    return {"path": str(path), "name": path.name, "size": size, "mtime": mtime}


def read_file(path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """Content and ``meta["file"]`` of a file; :class:`FileReadError` with the OS's reason."""
    p = Path(path).expanduser().absolute()
    try:
        with p.open("rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FileReadError(f"cannot read {p}: {reason}") from None
    return data, file_info(p, len(data), st.st_mtime)


def file_message(path: str | os.PathLike[str]) -> Message:
    """A new file message for ``path`` (what ``watch`` emits and ``klimaflow import`` injects)."""
    data, info = read_file(path)
    return Message(data, info["path"], meta={"file": info})


# -- globs ---------------------------------------------------------------------------------------


def glob_base(pattern: str) -> Path:
    """The directory part of ``pattern`` before its first wildcard: what has to be watched."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def glob_is_recursive(pattern: str) -> bool:
    """Whether matches can lie below the base directory's own entries."""
    rest = Path(pattern).relative_to(glob_base(pattern)) if Path(pattern).parts[:-1] else Path(pattern)
    return len(rest.parts) > 1


def _match_parts(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head = pattern[0]
    if head == "**":
        return any(_match_parts(path[i:], pattern[1:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], head) and _match_parts(path[1:], pattern[1:])


def glob_match(path: str | os.PathLike[str], pattern: str) -> bool:
    """Whether an absolute ``path`` matches an absolute ``pattern``; ``*`` never crosses ``/``."""
    return _match_parts(Path(path).parts, Path(pattern).parts)


# -- file-in ---------------------------------------------------------------------------------------


class FileInConfig(NodeConfig):
    """Which file to read. Without ``path`` the incoming message's payload names the file."""

    path: str | None = Field(
        default=None,
        description="File to read on every message (relative paths from the working directory); unset = the path in `msg.payload`.",
    )


class FileInNode(Node):
    """Read a file into a file message: payload = raw bytes, topic = path, `meta.file` = path, name, size, mtime.

    A missing or unreadable file goes to the error path as `FileReadError` with the reason.
    """

    type_name = "file-in"
    category = "storage"
    Config = FileInConfig
    color = "#e2d96e"
    icon = "file"
    config: FileInConfig

    async def on_message(self, msg: Message) -> None:
        path: Any = self.config.path if self.config.path is not None else msg.payload
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path.strip():
            raise MessageError(
                f"no file to read: `path` is not set and the payload is a {type(msg.payload).__name__}, "
                "not a file path"
            )
        data, info = await asyncio.to_thread(read_file, path)
        msg.payload = data
        msg.topic = info["path"]
        msg.meta["file"] = info
        await self.emit(msg)


# -- watch -------------------------------------------------------------------------------------------


class WatchConfig(NodeConfig):
    """Which files to watch. Globs: `*` and `?` within one path segment, `**` for any depth.

    Matching files are emitted as file messages at start (with ``initial``) and whenever
    one appears or changes, once it stopped changing for ``debounce``. Deleted files are
    not reported.
    """

    paths: list[str] = Field(
        min_length=1,
        description='Glob patterns, e.g. `["${GROUNDWATER_DIR:-data/groundwater}/*.csv"]`; relative to the working directory.',
    )
    initial: bool = Field(default=True, description="Emit every existing match at start, sorted by path.")
    debounce: Duration = Field(
        default=1.0,
        description="Quiet time after a file's last change before it is emitted (e.g. `500ms`, `2s`).",
    )

    @field_validator("paths")
    @classmethod
    def _no_empty(cls, value: list[str]) -> list[str]:
        for p in value:
            if not p.strip():
                raise ValueError("a path pattern cannot be empty")
        return value


class WatchNode(Node):
    """Emit a file message for every file matching the globs: at start and when one appears or changes.

    Uses the OS's file notifications (inotify) on the patterns' directories via `watchfiles`;
    a file written in several steps is emitted once, after it is complete.
    """

    type_name = "watch"
    category = "storage"
    Config = WatchConfig
    inputs = 0
    color = "#e2d96e"
    icon = "watch"
    config: WatchConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.patterns = [str(Path(p).expanduser().absolute()) for p in self.config.paths]
        self._stop = asyncio.Event()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) last emitted
        self._last: dict[str, tuple[int, int] | None] = {}  # path -> stat at the last event
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._watcher: asyncio.Task[None] | None = None
        self.scanning = True

    def matches(self, path: str) -> bool:
        return any(glob_match(path, p) for p in self.patterns)

    def existing(self) -> list[str]:
        found: set[str] = set()
        for p in self.patterns:
            found.update(x for x in glob.glob(p, recursive=True) if os.path.isfile(x))
        return sorted(found)

    async def start(self) -> None:
        self.scanning = _SCANNING.get()
        if not self.scanning:
            self.status("ok", "import mode: not watching")
            return
        dirs = sorted({str(glob_base(p)) for p in self.patterns})
        present = [d for d in dirs if _is_dir(d)]
        missing = [d for d in dirs if d not in present]
        if missing:
            self.log.warning("not watching missing directories: %s", ", ".join(missing))
            self.status("warning", f"missing: {', '.join(missing)}"[:120])
        else:
            self.status("ok", f"watching {len(present)} director{'y' if len(present) == 1 else 'ies'}")
        if present:
            recursive = any(glob_is_recursive(p) for p in self.patterns)
            self._watcher = asyncio.create_task(
                self._watch(present, recursive), name=f"{self.ctx.node_id}:watch"
            )
        # In a task: a long initial scan must not hold up the engine's start (emit can wait).
        self.ctx.spawn(self._emit_ready(), "emit")

    async def _watch(self, dirs: list[str], recursive: bool) -> None:
        def keep(change: watchfiles.Change, path: str) -> bool:
            return change != watchfiles.Change.deleted and self.matches(path)

        async for changes in watchfiles.awatch(
            *dirs,
            watch_filter=keep,
            recursive=recursive,
            stop_event=self._stop,
            debounce=max(50, int(self.config.debounce * 1000)),
            step=50,
            rust_timeout=500,
        ):
            for _change, path in changes:
                self._changed(path)

    def _changed(self, path: str) -> None:
        """(Re)start the file's quiet timer; called for every event of the file."""
        self._last[path] = _stat(path)
        old = self._timers.pop(path, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[path] = loop.call_later(self.config.debounce, self._settled, path)

    def _settled(self, path: str) -> None:
        self._timers.pop(path, None)
        now = _stat(path)
        if now is None:  # gone again (a temporary file)
            self._last.pop(path, None)
            return
        if now != self._last.get(path):  # still being written without events we saw: wait more
            self._changed(path)
            return
        self._last.pop(path, None)
        self._ready.put_nowait(path)

    async def _emit_ready(self) -> None:
        if self.config.initial:
            await asyncio.sleep(0)  # let the watcher subscribe first: nothing created meanwhile is missed
            for path in await asyncio.to_thread(self.existing):
                if self._stop.is_set():
                    return
                await self._emit_file(path)
        while True:
            path = await self._ready.get()
            if self._stop.is_set():
                return
            await self._emit_file(path)

    async def _emit_file(self, path: str) -> None:
        st = _stat(path)
        if st is None or self._seen.get(path) == st:
            return
        try:
            msg = await asyncio.to_thread(file_message, path)
        except FileReadError as exc:
            self.log.warning("%s", exc)
            self.status("warning", str(exc)[:120])
            return
        self._seen[path] = st
        await self.send(msg)

    async def pause(self) -> None:
        self._stop.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def stop(self) -> None:
        await self.pause()
        if self._watcher is not None:
            # The watcher thread checks the stop event every ``step`` (50 ms).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._watcher, 5.0)
            self._watcher = None


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# -- zip ------------------------------------------------------------------------------------------------


class ZipConfig(NodeConfig):
    """Which members to extract and how large one may be.

    Messages whose payload is not a ZIP archive pass through unchanged, so
    `watch (*.csv, *.zip) -> zip -> parser` handles both kinds of files.
    """

    members: str = Field(
        default="*",
        description="Glob of the members to emit, e.g. `*.csv`: without `/` it matches the file name in any folder, with `/` the whole member path (`data/*.csv`, `**` for any depth).",
    )
    max_member_size: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Largest uncompressed member in bytes; a larger one is an error (zip-bomb guard).",
    )


class ZipMemberTooLarge(DecodeError):
    """A ZIP member inflates beyond ``max_member_size``."""


class ZipNode(Node):
    """Split a ZIP archive into one file message per member (path `archive.zip!member`); other payloads pass through.

    A corrupt archive or member goes to the error path as `DecodeError`; a member larger
    than `max_member_size` as `ZipMemberTooLarge`. Directories and macOS resource forks
    (`__MACOSX/`) are skipped.
    """

    type_name = "zip"
    category = "parser"
    Config = ZipConfig
    color = "#e2d96e"
    icon = "archive"
    config: ZipConfig

    async def on_message(self, msg: Message) -> None:
        data = msg.payload
        if not isinstance(data, bytes | bytearray) or bytes(data[:4]) not in ZIP_MAGIC:
            await self.emit(msg)
            return
        info = msg.meta.get("file")
        archive = (
            str(info.get("path"))
            if isinstance(info, dict) and info.get("path")
            else (msg.topic or "archive.zip")
        )
        try:
            zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
            members = [
                m
                for m in zf.infolist()
                if not m.is_dir() and not m.filename.startswith(_MACOS_FORKS) and self._wanted(m.filename)
            ]
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DecodeError(f"{archive}: not a readable ZIP archive: {exc}") from None
        with zf:
            for member in members:
                content = await asyncio.to_thread(self._read, zf, member, archive)
                mtime = dt.datetime(*member.date_time).timestamp()
                path = f"{archive}!{member.filename}"
                out = msg.derive(
                    content,
                    file={
                        "path": path,
                        "name": Path(member.filename).name,
                        "archive": archive,
                        "archive_name": Path(archive).name,
                        "size": len(content),
                        "mtime": mtime,
                    },
                )
                out.topic = path
                await self.send(out)

    def _wanted(self, name: str) -> bool:
        pattern = self.config.members
        if "/" in pattern:
            return glob_match(name, pattern)
        return fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], pattern)

    def _read(self, zf: zipfile.ZipFile, member: zipfile.ZipInfo, archive: str) -> bytes:
        limit = self.config.max_member_size
        where = f"{archive}!{member.filename}"
        if member.file_size > limit:
            raise ZipMemberTooLarge(
                f"{where}: {member.file_size} bytes uncompressed, more than {limit} allowed"
            )
        buf = bytearray()
        try:
            with zf.open(member) as f:
                while chunk := f.read(min(1 << 20, limit + 1 - len(buf))):
                    buf += chunk
                    if len(buf) > limit:
                        raise ZipMemberTooLarge(f"{where}: inflates to more than {limit} bytes")
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise DecodeError(f"{where}: cannot be extracted: {exc}") from None
        return bytes(buf)
