"""Supervisor: reload from files (validated first, refused edits keep the flow running), the
reload result, watching flow files and the files flows reference, debouncing bursts of saves."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
from pydantic import Field

from engine.message import Delivery
from engine.node import Node
from engine.registry import Registry
from engine.supervisor import ReloadResult, Supervisor, referenced_files
from engine.types import NodeConfig
from nodes.mqtt import MqttConnection
from tests.conftest import TLS_BROKER_USER
from tests.engine.test_reload import Fragile, SlowNode
from tests.flowkit import CollectNode, FlowHarness, test_registry, validate_doc
from tests.services.mosquitto import Mosquitto
from tests.services.tls import make_ca_and_server_cert


class FileReaderConfig(NodeConfig):
    """A file read once, at start."""

    path: str = Field(description="File whose text becomes every payload.")


class FileReader(Node):
    """Test node: replaces the payload by the file's text as read at start (it does not reload)."""

    type_name = "file-reader"
    Config = FileReaderConfig
    config: FileReaderConfig

    async def start(self) -> None:
        self.text = await asyncio.to_thread(Path(self.config.path).read_text, encoding="utf-8")

    async def on_message(self, msg: Any) -> None:
        msg.payload = self.text
        await self.emit(msg)


def registry() -> Registry:
    reg = test_registry()
    for cls in (SlowNode, Fragile, FileReader):
        reg.add_node(cls)
    return reg


def flow(*nodes: dict[str, Any], flow_id: str = "f") -> str:
    return json.dumps({"id": flow_id, "nodes": list(nodes)}, indent=1)


BASE = [
    {"id": "a", "type": "slow", "tag": "v1", "wires": ["b"]},
    {"id": "b", "type": "slow", "tag": "b", "wires": ["out"]},
    {"id": "out", "type": "collect"},
]


@asynccontextmanager
async def supervised(
    tmp_path: Path, text: str, drain_timeout: float = 5.0
) -> AsyncIterator[tuple[Supervisor, Path]]:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    path = flows / "flow.json"
    path.write_text(text, encoding="utf-8")
    sup = Supervisor(
        [flows], data_dir=tmp_path / "data", drain_timeout=drain_timeout, registry=registry(), environ={}
    )
    await sup.start()
    try:
        yield sup, path
    finally:
        await sup.stop()


def harness(sup: Supervisor) -> FlowHarness:
    assert sup.engine is not None
    return FlowHarness(sup.engine)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- reload --------------------------------------------------------------------------------------


async def test_reload_applies_the_diff_and_reports_it(tmp_path: Path) -> None:
    async with supervised(tmp_path, flow(*BASE)) as (sup, path):
        first = sup.revision
        b = harness(sup).engine.runtimes["b"]
        path.write_text(
            flow(
                {"id": "a", "type": "slow", "tag": "v2", "wires": ["b", "extra"]},
                {"id": "b", "type": "slow", "tag": "b", "wires": ["out"]},
                {"id": "out", "type": "collect"},
                {"id": "extra", "type": "collect"},
            )
        )
        result = await sup.reload()
        assert result.ok
        assert sup.reloads == 1
        assert (result.revision, result.previous_revision) == (sup.revision, first)
        assert result.revision != first
        d = result.to_dict()
        assert d["diff"] == {
            "added": ["extra"],
            "removed": [],
            "changed": ["a"],
            "rewired": [],
            "unchanged": ["b", "out"],
            "connections_added": [],
            "connections_removed": [],
            "connections_changed": [],
        }
        assert (
            d["trigger"],
            d["drain_timeout_hit"],
            d["drain_timeout"],
            d["undrained"],
            d["handed_over"],
        ) == (
            "file",
            False,
            5.0,
            0,
            0,
        )
        assert (d["errors"], d["message"], d["changed_files"], d["reloaded_in_place"]) == ([], "", [], [])
        assert sup.last_result is result
        assert list(sup.history)[-1] is result
        h = harness(sup)
        assert h.engine.runtimes["b"] is b
        await h.send("a", 1)
        await h.idle()
        assert h.payloads("out") == [["b", ["v2", 1]]]
        assert h.payloads("extra") == [["v2", 1]]

        again = await sup.reload()
        assert (again.ok, again.message, again.revision) == (True, "no change", result.revision)
        assert sup.reloads == 1


async def test_an_invalid_edit_is_refused_and_the_running_flow_keeps_working(tmp_path: Path) -> None:
    async with supervised(tmp_path, flow(*BASE)) as (sup, path):
        revision = sup.revision
        before = dict(harness(sup).engine.runtimes)
        path.write_text(flow({"id": "a", "type": "slow", "tag": "v2", "wires": ["nowhere"]}, *BASE[1:]))
        result = await sup.reload()
        assert result.ok is False
        assert result.message == "refused: the running flows stay as they are"
        assert (result.revision, result.previous_revision, result.diff) == (revision, revision, None)
        assert [e["message"] for e in result.to_dict()["errors"]] == ["wire to unknown node 'nowhere'"]
        assert sup.revision == revision
        assert sup.reloads == 0
        h = harness(sup)
        assert h.engine.runtimes == before
        await h.send("a", 1)
        await h.idle()
        assert h.payloads("out") == [["b", ["v1", 1]]]


async def test_a_node_that_cannot_be_built_is_refused_without_touching_the_flow(tmp_path: Path) -> None:
    nodes = [{"id": "x", "type": "fragile", "wires": ["out"]}, {"id": "out", "type": "collect"}]
    async with supervised(tmp_path, flow(*nodes)) as (sup, path):
        revision = sup.revision
        path.write_text(flow({"id": "x", "type": "fragile", "fail": True, "wires": ["out"]}, nodes[1]))
        result = await sup.reload()
        assert result.ok is False
        assert result.message == "refused: node x: cannot be created: RuntimeError: cannot build"
        assert [(e["code"], e["message"]) for e in result.to_dict()["errors"]] == [
            ("apply", "node x: cannot be created: RuntimeError: cannot build")
        ]
        assert sup.revision == revision
        h = harness(sup)
        await h.send("x", 1)
        await h.idle()
        assert h.payloads("out") == [1]


async def test_a_drain_timeout_is_reported_in_the_result(tmp_path: Path) -> None:
    nodes = [{"id": "a", "type": "slow", "delay": 0.05, "wires": ["out"]}, {"id": "out", "type": "collect"}]
    async with supervised(tmp_path, flow(*nodes), drain_timeout=0.12) as (sup, path):
        h = harness(sup)
        for i in range(10):
            d = Delivery()
            await h.send("a", i, delivery=d)
            d.release()
        path.write_text(flow({"id": "a", "type": "slow", "tag": "new", "wires": ["out"]}, nodes[1]))
        result = await sup.reload()
        await h.idle()
        done_by_old = [p for p in h.payloads("out") if p[0] == ""]
        assert result.ok
        assert result.drain_timeout_hit
        assert (result.drain_timeout, result.undrained, result.handed_over) == (
            0.12,
            1,
            10 - len(done_by_old) - 1,
        )
        assert result.message == (
            f"drain timeout (0.12s) hit: 1 message(s) not processed (not acknowledged), "
            f"{result.handed_over} handed to replacing nodes"
        )


async def test_a_renamed_flow_file_is_the_one_flow_files_names_and_deploys_write(tmp_path: Path) -> None:
    async with supervised(tmp_path, flow(*BASE)) as (sup, path):
        revision = sup.revision
        renamed = path.with_name("renamed.json")
        path.rename(renamed)
        result = await sup.reload()
        assert (result.ok, result.message, result.revision) == (True, "no change", revision)
        assert sup.reloads == 0
        assert {k: p.resolve() for k, p in sup.flow_files().items()} == {"f": renamed.resolve()}
        edited = json.loads(flow({"id": "a", "type": "slow", "tag": "v2", "wires": ["b"]}, *BASE[1:]))
        deployed = await sup.deploy({"f": edited}, base_revision=revision)
        assert deployed.ok
        assert sorted(p.name for p in path.parent.iterdir()) == ["renamed.json"]
        assert json.loads(renamed.read_text(encoding="utf-8"))["nodes"][0]["tag"] == "v2"


def test_flow_dir_is_the_first_directory_else_the_first_files_folder(tmp_path: Path) -> None:
    file = tmp_path / "one" / "a.yaml"
    file.parent.mkdir()
    file.touch()
    folder = tmp_path / "two"
    folder.mkdir()
    assert Supervisor([file, folder]).flow_dir() == folder
    assert Supervisor([file]).flow_dir() == file.parent


# -- watching --------------------------------------------------------------------------------------


@asynccontextmanager
async def watching(sup: Supervisor) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(sup.watch(debounce=0.05, stop=stop, settle=0.3))
    await asyncio.sleep(0.3)  # the watch is set up
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_burst_of_saves_is_one_reload(tmp_path: Path) -> None:
    async with supervised(tmp_path, flow(*BASE)) as (sup, path), watching(sup):
        for tag in ("t1", "t2", "t3", "t4", "t5"):
            path.write_text(flow({"id": "a", "type": "slow", "tag": tag, "wires": ["b"]}, *BASE[1:]))
            await asyncio.sleep(0.05)
        await until(lambda: sup.reloads >= 1)
        await asyncio.sleep(0.6)  # nothing else comes of the burst
        assert len(sup.history) == 2
        assert sup.reloads == 1
        h = harness(sup)
        await h.send("a", 1)
        await h.idle()
        assert h.payloads("out") == [["b", ["t5", 1]]]
        # A hidden temporary file beside the flows (an atomic save in progress) is no reason.
        (path.parent / ".flow.json.123.tmp").write_text("{")
        await asyncio.sleep(0.6)
        assert len(sup.history) == 2
        # The watch goes on: a later save is a second reload.
        path.write_text(flow({"id": "a", "type": "slow", "tag": "t6", "wires": ["b"]}, *BASE[1:]))
        await until(lambda: sup.reloads == 2)
        assert sup.last_result is not None
        assert sup.last_result.trigger == "file"


REGISTRY_HEADER = "device_id;location;measurement;soil_type;land_use;latitude;longitude\n"
ROW_1 = "eui-01;Bad Belzig;Marktplatz;Sand;Acker;52.14;12.59\n"
ROW_2 = "eui-02;Bad Belzig;Burgwiese;Lehm;Wiese;52.14;12.58\n"


async def test_a_referenced_file_is_watched_reread_in_place_or_its_reader_restarted(tmp_path: Path) -> None:
    csv = tmp_path / "sensors.csv"
    csv.write_text(REGISTRY_HEADER + ROW_1)
    text = tmp_path / "text.txt"
    text.write_text("first")
    nodes = [
        {"id": "reg", "type": "registry-enrich", "path": str(csv), "check_interval": 3600, "wires": ["out"]},
        {"id": "reader", "type": "file-reader", "path": str(text), "wires": ["out2"]},
        {"id": "out", "type": "collect"},
        {"id": "out2", "type": "collect"},
    ]
    async with supervised(tmp_path, flow(*nodes)) as (sup, _path):
        assert sup.validated is not None
        refs = referenced_files(sup.validated)
        assert dict(refs.by_node) == {csv: {"reg"}, text: {"reader"}}
        roots, files = sup.watched()
        assert tmp_path in roots
        assert {csv, text} <= files
        h = harness(sup)
        reg = h.engine.runtimes["reg"]
        reader = h.engine.runtimes["reader"]
        registry_node: Any = reg.node
        assert sorted(registry_node.devices) == ["eui-01"]
        async with watching(sup):
            csv.write_text(REGISTRY_HEADER + ROW_1 + ROW_2)
            await until(lambda: len(sup.history) == 2)
            result = sup.last_result
            assert result is not None
            assert result.ok
            assert (result.changed_files, result.reloaded_in_place) == ([str(csv)], ["reg"])
            assert result.message == "files re-read by reg"
            assert h.engine.runtimes["reg"] is reg  # same node, state kept
            assert sorted(registry_node.devices) == ["eui-01", "eui-02"]

            text.write_text("second")
            await until(lambda: len(sup.history) == 3)
            result = sup.last_result
            assert result is not None
            assert result.ok
            assert result.diff is not None
            assert (result.changed_files, result.diff.changed) == ([str(text)], ("reader",))
            assert h.engine.runtimes["reader"] is not reader
            await h.send("reader", None)
            await h.idle()
            assert h.payloads("out2") == ["second"]
            collected: CollectNode = h.engine.node("out2")  # type: ignore[assignment]
            assert len(collected.messages) == 1


def test_files_a_connection_names_are_referenced_by_the_connection(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("a CA\n")
    doc = {
        "id": "f",
        "connections": {
            "b": {"type": "mqtt", "url": "mqtts://127.0.0.1:8883", "ca_file": str(ca)},
            "plain": {"type": "mqtt", "host": "127.0.0.1"},
        },
        "nodes": [{"id": "in", "type": "mqtt-in", "broker": "b", "topic": "t/#", "wires": []}],
    }
    validated, issues = validate_doc(doc)
    assert validated is not None, issues
    refs = referenced_files(validated)
    assert dict(refs.by_connection) == {ca: {"b"}}
    assert dict(refs.by_node) == {}
    assert refs.paths == {ca}


async def test_a_changed_tls_file_restarts_its_connection_live(
    tls_broker: tuple[Mosquitto, Path], tmp_path: Path
) -> None:
    broker, ca = tls_broker
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    bundle = trusted / "ca-bundle.crt"
    bundle.write_text(ca.read_text())
    user, password = TLS_BROKER_USER
    secret = tmp_path / "mqtt-password"
    secret.write_text(password)
    doc = {
        "id": "f",
        "connections": {
            "b": {
                "type": "mqtt",
                "url": broker.url,
                "ca_file": str(bundle),
                "username": user,
                "password": f"${{file:{secret}}}",
                "reconnect_min": 0.1,
                "reconnect_max": 0.3,
            }
        },
        "nodes": [
            {"id": "in", "type": "mqtt-in", "broker": "b", "topic": "t/#", "qos": 1, "wires": ["out"]},
            {"id": "out", "type": "collect"},
        ],
    }

    async def publish(n: int) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username=user, password=password, tls_context=ctx
        ) as c:
            await c.publish("t/1", json.dumps({"n": n}), qos=1)

    async with supervised(tmp_path, json.dumps(doc)) as (sup, _path):
        roots, files = sup.watched()
        assert bundle in files
        assert trusted in roots
        h = harness(sup)
        old = h.engine.connections["b"]
        assert isinstance(old, MqttConnection)
        await until(lambda: old.state == "connected")
        await publish(1)
        await until(lambda: h.payloads("out") == [{"n": 1}])
        in_node = h.engine.runtimes["in"]
        async with watching(sup):
            # The CA bundle is renewed: it now trusts a second CA as well.
            other = tmp_path / "other"
            other.mkdir()
            other_ca, _, _ = make_ca_and_server_cert(other, "other")
            bundle.write_text(ca.read_text() + other_ca.read_text())
            await until(lambda: len(sup.history) == 2, timeout=10)
        result = sup.last_result
        assert result is not None
        assert result.ok, result.message
        assert result.trigger == "file"
        assert result.changed_files == [str(bundle)]
        assert result.diff is not None
        assert result.diff.connections_changed == ("b",)
        assert result.diff.changed == ("in",)  # the node using it moves to the new connection
        assert result.diff.unchanged == ("out",)
        assert result.revision == result.previous_revision  # the flow itself did not change
        new = h.engine.connections["b"]
        assert isinstance(new, MqttConnection)
        assert new is not old
        assert old.state == "closed"
        assert h.engine.runtimes["in"] is not in_node
        await until(lambda: new.state == "connected")
        assert new.connects == 1
        await publish(2)
        await until(lambda: h.payloads("out") == [{"n": 1}, {"n": 2}])


async def test_no_reload_after_stop(tmp_path: Path) -> None:
    async with supervised(tmp_path, flow(*BASE)) as (sup, path):
        revision = sup.revision
        await sup.stop()
        path.write_text(flow({"id": "a", "type": "slow", "tag": "v2", "wires": ["b"]}, *BASE[1:]))
        result = await sup.reload()
        assert (result.ok, result.message) == (False, "refused: the engine has stopped")
        assert sup.revision == revision


async def test_the_watchers_echo_of_a_deploy_keeps_the_deploys_result(tmp_path: Path) -> None:
    async with supervised(tmp_path, flow(*BASE)) as (sup, _path), watching(sup):
        file_reloads: list[ReloadResult] = []
        reload = sup.reload

        async def spy(*args: Any, **kwargs: Any) -> ReloadResult:
            result = await reload(*args, **kwargs)
            file_reloads.append(result)
            return result

        sup.reload = spy  # type: ignore[method-assign]
        edited = json.loads(flow({"id": "a", "type": "slow", "tag": "v2", "wires": ["b"]}, *BASE[1:]))
        deployed = await sup.deploy({"f": edited}, base_revision=sup.revision)
        assert (deployed.ok, deployed.trigger) == (True, "api")
        # The deploy wrote the flow file; the watcher sees it and finds nothing to change.
        await until(lambda: bool(file_reloads))
        assert [(r.trigger, r.message) for r in file_reloads] == [("file", "no change")]
        assert sup.last_result is deployed
        assert [r.trigger for r in sup.history] == ["start", "api"]
        assert sup.reloads == 1
