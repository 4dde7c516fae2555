"""The asyncio runtime: one bounded inbox and one worker task per node.

Why this shape:

* A bounded inbox per node (default 1000) makes ``emit`` wait when a receiver falls
  behind, so back-pressure walks up the graph to the sources instead of memory
  growing without bound.
* One worker per node processes messages in order, which is what users of Node-RED
  and Telegraf expect of a node, and keeps node code free of locking.
* Errors never escape a node: they go to its ``error`` port, else to the flow's
  ``catch`` nodes, else to the log and the engine's ``unhandled_errors`` counter.
* Stopping pauses sources, waits until every inbox is empty and every node idle
  (bounded by ``drain_timeout``), then stops nodes in topological order so a batch
  flushed by one ``stop()`` still reaches the sink stopped after it.
* A new deployment is applied live (:meth:`Engine.apply`): only the nodes and
  connections the diff names are replaced; everything else keeps running with its
  state, its connections and its place in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from engine.errors import ConfigError, EngineError, NodeError, error_chain
from engine.inbox import Inbox
from engine.message import Message, release_all, retain_all
from engine.model import ERROR_PORT, NodeSpec
from engine.node import BATCH_LIMIT, Connection, Counters, Node, NodeStatus
from engine.types import NodeConfig
from engine.validation import ValidatedDeployment, _connection_fields

if TYPE_CHECKING:
    from engine.supervisor import DeploymentDiff

log = logging.getLogger("klimaflow.engine")

#: How often one message may be routed to catch nodes before it is treated as unhandled:
#: a handler behind a catch node that fails again would otherwise loop forever.
MAX_CATCH_HOPS = 10

EventCallback = Callable[[dict[str, Any]], None]


def tune_gc(gen0_threshold: int | None = None) -> None:
    """Garbage-collect less often: the engine allocates many short-lived objects per message.

    With CPython's default gen-0 threshold (700 allocations) a flow that parses JSON at
    thousands of messages per second runs a collection every few messages, and each
    one walks everything still in inboxes; raising the threshold cut engine CPU per
    message by about a third in ``bench/ingest.py``. ``gc.freeze()`` moves the objects
    of start-up (modules, configs) out of future collections. Override with
    ``KLIMAFLOW_GC_THRESHOLD`` (0 restores the interpreter's defaults).
    """
    import gc

    value = (
        gen0_threshold
        if gen0_threshold is not None
        else int(os.environ.get("KLIMAFLOW_GC_THRESHOLD", "100000"))
    )
    if value <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(value, 50, 100)


def connections_used(config: Any) -> frozenset[str]:
    """Names of the connections a node config refers to (its ``connection_field`` values)."""
    if not isinstance(config, NodeConfig):
        return frozenset()
    used = set()
    for fld in _connection_fields(type(config)):
        value = getattr(config, fld, None)
        if isinstance(value, str):
            used.add(value)
    return frozenset(used)


@dataclass(frozen=True)
class ApplyOutcome:
    """What applying a new deployment cost.

    ``drain_timeout_hit``: some replaced or removed node did not finish its in-flight
    messages within ``drain_timeout``. ``undrained``: messages that were then left
    unprocessed (their sources were not acknowledged; an MQTT broker redelivers them on
    the next session). ``handed_over``: messages still queued for a *changed* node at the
    timeout, moved to its replacement instead (processed with the new config, not lost).
    """

    drain_timeout_hit: bool = False
    undrained: int = 0
    handed_over: int = 0
    drain_timeout: float = 0.0
    duration: float = 0.0
    stopped: tuple[str, ...] = ()
    started: tuple[str, ...] = ()


class NodeRuntime:
    """Runtime state of one node; it is also the node's :class:`~engine.node.NodeContext`."""

    def __init__(self, engine: Engine, spec: NodeSpec, cls: type[Node], config: Any) -> None:
        self.engine = engine
        self.spec = spec
        self.node_id = spec.id
        self.flow_id = spec.flow_id
        self.cls = cls
        self.logger = logging.getLogger(f"klimaflow.node.{spec.id}")
        self.inbox: Inbox[Message] = Inbox(spec.inbox)
        self.targets: dict[str, list[NodeRuntime]] = {}
        self.counters = Counters()
        self.status = NodeStatus()
        self.busy = False
        #: Messages taken from the inbox and not yet finished (a batch node takes many).
        self.in_hand = 0
        self.worker: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Connections the config names: a node is replaced when one of them is.
        self.uses = connections_used(config)
        #: Emits in progress (they may be waiting for room in a receiver's inbox).
        self.emitting = 0
        #: Set when a live reload replaces this node: whatever is put here goes there.
        self.successor: NodeRuntime | None = None
        #: Set once a live reload has stopped this node for good (removed, or replaced).
        self.closed = False
        self.paused = False
        self.node: Node = cls(self, config)
        #: Node types that override on_batch get their inbox in batches.
        self.batched = cls.on_batch is not Node.on_batch

    # -- NodeContext -------------------------------------------------------------------

    def has_wires(self, port: str) -> bool:
        return bool(self.targets.get(port))

    async def emit(self, msg: Message, port: str = "out") -> None:
        targets = self.targets.get(port)
        if not targets:
            return
        # Copies first: the first receiver gets the original and may mutate it at once.
        copies: list[Message] = []
        try:
            for _ in targets[1:]:
                copies.append(msg.copy())
        except BaseException:
            for cp in copies:  # a payload that cannot be copied must not leak retains
                cp.release()
            raise
        for d in msg.deliveries:
            d.retain()
        # Counted so a live reload knows when no emit that began on the old wires is pending.
        self.emitting += 1
        try:
            await targets[0].put(msg)
            for rt, cp in zip(targets[1:], copies, strict=True):
                await rt.put(cp)
        finally:
            self.emitting -= 1
        self.counters.sent += len(targets)

    async def emit_many(self, msgs: list[Message], port: str = "out") -> None:
        """Like :meth:`emit` for several messages: one hand-off per receiver, order kept."""
        targets = self.targets.get(port)
        if not targets or not msgs:
            return
        copies: list[list[Message]] = []
        try:
            for _ in targets[1:]:
                mine: list[Message] = []
                copies.append(mine)
                for m in msgs:
                    mine.append(m.copy())
        except BaseException:
            for batch in copies:
                for cp in batch:
                    cp.release()
            raise
        retain_all(msgs)
        self.emitting += 1
        try:
            await targets[0].put_many(msgs)
            for rt, cps in zip(targets[1:], copies, strict=True):
                await rt.put_many(cps)
        finally:
            self.emitting -= 1
        self.counters.sent += len(targets) * len(msgs)

    async def put_many(self, msgs: list[Message]) -> None:
        if self.successor is not None:
            await self.successor.put_many(msgs)
            return
        if self.closed:
            for msg in msgs:
                self.engine._late_message(self, msg)
            return
        await self.inbox.put_many(msgs)

    async def put(self, msg: Message) -> None:
        if self.successor is not None:
            # Replaced by a live reload: the replacement's inbox takes it (it starts later).
            await self.successor.put(msg)
            return
        if self.closed:
            self.engine._late_message(self, msg)
            return
        await self.inbox.put(msg)

    async def emit_error(self, msg: Message, exc: BaseException) -> None:
        await self.engine.route_error(self, msg, exc)

    def set_status(self, status: NodeStatus) -> None:
        if status == self.status:
            return
        self.status = status
        self.engine.publish(
            {
                "kind": "status",
                "node": self.node_id,
                "flow": self.flow_id,
                "level": status.level,
                "text": status.text,
            }
        )

    def connection(self, name: str) -> Connection:
        try:
            return self.engine.connections[name]
        except KeyError:
            raise EngineError(f"connection {name!r} is not running") from None

    def data_dir(self) -> str:
        path = Path(self.engine.data_dir) / "nodes" / self.node_id
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def publish_debug(self, record: dict[str, Any]) -> None:
        self.engine.publish({"kind": "debug", "node": self.node_id, "flow": self.flow_id, **record})

    def subscribe_events(self, callback: EventCallback) -> Callable[[], None]:
        return self.engine.subscribe(callback)

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.node_id}:{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.counters.errors += 1
            self.logger.error("background task %s failed: %s: %s", task.get_name(), type(exc).__name__, exc)
            self.set_status(NodeStatus("error", f"{type(exc).__name__}: {exc}"[:120]))

    # -- worker ------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self.busy and self.inbox.empty()

    async def run_worker(self) -> None:
        if self.batched:
            await self._run_batches()
            return
        q = self.inbox
        node = self.node
        counters = self.counters
        clock = time.perf_counter
        while True:
            msg = await q.get()
            self.busy = True
            self.in_hand = 1
            counters.received += 1
            t0 = clock()
            try:
                await node.on_message(msg)
            except asyncio.CancelledError as exc:
                if _cancelling():
                    # Cancelled mid-way (drain timeout): not handled, so not acknowledged either.
                    counters.processing_seconds += clock() - t0
                    raise
                await self.engine.route_error(self, msg, _cancelled_error(exc))
            except Exception as exc:
                await self.engine.route_error(self, msg, exc)
            counters.processing_seconds += clock() - t0
            msg.release()
            self.in_hand = 0
            self.busy = False

    async def _run_batches(self) -> None:
        """The worker of a node that overrides ``on_batch``: everything waiting, at once."""
        q = self.inbox
        node = self.node
        counters = self.counters
        clock = time.perf_counter
        while True:
            msgs = await q.get_batch(BATCH_LIMIT)
            self.busy = True
            self.in_hand = len(msgs)
            counters.received += len(msgs)
            t0 = clock()
            try:
                await node.on_batch(msgs)
            except asyncio.CancelledError as exc:
                if _cancelling():
                    counters.processing_seconds += clock() - t0
                    raise
                err = _cancelled_error(exc)
                for msg in msgs:
                    await self.engine.route_error(self, msg, err)
            except Exception as exc:
                for msg in msgs:
                    await self.engine.route_error(self, msg, exc)
            counters.processing_seconds += clock() - t0
            release_all(msgs)
            self.in_hand = 0
            self.busy = False

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "flow": self.flow_id,
            "type": self.spec.type,
            "status": {"level": self.status.level, "text": self.status.text},
            "counters": self.counters.snapshot(self.inbox.qsize()),
        }


class Engine:
    """Runs a validated deployment."""

    def __init__(
        self,
        validated: ValidatedDeployment,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        drain_timeout: float = 10.0,
        stop_grace: float = 5.0,
    ) -> None:
        self.validated = validated
        self.data_dir = str(data_dir or os.environ.get("KLIMAFLOW_DATA", ".klimaflow"))
        self.drain_timeout = drain_timeout
        self.stop_grace = stop_grace
        self.runtimes: dict[str, NodeRuntime] = {}
        self.connections: dict[str, Connection] = {}
        self.unhandled_errors = 0
        self.undrained = 0
        #: Messages put into a node after a live reload had stopped it for good (see put()).
        self.late_messages = 0
        self._subscribers: list[EventCallback] = []
        self._started = False
        self._stopped = asyncio.Event()
        self._lock = asyncio.Lock()  # apply() and stop() do not interleave

    # -- events --------------------------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: dict[str, Any]) -> None:
        event.setdefault("time", time.time())
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:  # a broken listener must not break the engine
                log.exception("event subscriber failed")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise EngineError("engine already started")
        self._started = True
        v = self.validated
        specs = v.deployment.nodes()
        reg = v.registry
        conn_specs = v.deployment.connections()
        for name, cfg in v.connection_configs.items():
            ccls = reg.connections[conn_specs[name].type]
            self.connections[name] = ccls(name, cfg, logging.getLogger(f"klimaflow.connection.{name}"))
        for node_id in self._topological():
            try:
                self.runtimes[node_id] = NodeRuntime(
                    self, specs[node_id], v.node_classes[node_id], v.node_configs[node_id]
                )
            except Exception as exc:  # nothing runs yet: fail the whole start, naming the node
                self.runtimes.clear()
                self.connections.clear()
                raise ConfigError(f"node {node_id}: cannot be created: {type(exc).__name__}: {exc}") from exc
        self._wire()
        for conn in self.connections.values():
            await conn.start()
        for rt in self.runtimes.values():
            rt.worker = asyncio.create_task(rt.run_worker(), name=f"worker:{rt.node_id}")
        # Start sinks first and sources last, so nothing is emitted into a node not yet started.
        for rt in reversed(list(self.runtimes.values())):
            try:
                await rt.node.start()
            except Exception as exc:
                rt.counters.errors += 1
                rt.set_status(NodeStatus("error", f"start failed: {type(exc).__name__}: {exc}"[:160]))
                rt.logger.error("start failed: %s: %s", type(exc).__name__, exc)
        for conn in self.connections.values():
            try:
                await conn.activate()
            except Exception as exc:
                log.error("connection %s failed to activate: %s: %s", conn.name, type(exc).__name__, exc)
        log.info(
            "deployment %s started: %d flows, %d nodes",
            v.revision,
            len(v.deployment.flows),
            len(self.runtimes),
        )

    def _topological(self, validated: ValidatedDeployment | None = None) -> list[str]:
        graph = (validated or self.validated).graph
        return list(nx.lexicographical_topological_sort(graph)) if graph.number_of_nodes() else []

    def _wire(self) -> None:
        """Fresh target lists for every running node, from the deployment's graph.

        New dicts and lists rather than edits in place: an emit in progress keeps the
        list it started with, so swapping is atomic for it (the event loop runs one
        thing at a time, and targets are looked up once per emit).
        """
        graph = self.validated.graph
        targets: dict[str, dict[str, list[NodeRuntime]]] = {nid: {} for nid in self.runtimes}
        for src, dst, data in graph.edges(data=True):
            if src in self.runtimes and dst in self.runtimes:
                targets[src].setdefault(data["port"], []).append(self.runtimes[dst])
        for nid, rt in self.runtimes.items():
            rt.targets = targets[nid]

    def catchers(self, rt: NodeRuntime, classes: Sequence[str]) -> list[NodeRuntime]:
        return [
            c
            for c in self.runtimes.values()
            if c is not rt and c.flow_id == rt.flow_id and c.node.catches(rt.node_id, classes)
        ]

    async def route_error(self, rt: NodeRuntime, msg: Message, exc: BaseException) -> None:
        """Error port, else catch nodes, else log: the message is never silently lost."""
        rt.counters.errors += 1
        previous = msg.meta.get("error")
        hops = previous.get("hops", 0) if isinstance(previous, dict) else 0
        hops = hops if isinstance(hops, int) else 0
        classes = error_chain(exc)
        message = str(exc) or type(exc).__name__
        info: dict[str, Any] = {
            "message": message,
            "class": type(exc).__name__,
            "classes": classes,
            "node": rt.node_id,
            "node_type": rt.spec.type,
            "flow": rt.flow_id,
            "hops": hops,
        }
        msg.meta["error"] = info
        self.publish(
            {"kind": "error", "node": rt.node_id, "flow": rt.flow_id, "error": info, "msg_id": msg.id}
        )
        if rt.has_wires(ERROR_PORT):
            await rt.emit(msg, ERROR_PORT)
            return
        catchers = self.catchers(rt, classes)
        if catchers and hops >= MAX_CATCH_HOPS:
            catchers = []
            info["message"] = f"{message} (caught {MAX_CATCH_HOPS} times already: a catch loop?)"
        if catchers:
            info["hops"] = hops + 1
            copies = [msg.copy() for _ in catchers[1:]]
            for d in msg.deliveries:
                d.retain()
            await catchers[0].put(msg)
            for c, cp in zip(catchers[1:], copies, strict=True):
                await c.put(cp)
            return
        self.unhandled_errors += 1
        rt.logger.error(
            "%s: %s (message %s; no error wire or catch node)", info["class"], info["message"], msg.id
        )

    async def wait_idle(
        self, timeout: float | None = None, nodes: Iterable[NodeRuntime] | None = None
    ) -> bool:
        """Wait until every (given) node is idle with an empty inbox, twice in a row."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pool = list(nodes) if nodes is not None else list(self.runtimes.values())
        quiet = 0
        while quiet < 2:
            if all(rt.idle for rt in pool):
                quiet += 1
            else:
                quiet = 0
            if deadline is not None and time.monotonic() > deadline:
                return quiet > 0
            await asyncio.sleep(0.002 if quiet else 0.005)
        return True

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Pause sources, drain, stop nodes in topological order, close connections."""
        async with self._lock:
            await self._stop(drain_timeout)

    async def _stop(self, drain_timeout: float | None) -> None:
        if not self._started or self._stopped.is_set():
            return
        timeout = self.drain_timeout if drain_timeout is None else drain_timeout
        deadline = time.monotonic() + timeout
        order = list(self.runtimes.values())
        for rt in order:
            if rt.cls.is_source():
                with contextlib.suppress(Exception):
                    await rt.node.pause()
        drained = await self.wait_idle(max(0.0, deadline - time.monotonic()))
        for rt in order:
            try:
                # A sink's final flush (write, else spool) gets its own minimum time even
                # when draining used up the deadline: cutting it would strand a batch.
                await asyncio.wait_for(rt.node.stop(), max(self.stop_grace, deadline - time.monotonic()))
            except Exception as exc:
                rt.logger.error("stop failed: %s: %s", type(exc).__name__, exc)
            drained = await self.wait_idle(max(0.0, deadline - time.monotonic())) and drained
        self.undrained = sum(rt.inbox.qsize() + (rt.in_hand if rt.busy else 0) for rt in order)
        if not drained or self.undrained:
            log.warning(
                "drain timeout after %.1fs: %d message(s) not processed (their sources were not acknowledged)",
                timeout,
                self.undrained,
            )
        for rt in order:
            tasks = [t for t in (rt.worker, *rt.tasks) if t is not None]
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        for conn in self.connections.values():
            try:
                await conn.stop()
            except Exception as exc:
                log.error("connection %s stop failed: %s", conn.name, exc)
        self._stopped.set()
        log.info("deployment %s stopped", self.validated.revision)

    async def apply(self, validated: ValidatedDeployment, diff: DeploymentDiff) -> ApplyOutcome:
        """Switch to ``validated`` while running, replacing only what ``diff`` names.

        Unchanged nodes keep running with their state and connections; *rewired* nodes
        only get new target lists. The *affected* nodes are the removed and changed ones
        (a node counts as changed when its config, type or a connection it uses changed;
        ``diff`` is completed defensively from the two deployments). In order:

        1. Build every new connection object and node runtime. A constructor that fails
           raises :class:`ConfigError` before anything running was touched.
        2. Sources whose connection is replaced or removed are paused: what their broker
           sends until the old connection closes stays unacknowledged and is redelivered
           on the new session (with ``clean_session: true`` there is no next session, so
           use a persistent session where that matters).
        3. Rewire in one step: the engine's node table and every target list now follow
           the new graph. A replaced node's runtime forwards whatever is put into it to
           its replacement's inbox, which already exists, so messages that unchanged
           upstream nodes emit toward it (also emits that began before the swap) wait
           there until the replacement starts — back-pressure, never a drop. Added
           connections start, added nodes start (sinks first).
        4. Sources whose connections keep running are *handed over*: the replacement
           starts first (an ``mqtt-in`` subscribes to the same filter on the same client),
           then the old one is stopped without a pause, so the broker never sees a gap and
           the session is never interrupted.
        5. Each affected node drains concurrently: once its inbox is empty and it is idle
           (a removed node also waits for its affected predecessors, which still send
           along the old wires), it is stopped — ``stop()`` flushes, e.g. influxdb-out
           writes or spools its batch — and its replacement starts at once, so a changed
           node in the middle of the graph holds up its unchanged neighbours only for its
           own drain. Everything shares one deadline, ``drain_timeout``; when it is hit
           the node is stopped anyway: messages still queued for a changed node move to
           its replacement (``handed_over``), the rest count as ``undrained``.
        6. Replaced and removed connections stop; replacing ones start; the nodes that
           needed them and new sources start (sinks first, sources last); new connections
           activate last, when every subscriber is registered.
        """
        async with self._lock:
            if not self.running:
                raise EngineError("the engine is not running")
            return await _LiveSwap(self, validated, diff).run()

    def _late_message(self, rt: NodeRuntime, msg: Message) -> None:
        """A message put into a node a live reload had already removed: counted, not acknowledged."""
        self.late_messages += 1
        self.undrained += 1
        rt.logger.error(
            "message %s arrived after the node was removed by a reload; not processed, not acknowledged",
            msg.id,
        )

    @property
    def running(self) -> bool:
        """Started and not stopped: what :meth:`apply` needs."""
        return self._started and not self._stopped.is_set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- introspection ---------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        return self.runtimes[node_id].node

    def snapshot(self) -> dict[str, Any]:
        return {
            "revision": self.validated.revision,
            "unhandled_errors": self.unhandled_errors,
            "undrained": self.undrained,
            "nodes": [rt.snapshot() for rt in self.runtimes.values()],
        }


class _LiveSwap:
    """One application of a new deployment to a running engine; see :meth:`Engine.apply`."""

    def __init__(self, engine: Engine, validated: ValidatedDeployment, diff: DeploymentDiff) -> None:
        self.engine = engine
        self.old = engine.validated
        self.new = validated
        self.t0 = time.monotonic()
        self.timeout = engine.drain_timeout
        self.deadline = self.t0 + self.timeout
        old_ids = set(engine.runtimes)
        new_ids = set(validated.node_configs)
        old_conns = set(engine.connections)
        new_conns = set(validated.connection_configs)
        self.conn_added = new_conns - old_conns
        self.conn_replaced = set(diff.connections_changed) & old_conns & new_conns
        self.dying = (old_conns - new_conns) | self.conn_replaced
        self.added = new_ids - old_ids
        changed = set(diff.changed) & old_ids & new_ids
        for nid in old_ids & new_ids:
            rt = engine.runtimes[nid]
            new_uses = connections_used(validated.node_configs[nid])
            if rt.uses & self.dying or new_uses != rt.uses or validated.node_classes[nid] is not rt.cls:
                changed.add(nid)
        self.retired = {nid: engine.runtimes[nid] for nid in sorted((old_ids - new_ids) | changed)}
        self.kept = {nid: rt for nid, rt in engine.runtimes.items() if nid not in self.retired}
        self.order = engine._topological(validated)
        self.pending_conns = set(self.conn_replaced)
        self.new_conns: dict[str, Connection] = {}
        self.created: dict[str, NodeRuntime] = {}
        self.done = {nid: asyncio.Event() for nid in self.retired}
        self.node_stopped: set[str] = set()
        self.handover: list[tuple[NodeRuntime, Message]] = []
        self.timeout_hit = False
        self.undrained = 0
        self.moved = 0
        self.late_before = engine.late_messages

    # -- the steps ---------------------------------------------------------------------------

    async def run(self) -> ApplyOutcome:
        e = self.engine
        self._prepare()
        for rt in self.retired.values():
            if rt.cls.is_source() and rt.uses & self.dying:
                await self._pause(rt)
        self._rewire()
        for name in sorted(self.conn_added):
            conn = e.connections[name] = self.new_conns[name]
            await self._conn_call(conn, "start")
        for nid in reversed(self.order):
            rt = e.runtimes[nid]
            if nid in self.added and not rt.cls.is_source() and self._ready(rt):
                await self._start(rt)
        for rt in self.retired.values():
            if rt.cls.is_source() and not rt.paused:
                succ = rt.successor
                if succ is not None and self._ready(succ):
                    await self._start(succ)
                await self._stop_node(rt)  # no pause(): a handover, not a shutdown
        await asyncio.gather(*(self._retire(nid, rt) for nid, rt in self.retired.items()))
        for name in sorted(self.dying):
            old = e.connections.pop(name, None)
            if old is not None:
                await self._conn_call(old, "stop")
        for name in sorted(self.conn_replaced):
            conn = e.connections[name] = self.new_conns[name]
            await self._conn_call(conn, "start")
        self.pending_conns.clear()
        waiting = [e.runtimes[nid] for nid in reversed(self.order) if nid in self.created]
        for rt in [r for r in waiting if not r.cls.is_source()] + [r for r in waiting if r.cls.is_source()]:
            if rt.worker is None:
                await self._start(rt)
        await self._deliver_handover()
        for name in sorted(self.conn_added | self.conn_replaced):
            await self._conn_call(e.connections[name], "activate")
        return self._outcome()

    def _prepare(self) -> None:
        """Construct everything new; nothing running is touched, so failing here is harmless."""
        v = self.new
        conn_specs = v.deployment.connections()
        for name in sorted(self.conn_added | self.conn_replaced):
            ccls = v.registry.connections[conn_specs[name].type]
            try:
                self.new_conns[name] = ccls(
                    name, v.connection_configs[name], logging.getLogger(f"klimaflow.connection.{name}")
                )
            except Exception as exc:
                raise ConfigError(
                    f"connection {name}: cannot be created: {type(exc).__name__}: {exc}"
                ) from exc
        specs = v.deployment.nodes()
        for nid in self.order:
            if nid in self.added or nid in self.retired:
                try:
                    self.created[nid] = NodeRuntime(
                        self.engine, specs[nid], v.node_classes[nid], v.node_configs[nid]
                    )
                except Exception as exc:
                    raise ConfigError(f"node {nid}: cannot be created: {type(exc).__name__}: {exc}") from exc

    def _rewire(self) -> None:
        e = self.engine
        specs = self.new.deployment.nodes()
        for nid, rt in self.kept.items():
            rt.spec = specs[nid]
            rt.flow_id = rt.spec.flow_id
        for nid, rt in self.retired.items():
            rt.successor = self.created.get(nid)
        e.runtimes = {nid: self.kept[nid] if nid in self.kept else self.created[nid] for nid in self.order}
        e.validated = self.new
        e._wire()

    async def _retire(self, nid: str, rt: NodeRuntime) -> None:
        """Drain one affected node, stop it for good, then start its replacement."""
        if rt.successor is None:
            # A removed node still receives what affected predecessors send on the old wires,
            # and what unchanged ones emitted before the rewire (an emit may be waiting on
            # another receiver first).
            preds = [p for p in self.old.graph.predecessors(nid) if p != nid]
            for p in preds:
                if p in self.done and not await self._wait_event(self.done[p]):
                    self.timeout_hit = True
            kept_preds = [self.kept[p] for p in preds if p in self.kept]

            def quiet() -> bool:
                return rt.idle and rt.emitting == 0 and all(k.emitting == 0 for k in kept_preds)

        else:

            def quiet() -> bool:
                return rt.idle and rt.emitting == 0

        if not await self._quiet(quiet):
            self.timeout_hit = True
        if nid not in self.node_stopped:
            if rt.cls.is_source() and not rt.paused:
                await self._pause(rt)
            await self._stop_node(rt)
        if not await self._quiet(lambda: rt.idle and rt.emitting == 0):
            self.timeout_hit = True
        await self._close(rt)
        self.done[nid].set()
        succ = rt.successor
        if succ is not None and succ.worker is None and not succ.cls.is_source() and self._ready(succ):
            await self._start(succ)
            await self._deliver_handover()

    async def _close(self, rt: NodeRuntime) -> None:
        """Cancel the worker and tasks; whatever is still queued goes to the replacement or is counted."""
        tasks = [t for t in (rt.worker, *rt.tasks) if t is not None]
        if rt.busy:
            self.undrained += max(1, rt.in_hand)  # cancelled mid-way: not handled, so not acknowledged
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        rt.busy = False
        rt.in_hand = 0
        rt.closed = True
        q = rt.inbox
        left: list[Message] = []
        # Taking from a full queue wakes emits that waited for room; they put and are taken too.
        for _ in range(10_000):
            got = q.take_all()
            left.extend(got)
            if not got and not q.has_waiting_senders():
                break
            await asyncio.sleep(0)
        if not left:
            return
        if rt.successor is not None:
            self.moved += len(left)
            self.handover.extend((rt.successor, m) for m in left)
            rt.logger.warning("drain timeout: %d queued message(s) handed to the replacing node", len(left))
        else:
            self.undrained += len(left)
            rt.logger.warning(
                "drain timeout: %d queued message(s) of the removed node not processed (not acknowledged)",
                len(left),
            )

    async def _deliver_handover(self) -> None:
        """Messages moved at a timeout, once their replacement runs (a waiting put cannot block a start)."""
        # Split without an await in between: concurrent drains append to the same list.
        ready = [(succ, msg) for succ, msg in self.handover if succ.worker is not None]
        self.handover = [(succ, msg) for succ, msg in self.handover if succ.worker is None]
        for succ, msg in ready:
            await succ.put(msg)

    # -- helpers -------------------------------------------------------------------------------

    def _ready(self, rt: NodeRuntime) -> bool:
        conns = self.engine.connections
        return all(name in conns for name in rt.uses) and not (rt.uses & self.pending_conns)

    async def _start(self, rt: NodeRuntime) -> None:
        try:
            await rt.node.start()
        except Exception as exc:
            rt.counters.errors += 1
            rt.set_status(NodeStatus("error", f"start failed: {type(exc).__name__}: {exc}"[:160]))
            rt.logger.error("start failed: %s: %s", type(exc).__name__, exc)
        rt.worker = asyncio.create_task(rt.run_worker(), name=f"worker:{rt.node_id}")

    async def _pause(self, rt: NodeRuntime) -> None:
        rt.paused = True
        try:
            await rt.node.pause()
        except Exception as exc:
            rt.logger.error("pause failed: %s: %s", type(exc).__name__, exc)

    async def _stop_node(self, rt: NodeRuntime) -> None:
        self.node_stopped.add(rt.node_id)
        grace = max(self.engine.stop_grace, self.deadline - time.monotonic())
        try:
            # Like Engine.stop: a sink's final flush gets a minimum time even past the deadline.
            await asyncio.wait_for(rt.node.stop(), grace)
        except Exception as exc:
            rt.logger.error("stop failed: %s: %s", type(exc).__name__, exc)

    async def _conn_call(self, conn: Connection, what: str) -> None:
        try:
            await getattr(conn, what)()
        except Exception as exc:
            log.error("connection %s failed to %s: %s: %s", conn.name, what, type(exc).__name__, exc)

    async def _quiet(self, cond: Callable[[], bool]) -> bool:
        """Wait until ``cond`` holds twice in a row (as wait_idle does); False at the deadline."""
        quiet = 0
        while True:
            if cond():
                quiet += 1
                if quiet >= 2:
                    return True
            else:
                quiet = 0
            if time.monotonic() >= self.deadline:
                return quiet > 0
            await asyncio.sleep(0.002 if quiet else 0.005)

    async def _wait_event(self, event: asyncio.Event) -> bool:
        try:
            await asyncio.wait_for(event.wait(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True

    def _outcome(self) -> ApplyOutcome:
        e = self.engine
        late = e.late_messages - self.late_before
        undrained = self.undrained + late
        outcome = ApplyOutcome(
            drain_timeout_hit=self.timeout_hit or undrained > 0,
            undrained=undrained,
            handed_over=self.moved,
            drain_timeout=self.timeout,
            duration=time.monotonic() - self.t0,
            stopped=tuple(self.retired),
            started=tuple(nid for nid in self.order if nid in self.created),
        )
        e.undrained = undrained
        if outcome.drain_timeout_hit:
            log.warning(
                "reload: drain timeout (%.1fs) hit; %d message(s) not processed (not acknowledged), "
                "%d handed to replacing nodes",
                self.timeout,
                undrained,
                self.moved,
            )
        return outcome


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _cancelled_error(exc: asyncio.CancelledError) -> NodeError:
    """Node code awaited something that was cancelled: an error of the message, not of the worker."""
    return NodeError(f"handling was cancelled: {exc}" if str(exc) else "handling was cancelled")
