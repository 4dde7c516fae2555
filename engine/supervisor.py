"""The supervisor: owns the running deployment, reloads it from files, deploys API edits.

Every change, whatever its source (a saved file, ``POST /api/deploy``), goes the same way:
load and validate the whole new deployment; if it is invalid, keep running what runs and
record the refusal; if it is valid, compute the diff against the running deployment and
let the engine apply it live (see :meth:`engine.runtime.Engine.apply`). Reloads are serialized.

Files that flows *reference* (a string config value naming an existing file, such as
registry-enrich's ``path`` or an mqtt connection's ``ca_file``, or a ``${file:...}``
reference) are watched too; see :meth:`Supervisor.watch` and :meth:`Supervisor.reload`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from engine import flowfiles
from engine.errors import ConfigError, DeployConflict, FlowLoadError, FlowValidationError
from engine.loader import FLOW_SUFFIXES, LAYOUT_MARKER
from engine.model import content_hash
from engine.registry import Registry, default_registry
from engine.runtime import Engine, connections_used
from engine.validation import (
    Issue,
    ValidatedDeployment,
    load_deployment,
    load_documents,
    validate_deployment,
)

log = logging.getLogger("klimaflow.supervisor")

#: Work to do after a deployment was applied (start, reload, API deploy), e.g. Grafana
#: provisioning: gets the deployment now running, returns a one-line summary; an exception
#: is logged and reported in the result's ``post_apply``, never undoing the deploy.
PostApply = Callable[[ValidatedDeployment], Awaitable[str]]

Trigger = Literal["start", "file", "api"]


@dataclass(frozen=True)
class DeploymentDiff:
    """What a reload changes, in Node-RED's categories (``diffConfigs``), by node id."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    rewired: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    connections_added: tuple[str, ...] = ()
    connections_removed: tuple[str, ...] = ()
    connections_changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.changed
            or self.rewired
            or self.connections_added
            or self.connections_removed
            or self.connections_changed
        )

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in asdict(self).items()}


def _node_signature(v: ValidatedDeployment, node_id: str) -> str:
    spec = v.deployment.nodes()[node_id]
    cfg = v.node_configs[node_id]
    return content_hash(
        {"type": spec.type, "config": cfg.model_dump(mode="json"), "inbox": spec.inbox, "name": spec.name}
    )


def _connection_signature(v: ValidatedDeployment, name: str) -> str:
    spec = v.deployment.connections()[name]
    return content_hash({"type": spec.type, "config": v.connection_configs[name].model_dump(mode="json")})


def _connections_used(v: ValidatedDeployment, node_id: str) -> set[str]:
    return set(connections_used(v.node_configs[node_id]))


def compute_diff(old: ValidatedDeployment, new: ValidatedDeployment) -> DeploymentDiff:
    """Classify every running node: a node whose config, type or used connection changed is
    *changed*; one whose only difference is its outgoing wires is *rewired*."""
    old_ids = set(old.node_configs)
    new_ids = set(new.node_configs)
    old_conns = set(old.connection_configs)
    new_conns = set(new.connection_configs)
    conn_changed = {
        n for n in old_conns & new_conns if _connection_signature(old, n) != _connection_signature(new, n)
    }
    conn_gone = old_conns - new_conns
    old_specs = old.deployment.nodes()
    new_specs = new.deployment.nodes()
    changed, rewired, unchanged = [], [], []
    for nid in sorted(old_ids & new_ids):
        if (
            _node_signature(old, nid) != _node_signature(new, nid)
            or _connections_used(new, nid) & (conn_changed | conn_gone)
            or _connections_used(old, nid) != _connections_used(new, nid)
        ):
            changed.append(nid)
        elif _wires(old_specs[nid].wires, old_ids) != _wires(new_specs[nid].wires, new_ids):
            rewired.append(nid)
        else:
            unchanged.append(nid)
    return DeploymentDiff(
        added=tuple(sorted(new_ids - old_ids)),
        removed=tuple(sorted(old_ids - new_ids)),
        changed=tuple(changed),
        rewired=tuple(rewired),
        unchanged=tuple(unchanged),
        connections_added=tuple(sorted(new_conns - old_conns)),
        connections_removed=tuple(sorted(conn_gone)),
        connections_changed=tuple(sorted(conn_changed)),
    )


def _wires(wires: Mapping[str, tuple[str, ...]], running: set[str]) -> dict[str, tuple[str, ...]]:
    """Wires as the runtime sees them: targets that do not run (disabled) do not count."""
    return {
        p: tuple(t for t in ts if t in running) for p, ts in wires.items() if any(t in running for t in ts)
    }


@dataclass
class ReloadResult:
    """The outcome of one reload or deploy, as ``GET /api/status`` reports it."""

    ok: bool
    trigger: Trigger
    started_at: float
    duration: float = 0.0
    revision: str | None = None
    previous_revision: str | None = None
    diff: DeploymentDiff | None = None
    issues: list[Issue] = field(default_factory=list)
    drain_timeout_hit: bool = False
    undrained: int = 0
    message: str = ""
    #: The drain timeout that applied (seconds); with ``drain_timeout_hit`` it says what was cut short.
    drain_timeout: float = 0.0
    #: Messages queued for a changed node at the timeout, moved to its replacement (not lost).
    handed_over: int = 0
    #: Referenced files whose change caused this reload, and the nodes that re-read them in place.
    changed_files: list[str] = field(default_factory=list)
    reloaded_in_place: list[str] = field(default_factory=list)
    #: Post-apply hook name -> {"state": "pending" | "ok" | "failed", "message": ...}; filled in later.
    post_apply: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "trigger": self.trigger,
            "started_at": self.started_at,
            "duration": round(self.duration, 6),
            "revision": self.revision,
            "previous_revision": self.previous_revision,
            "diff": self.diff.to_dict() if self.diff else None,
            "errors": [i.to_dict() for i in self.issues if i.severity == "error"],
            "warnings": [i.to_dict() for i in self.issues if i.severity == "warning"],
            "drain_timeout_hit": self.drain_timeout_hit,
            "drain_timeout": self.drain_timeout,
            "undrained": self.undrained,
            "handed_over": self.handed_over,
            "changed_files": list(self.changed_files),
            "reloaded_in_place": list(self.reloaded_in_place),
            "post_apply": {k: dict(v) for k, v in self.post_apply.items()},
            "message": self.message,
        }


@runtime_checkable
class ReloadsFiles(Protocol):
    """A node that re-reads the files it references itself (registry-enrich's ``reload``).

    When a watched file such a node references changes, the supervisor calls
    ``reload(force=True)`` instead of restarting the node, so its state survives.
    Nodes without it that reference a changed file are restarted (reported as changed).
    """

    def reload(self, force: bool = False) -> bool: ...


_FILE_REF = re.compile(r"\$\{file:([^}]*)\}")


@dataclass(frozen=True)
class FileReferences:
    """Files a deployment refers to, found in its configs.

    ``by_node``: existing files named by a string config value (after ``${VAR}``
    substitution), relative paths taken from the working directory as nodes open them;
    nodes read them at run time. ``by_connection``: the same for connection configs, by
    connection name (an mqtt connection's TLS ``ca_file``, ``cert_file``, ``key_file``),
    read when the connection connects. ``resolved``: ``${file:...}`` references, whose
    content became part of a config during validation, so a change shows up in the diff.
    """

    by_node: Mapping[Path, frozenset[str]] = field(default_factory=dict)
    resolved: frozenset[Path] = frozenset()
    by_connection: Mapping[Path, frozenset[str]] = field(default_factory=dict)

    @property
    def paths(self) -> set[Path]:
        return set(self.by_node) | set(self.by_connection) | set(self.resolved)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _existing_file(text: str) -> Path | None:
    if not text or len(text) > 1024 or "\n" in text or ("/" not in text and "." not in text):
        return None
    try:
        path = Path(text).expanduser()
        return path.resolve() if path.is_file() else None
    except (OSError, ValueError):
        return None


def referenced_files(v: ValidatedDeployment) -> FileReferences:
    """The files ``v``'s nodes and connections refer to (flow files themselves excluded)."""
    flow_files = {Path(f.file).resolve() for f in v.deployment.flows if f.file}

    def named_by(configs: Mapping[str, BaseModel]) -> dict[Path, set[str]]:
        found: dict[Path, set[str]] = {}
        for key, cfg in configs.items():
            for text in _strings(cfg.model_dump(mode="python")):
                path = _existing_file(text)
                if path is not None and path not in flow_files:
                    found.setdefault(path, set()).add(key)
        return found

    by_node = named_by(v.node_configs)
    by_connection = named_by(v.connection_configs)
    resolved: set[Path] = set()
    for flow in v.deployment.flows:
        base = Path(flow.file).parent if flow.file else Path()
        raws = [n.raw_config for n in flow.nodes] + [c.raw_config for c in flow.connections.values()]
        for raw in raws:
            for text in _strings(raw):
                for m in _FILE_REF.finditer(text):
                    ref = Path(m.group(1)).expanduser()
                    resolved.add((ref if ref.is_absolute() else base / ref).resolve())
    return FileReferences(
        {p: frozenset(ids) for p, ids in by_node.items()},
        frozenset(resolved),
        {p: frozenset(names) for p, names in by_connection.items()},
    )


class Supervisor:
    """Runs one deployment from flow files and keeps it current."""

    def __init__(
        self,
        paths: Sequence[Path | str],
        *,
        data_dir: str | Path | None = None,
        drain_timeout: float = 10.0,
        registry: Registry | None = None,
        environ: Mapping[str, str] | None = None,
        post_apply: Sequence[tuple[str, PostApply]] = (),
    ) -> None:
        self.paths = [Path(p) for p in paths]
        #: (name, hook) run in order, in the background, after each applied deployment.
        self.post_apply: list[tuple[str, PostApply]] = list(post_apply)
        self._post_apply_task: asyncio.Task[None] | None = None
        self.data_dir = data_dir
        self.drain_timeout = drain_timeout
        self.registry = registry or default_registry()
        self.environ = environ
        self.engine: Engine | None = None
        self.validated: ValidatedDeployment | None = None
        self.last_result: ReloadResult | None = None
        self.history: collections.deque[ReloadResult] = collections.deque(maxlen=50)
        self.reloads = 0
        self._lock = asyncio.Lock()

    # -- state -----------------------------------------------------------------------------

    @property
    def revision(self) -> str | None:
        return self.validated.revision if self.validated else None

    def flow_files(self) -> dict[str, Path]:
        """Flow id -> the file it lives in, for the running deployment."""
        if self.validated is None:
            return {}
        return {f.id: Path(f.file) for f in self.validated.deployment.flows}

    # -- lifecycle ----------------------------------------------------------------------------

    def _load(self) -> tuple[ValidatedDeployment | None, list[Issue]]:
        deployment, issues = load_deployment(self.paths)
        return validate_deployment(deployment, self.registry, environ=self.environ, prior_issues=issues)

    async def start(self) -> ReloadResult:
        """Load, validate and start; raises :class:`FlowValidationError` if the files are invalid."""
        t0 = time.time()
        validated, issues = self._load()
        if validated is None:
            raise FlowValidationError(issues)
        engine = Engine(validated, data_dir=self.data_dir, drain_timeout=self.drain_timeout)
        await engine.start()
        self.engine, self.validated = engine, validated
        result = ReloadResult(True, "start", t0, time.time() - t0, validated.revision, None, None, issues)
        self._record(result)
        self._schedule_post_apply(validated, result)
        return result

    async def stop(self) -> None:
        """Drain and stop; waits for a reload in progress, and no reload starts afterwards."""
        async with self._lock:
            task = self._post_apply_task
            if task is not None and not task.done():
                _, pending = await asyncio.wait([task], timeout=self.drain_timeout)
                for t in pending:
                    t.cancel()
            if self.engine is not None:
                await self.engine.stop()

    def _schedule_post_apply(self, validated: ValidatedDeployment, result: ReloadResult) -> None:
        """Run the post-apply hooks in the background, after those of earlier deployments."""
        if not self.post_apply:
            return
        for name, _ in self.post_apply:
            result.post_apply[name] = {"state": "pending", "message": ""}
        previous = self._post_apply_task

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            for name, hook in self.post_apply:
                try:
                    message = await hook(validated)
                except Exception as exc:
                    log.error(
                        "after applying %s: %s failed: %s: %s", result.revision, name, type(exc).__name__, exc
                    )
                    result.post_apply[name] = {"state": "failed", "message": f"{type(exc).__name__}: {exc}"}
                else:
                    log.info("after applying %s: %s: %s", result.revision, name, message)
                    result.post_apply[name] = {"state": "ok", "message": message}
            if self.engine is not None:
                self.engine.publish({"kind": "post_apply", "result": result.to_dict()})

        self._post_apply_task = asyncio.create_task(run(), name="post-apply")

    async def post_apply_idle(self) -> None:
        """Wait until the hooks of every deployment applied so far have run."""
        while (task := self._post_apply_task) is not None and not task.done():
            await asyncio.wait([task])

    def _record(self, result: ReloadResult) -> None:
        self.last_result = result
        self.history.append(result)
        if self.engine is not None:
            self.engine.publish({"kind": "reload", "result": result.to_dict()})

    async def reload(self, trigger: Trigger = "file", *, changed: Iterable[Path | str] = ()) -> ReloadResult:
        """Re-read the files; apply the difference if valid, keep running if not.

        ``changed``: files seen changing (the watcher passes them). Running nodes that
        reference one of them (see :func:`referenced_files`) and are otherwise unchanged
        re-read it in place if they can (:class:`ReloadsFiles`), else they are restarted.
        A running connection whose config names one of them (a renewed TLS certificate) is
        replaced as if its config had changed, with the nodes that use it.
        A file reload that changes nothing is returned but not recorded in ``last_result``
        or ``history``.
        """
        async with self._lock:
            if self.engine is not None and not self.engine.running:
                return self._refused(trigger, time.time(), [], "refused: the engine has stopped")
            validated, issues = self._load()
            touched = _resolved(changed)
            return await self._apply(validated, issues, trigger, touched)

    async def _apply(
        self,
        validated: ValidatedDeployment | None,
        issues: list[Issue],
        trigger: Trigger,
        touched: set[Path] | None = None,
    ) -> ReloadResult:
        t0 = time.time()
        previous = self.revision
        if validated is None:
            return self._refused(trigger, t0, issues, "refused: the running flows stay as they are")
        assert self.engine is not None
        assert self.validated is not None
        diff = compute_diff(self.validated, validated)
        changed_files: list[str] = []
        in_place: list[str] = []
        if touched:
            refs = referenced_files(validated)
            changed_files = sorted(str(p) for p in touched if p in refs.paths)
            diff, in_place = self._file_changes(diff, refs, touched)
        if diff.empty and validated.revision == previous:
            # Same revision, nothing for the engine to do; but file paths may differ (a renamed
            # flow file), and flow_files() must name the files as they are now.
            self.validated = validated
            reloaded = self._reload_in_place(in_place)
            result = ReloadResult(
                True,
                trigger,
                t0,
                time.time() - t0,
                previous,
                previous,
                diff,
                issues,
                message=f"files re-read by {', '.join(reloaded)}" if reloaded else "no change",
                drain_timeout=self.drain_timeout,
                changed_files=changed_files,
                reloaded_in_place=reloaded,
            )
            if trigger == "file" and not reloaded:
                # A save that changed nothing (often the echo of an API deploy's own write):
                # recording it would hide the result that matters from GET /api/status.
                log.debug("files re-read, no change (revision %s)", previous)
                return result
            self._record(result)
            return result
        try:
            outcome = await self.engine.apply(validated, diff)
        except ConfigError as exc:
            # A node or connection of the new deployment could not be built; nothing was touched.
            return self._refused(trigger, t0, [_apply_issue(str(exc))], f"refused: {exc}")
        except Exception as exc:
            # Half applied: record what runs now, so the next reload diffs against reality.
            self.validated = self.engine.validated
            log.exception("reload failed while applying %s", validated.revision)
            result = ReloadResult(
                False,
                trigger,
                t0,
                time.time() - t0,
                self.revision,
                previous,
                diff,
                issues,
                message=f"apply failed: {type(exc).__name__}: {exc}",
                drain_timeout=self.drain_timeout,
            )
            self._record(result)
            return result
        self.validated = validated
        self.reloads += 1
        reloaded = self._reload_in_place(in_place)
        message = ""
        if outcome.drain_timeout_hit:
            message = (
                f"drain timeout ({outcome.drain_timeout:g}s) hit: {outcome.undrained} message(s) not "
                f"processed (not acknowledged), {outcome.handed_over} handed to replacing nodes"
            )
        result = ReloadResult(
            True,
            trigger,
            t0,
            time.time() - t0,
            validated.revision,
            previous,
            diff,
            issues,
            drain_timeout_hit=outcome.drain_timeout_hit,
            undrained=outcome.undrained,
            message=message,
            drain_timeout=outcome.drain_timeout,
            handed_over=outcome.handed_over,
            changed_files=changed_files,
            reloaded_in_place=reloaded,
        )
        log.info(
            "reloaded %s -> %s in %.3fs: %s", previous, validated.revision, result.duration, _summary(diff)
        )
        self._record(result)
        self._schedule_post_apply(validated, result)
        return result

    def _refused(self, trigger: Trigger, t0: float, issues: list[Issue], message: str) -> ReloadResult:
        previous = self.revision
        result = ReloadResult(
            False,
            trigger,
            t0,
            time.time() - t0,
            previous,
            previous,
            None,
            issues,
            message=message,
            drain_timeout=self.drain_timeout,
        )
        for issue in issues:
            if issue.severity == "error":
                log.error("reload refused: %s", issue.format())
        self._record(result)
        return result

    def _file_changes(
        self, diff: DeploymentDiff, refs: FileReferences, touched: set[Path]
    ) -> tuple[DeploymentDiff, list[str]]:
        """Nodes left running that read a changed file: re-read in place, or restart (changed).

        Connections left running that name a changed file are replaced (changed), and so
        are the nodes using them, as :func:`compute_diff` has it for an edited connection.
        """
        assert self.engine is not None
        affected: set[str] = set()
        for path, ids in refs.by_node.items():
            if path in touched:
                affected |= ids
        conns: set[str] = set()
        for path, names in refs.by_connection.items():
            if path in touched:
                conns |= names
        conns = (conns & set(self.engine.connections)) - set(diff.connections_changed)
        for name in sorted(conns):
            files = sorted(
                str(p) for p, names in refs.by_connection.items() if name in names and p in touched
            )
            log.info("restarting connection %s: %s changed", name, ", ".join(files))
        kept = set(diff.unchanged) | set(diff.rewired)
        users = {n for n in kept if self.engine.runtimes[n].uses & conns}
        running = (kept & affected) - users
        in_place = sorted(n for n in running if isinstance(self.engine.runtimes[n].node, ReloadsFiles))
        restart = (running - set(in_place)) | users
        if not restart and not conns:
            return diff, in_place
        diff = dataclasses.replace(
            diff,
            changed=tuple(sorted({*diff.changed, *restart})),
            rewired=tuple(n for n in diff.rewired if n not in restart),
            unchanged=tuple(n for n in diff.unchanged if n not in restart),
            connections_changed=tuple(sorted({*diff.connections_changed, *conns})),
        )
        return diff, in_place

    def _reload_in_place(self, node_ids: Sequence[str]) -> list[str]:
        done: list[str] = []
        assert self.engine is not None
        for nid in node_ids:
            rt = self.engine.runtimes.get(nid)
            if rt is None or not isinstance(rt.node, ReloadsFiles):
                continue
            try:
                rt.node.reload(force=True)
                done.append(nid)
            except Exception as exc:  # the node keeps what it had; its status says why
                rt.logger.error("re-reading its files failed: %s: %s", type(exc).__name__, exc)
        return done

    async def validate_documents(
        self, documents: Mapping[str, str]
    ) -> tuple[ValidatedDeployment | None, list[Issue]]:
        """Validate in-memory flow documents (name -> YAML/JSON text) as the CLI would."""
        deployment, issues = load_documents(documents.items())
        return validate_deployment(deployment, self.registry, environ=self.environ, prior_issues=issues)

    async def deploy(
        self,
        documents: Mapping[str, flowfiles.Document],
        *,
        base_revision: str | None,
        mode: Literal["full", "modified"] = "modified",
        deleted: Sequence[str] = (),
    ) -> ReloadResult:
        """Write edited flows (flow id -> YAML/JSON text or the parsed mapping) to their files, then reload.

        Raises :class:`DeployConflict` when ``base_revision`` is not the running revision.
        ``full``: ``documents`` is the whole deployment (flows not in it are deleted);
        ``modified``: only the given flows change (and the ``deleted`` ones go).
        The new deployment is validated before any file is written.
        """

        async with self._lock:
            if base_revision != self.revision:
                raise DeployConflict(self.revision, base_revision)
            current = self.flow_files()
            try:
                targets = flowfiles.plan(current, documents, self.flow_dir(), mode=mode, deleted=deleted)
            except FlowValidationError as exc:
                return await self._apply(None, exc.issues, "api")
            except FlowLoadError as exc:  # a document sent as text that does not parse
                issue = Issue(
                    "error",
                    str(exc).split(": ", 1)[-1] if exc.file else str(exc),
                    "load",
                    file=exc.file,
                    line=exc.line,
                )
                return await self._apply(None, [issue], "api")
            # Validate exactly what the files will hold, before touching any file.
            texts = {str(path): text for path, text in targets.write.items()}
            for path in current.values():
                if path not in targets.write and path not in targets.delete:
                    texts[str(path)] = path.read_text(encoding="utf-8")
            validated, issues = await self.validate_documents(texts)
            if validated is None:
                return await self._apply(None, issues, "api")
            flowfiles.apply(targets)
            validated, issues = self._load()
            return await self._apply(validated, issues, "api")

    def flow_dir(self) -> Path:
        """Where new flows are written: the first directory given, else the first file's folder."""
        for p in self.paths:
            if p.is_dir():
                return p
        return self.paths[0].parent

    def watched(self) -> tuple[set[Path], set[Path]]:
        """(directories to watch, files whose change matters) for the running deployment.

        Directories, not files: editors save by writing a new file and renaming it over
        the old one, which a watch on the file itself would lose.
        """
        roots: set[Path] = set()
        for p in self.paths:
            roots.add((p if p.is_dir() else p.parent).resolve())
        files = {p.resolve() for p in self.paths if not p.is_dir()}
        if self.validated is not None:
            refs = referenced_files(self.validated).paths
            files |= refs
            roots |= {p.parent for p in refs if p.parent.is_dir()}
        return roots, files

    def _relevant(self, path: Path, files: set[Path], flow_dirs: set[Path]) -> bool:
        if path in files:
            return True
        return (
            path.parent in flow_dirs
            and path.suffix.lower() in FLOW_SUFFIXES
            and not path.name.startswith(".")
            and LAYOUT_MARKER not in path.name
        )

    async def watch(
        self, debounce: float = 0.3, stop: asyncio.Event | None = None, *, settle: float = 0.2
    ) -> None:
        """Reload on changes to the flow files or the files they reference, until ``stop`` is set.

        A burst of saves becomes one reload: watchfiles groups changes for up to
        ``debounce`` seconds, then changes keep being collected until none came for
        ``settle`` seconds. Changes during a reload lead to one more reload after it. The
        set of watched directories follows the running deployment (a flow that starts
        referencing another file gets that file watched). Flow files are those
        :func:`engine.loader.flow_files` would load (``*.yaml``, ``*.yml``, ``*.json``, not
        hidden, so an atomic save's temporary file does not count).
        """
        stop = stop or asyncio.Event()
        pending: asyncio.Queue[set[Path]] = asyncio.Queue()
        roots, files = self.watched()
        watcher = _DirWatcher(roots, debounce, pending)
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.create_task(pending.get())
                await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                batch = getter.result()
                while True:  # settle: a burst of saves is one reload
                    try:
                        batch |= await asyncio.wait_for(pending.get(), settle)
                    except TimeoutError:
                        break
                flow_dirs = {(p if p.is_dir() else p.parent).resolve() for p in self.paths}
                relevant = {p for p in batch if self._relevant(p, files, flow_dirs)}
                if not relevant:
                    continue
                log.info("files changed: %s", ", ".join(sorted(str(p) for p in relevant)))
                try:
                    await self.reload("file", changed=relevant)
                except Exception:  # the watcher must outlive any single bad reload
                    log.exception("reload failed")
                new_roots, files = self.watched()
                if new_roots != roots:
                    roots = new_roots
                    await watcher.close()
                    watcher = _DirWatcher(roots, debounce, pending)
        finally:
            stopping.cancel()
            await watcher.close()


class _DirWatcher:
    """watchfiles on a set of directories (non-recursive), feeding changed paths to a queue."""

    def __init__(self, roots: set[Path], debounce: float, out: asyncio.Queue[set[Path]]) -> None:
        self.roots = sorted(str(r) for r in roots if r.is_dir())
        self.debounce = debounce
        self.out = out
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="klimaflow:watch")

    async def _run(self) -> None:
        import watchfiles

        while not self._stop.is_set() and self.roots:
            try:
                async for changes in watchfiles.awatch(
                    *self.roots,
                    debounce=max(1, int(self.debounce * 1000)),
                    step=20,
                    stop_event=self._stop,
                    recursive=False,
                ):
                    self.out.put_nowait(_resolved(p for _kind, p in changes))
            except Exception as exc:  # a watched directory vanished: try again shortly
                log.warning("watching %s failed: %s; retrying", ", ".join(self.roots), exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, 2.0)
        if not self.task.done():
            self.task.cancel()


def _summary(diff: DeploymentDiff) -> str:
    parts = [f"{len(v)} {k}" for k, v in diff.to_dict().items() if v and k != "unchanged"]
    return ", ".join(parts) or "no node changed"


def _resolved(paths: Iterable[Path | str]) -> set[Path]:
    """Absolute paths, so watcher events compare equal to references however they were written."""
    return {Path(p).resolve() for p in paths}


def _apply_issue(message: str) -> Issue:
    return Issue("error", message, "apply")
