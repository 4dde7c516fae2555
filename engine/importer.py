"""``klimaflow import FLOW FILE...``: run an importer flow once over files given by hand.

The flow runs in-process in a real :class:`~engine.runtime.Engine`, exactly as deployed
(its connections included), except that its ``watch`` nodes neither scan nor watch: each
given file is injected as a file message from the flow's entry node (``watch``,
``file-in`` or ``http-in``), as if it had just arrived there. When every message is
handled the engine stops with a drain, so ``influxdb-out`` flushes its last batch.

What is printed comes from the engine itself, not from guesses: points stored are the
``written`` counters of the ``influxdb-out`` nodes, rejected rows are the engine's error
events whose class chain contains ``RecordRejected`` (``file:line: reason``); every other
error event is printed too, because it also means data did not arrive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from engine.errors import ConfigError, FlowValidationError, KlimaflowError
from engine.message import Delivery
from engine.model import ERROR_PORT
from engine.runtime import Engine
from engine.validation import ValidatedDeployment, load_and_validate

#: Node types a file can enter an importer flow through.
ENTRY_TYPES = ("watch", "file-in", "http-in")

#: Exit codes: something stored / nothing stored / the flow cannot be used for an import.
EXIT_OK, EXIT_NOTHING, EXIT_INVALID = 0, 1, 2

ProgressCallback = Callable[[int, int, int], None]
"""Called as ``(files_done, files_total, points_stored)`` whenever a file is fully handled."""


class ImportSetupError(KlimaflowError):
    """The flow cannot take files: no entry node, several without ``--entry``, or an unknown one."""


@dataclass
class ImportResult:
    """What an import achieved, from the engine's counters and error events."""

    files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    points: int = 0
    not_stored: int = 0
    rejected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.points > 0 else EXIT_NOTHING

    def summary(self) -> str:
        return (
            f"{_plural(self.points, 'point')} stored from {_plural(len(self.files), 'file')}, "
            f"{_plural(len(self.rejected), 'row')} rejected"
        )

    def lines(self) -> list[str]:
        """Everything to print: rejected rows, other errors, then the summary."""
        out = list(self.rejected)
        out += [f"error: {e}" for e in self.errors]
        if self.not_stored:
            out.append(
                f"error: {_plural(self.not_stored, 'point')} could not be written "
                "(InfluxDB unreachable) and were not stored"
            )
        out.append(self.summary())
        return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def choose_entry(validated: ValidatedDeployment, entry: str | None) -> str:
    """The node the files enter through; :class:`ImportSetupError` says why there is none."""
    nodes = validated.deployment.nodes()
    if entry is not None:
        spec = nodes.get(entry)
        if spec is None:
            raise ImportSetupError(f"--entry {entry}: no node with this id in the flow")
        if spec.type not in ENTRY_TYPES:
            raise ImportSetupError(
                f"--entry {entry}: a {spec.type} node cannot take files (use a {', '.join(ENTRY_TYPES)} node)"
            )
        return entry
    candidates = sorted(nid for nid, spec in nodes.items() if spec.type in ENTRY_TYPES)
    # Files come in as files: a flow with a watch (or file-in) and an http-in upload
    # endpoint imports through the former unless --entry says otherwise.
    file_entries = [nid for nid in candidates if nodes[nid].type != "http-in"]
    if file_entries:
        candidates = file_entries
    if not candidates:
        raise ImportSetupError(f"the flow has no entry node for files (a {', '.join(ENTRY_TYPES)} node)")
    if len(candidates) > 1:
        raise ImportSetupError(
            f"the flow has several entry nodes ({', '.join(candidates)}): choose one with --entry NODE_ID"
        )
    return candidates[0]


def _stored_counters(engine: Engine) -> tuple[int, int]:
    """Points written and points only spooled, summed over the engine's influxdb-out nodes."""
    from nodes.influxdb import InfluxOutNode

    written = spooled = 0
    for rt in engine.runtimes.values():
        node = rt.node
        if isinstance(node, InfluxOutNode):
            written += int(node.stats["written"])
            spooled += int(node.stats["spooled"]) - int(node.stats["replayed"])
    return written, max(spooled, 0)


async def run_import(
    validated: ValidatedDeployment,
    files: Sequence[str | os.PathLike[str]],
    *,
    entry: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Run the flow once over ``files``; returns what was stored and rejected.

    ``data_dir`` defaults to a temporary directory: the import must not share spool files
    with a server running the same flow.
    """
    from nodes.files import FileReadError, file_message, passive_watch

    entry_id = choose_entry(validated, entry)
    result = ImportResult()
    with _data_dir(data_dir) as ddir:
        engine = Engine(validated, data_dir=ddir)

        def on_event(event: dict[str, Any]) -> None:
            if event.get("kind") != "error":
                return
            info = event.get("error") or {}
            message = str(info.get("message", ""))
            if "RecordRejected" in (info.get("classes") or ()):
                result.rejected.append(message)
            else:
                result.errors.append(f"node {event.get('node')}: {info.get('class')}: {message}")

        engine.subscribe(on_event)
        with passive_watch():
            await engine.start()
        try:
            rt = engine.runtimes[entry_id]
            ports = [p for p in rt.cls.output_ports(validated.node_configs[entry_id]) if p != ERROR_PORT]
            port = "out" if "out" in ports else (ports[0] if ports else "out")
            total = len(files)
            done = 0

            def settled(_ok: bool) -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, total, _stored_counters(engine)[0])

            for f in files:
                try:
                    msg = await asyncio.to_thread(file_message, f)
                except FileReadError as exc:
                    result.unreadable.append(str(f))
                    result.errors.append(str(exc))
                    settled(False)
                    continue
                result.files.append(msg.meta["file"]["path"])
                msg.deliveries = (Delivery(settled),)  # settles once every part is stored or failed
                try:
                    await rt.emit(msg, port)
                finally:
                    msg.release()
            await engine.wait_idle()
        finally:
            await engine.stop()
        result.points, result.not_stored = _stored_counters(engine)
    result.rejected.sort(key=_rejected_order(result.files))
    return result


def _rejected_order(files: list[str]) -> Callable[[str], tuple[int, int]]:
    """Rows by file (in the order given) and line; parsers of different nodes interleave."""
    index = {f: i for i, f in enumerate(files)}

    def key(text: str) -> tuple[int, int]:
        for f, i in index.items():
            if text.startswith(f + ":") or text.startswith(f + "!"):
                rest = text[len(f) :]
                head = rest.split(":", 2)
                line = int(head[1]) if len(head) > 2 and head[1].isdigit() else 0
                return i, line
        return len(index), 0

    return key


@contextmanager
def _data_dir(path: str | os.PathLike[str] | None) -> Iterator[str]:
    if path is not None:
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="klimaflow-import-") as tmp:
        yield tmp


# -- the command --------------------------------------------------------------------------------


@click.command(name="import")
@click.argument("flow", type=click.Path(exists=True, path_type=Path))
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--entry", metavar="NODE_ID", help="The node files enter through, if the flow has several.")
@click.option("--verbose", "-v", is_flag=True, help="Also show the engine's log (warnings and errors).")
def import_command(flow: Path, files: tuple[str, ...], entry: str | None, verbose: bool) -> int:
    """Run an importer flow once over FILE... and store what it produces.

    The files enter through the flow's watch, file-in or http-in node (--entry if there
    are several); its watch nodes do not scan their own paths. Prints every rejected
    row as FILE:LINE: reason, any other error, and "N points stored from M files,
    K rows rejected". Exit 0 if points were stored, 1 if nothing could be imported,
    2 if the flow is invalid.
    """
    from engine.cli import _issue_order, _load_registry

    with _import_logging(verbose):
        try:
            validated = load_and_validate([flow], _load_registry())
        except FlowValidationError as exc:
            for issue in sorted(exc.issues, key=_issue_order):
                if issue.severity == "error":
                    click.echo(issue.format(), err=True)
            click.echo(f"klimaflow: error: {flow}: invalid flow, nothing imported", err=True)
            return EXIT_INVALID
        try:
            choose_entry(validated, entry)
        except ImportSetupError as exc:
            click.echo(f"klimaflow: error: {flow}: {exc}", err=True)
            return EXIT_INVALID
        try:
            with _progress(len(files)) as on_progress:
                result = asyncio.run(run_import(validated, files, entry=entry, progress=on_progress))
        except ConfigError as exc:
            click.echo(f"klimaflow: error: {flow}: {exc}", err=True)
            return EXIT_INVALID
    for line in result.lines():
        click.echo(line)
    return result.exit_code


@contextmanager
def _import_logging(verbose: bool) -> Iterator[None]:
    """Warnings to stderr; node errors only with ``verbose``, as they are printed from the events.

    The previous logging setup is restored afterwards: the command may run inside
    another program (a test runner, the demo script's process).
    """
    from engine.logging_setup import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    loggers = [logging.getLogger(n) for n in ("klimaflow", "klimaflow.node")]
    levels = [lg.level for lg in loggers]
    setup_logging("warning")
    if not verbose:
        loggers[1].setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def _progress(total: int) -> Iterator[ProgressCallback | None]:
    """A rich progress bar on the terminal (stderr) for imports of several files; else nothing."""
    if total < 2 or not sys.stdout.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files, {task.fields[points]} points stored"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=total, points=0)

        def update(done: int, _total: int, points: int) -> None:
            bar.update(task, completed=done, points=points)

        yield update
