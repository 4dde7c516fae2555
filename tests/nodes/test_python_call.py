import asyncio
from typing import Any

import pytest

from nodes.python_call import MAX_THREADS
from tests.flowkit import run_flow, validate_doc
from tests.nodes import sample_functions

FN = "tests.nodes.sample_functions"


def python_flow(function: str, **config: Any) -> dict[str, Any]:
    return {
        "id": "f",
        "nodes": [
            {"id": "py", "type": "python", "function": function, **config, "wires": ["out"]},
            {"id": "out", "type": "collect"},
            {"id": "c", "type": "catch", "wires": ["errs"]},
            {"id": "errs", "type": "collect"},
        ],
    }


def config_errors(doc: dict[str, Any]) -> list[str]:
    validated, issues = validate_doc(doc)
    assert validated is None
    return [i.format() for i in issues if i.severity == "error"]


async def test_sync_function_with_kwargs_returns_the_new_payload() -> None:
    async with run_flow(python_flow(f"{FN}:to_fahrenheit", kwargs={"offset": -0.5})) as h:
        await h.send("py", {"celsius": 20.5}, "t/1", station="rathaus")
        await h.idle()
        [msg] = h.received("out")
    assert msg.payload == {"fahrenheit": 68.0}
    assert (msg.topic, msg.meta) == ("t/1", {"station": "rathaus"})


async def test_sync_function_runs_outside_the_event_loop_thread() -> None:
    async with run_flow(python_flow(f"{FN}:thread_name")) as h:
        await h.send("py", None)
        await h.idle()
        assert h.payloads("out") == ["python:py"]


async def test_message_input_gets_the_dict_view() -> None:
    async with run_flow(python_flow(f"{FN}:describe", input="message")) as h:
        await h.send("py", 21.5, "temp", station="schule")
        await h.idle()
        assert h.payloads("out") == ["temp=21.5 from schule"]


async def test_async_function_is_awaited() -> None:
    async with run_flow(python_flow(f"{FN}:async_double")) as h:
        await h.send("py", 21)
        await h.idle()
        assert h.payloads("out") == [42]


async def test_none_drops_and_split_emits_one_message_per_element() -> None:
    async with run_flow(python_flow(f"{FN}:keep_positive")) as h:
        await h.send("py", -1.5)
        await h.send("py", 2.5)
        await h.idle()
        assert h.payloads("out") == [2.5]
        assert h.engine.runtimes["py"].counters.dropped == 1

    async with run_flow(python_flow(f"{FN}:readings", split=True)) as h:
        msg = await h.send("py", {"values": [1, {"t": 2}]}, "batch", device={"id": "s1"})
        await h.idle()
        parts = h.received("out")
        assert [p.payload for p in parts] == [1, {"t": 2}]  # the None element is skipped
        assert [(p.id, p.topic) for p in parts] == [(msg.id, "batch"), (msg.id, "batch")]
        parts[0].meta["device"]["id"] = "changed"
        assert parts[1].meta == {"device": {"id": "s1"}}

    async with run_flow(python_flow(f"{FN}:readings")) as h:
        await h.send("py", {"values": [1]})
        await h.idle()
        assert h.payloads("out") == [[1, None]]


async def test_slow_sync_function_times_out_without_blocking_the_loop() -> None:
    sample_functions.slow_sync_finished.clear()
    doc = python_flow(f"{FN}:slow_sync", kwargs={"seconds": 0.4}, timeout="50ms")
    async with run_flow(doc) as h:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await h.send("py", {"n": 1})
        await h.idle()
        assert loop.time() - t0 < 0.3  # the loop was free while the function slept
        assert h.received("out") == []
        [err] = h.received("errs")
        assert err.payload == {"n": 1}
        assert err.meta["error"]["class"] == "FunctionError"
        assert err.meta["error"]["message"] == (
            f"{FN}:slow_sync did not return within 0.05s (it may still be running in its thread)"
        )
        assert h.engine.runtimes["py"].status.level == "warning"
        # The late result is discarded, not emitted.
        assert await asyncio.to_thread(sample_functions.slow_sync_finished.wait, 2)
        await asyncio.sleep(0.05)
        assert h.received("out") == []


async def test_stuck_calls_are_bounded_per_node() -> None:
    doc = python_flow(f"{FN}:slow_sync", kwargs={"seconds": 0.3}, timeout="10ms")
    async with run_flow(doc) as h:
        for n in range(MAX_THREADS + 1):
            await h.send("py", n)
        await h.idle()
        messages = [e.meta["error"]["message"] for e in h.received("errs")]
        assert messages == [
            f"{FN}:slow_sync did not return within 0.01s (it may still be running in its thread)"
        ] * MAX_THREADS + [
            f"{FN}:slow_sync: {MAX_THREADS} earlier calls are still running after timing out; not starting another"
        ]
        await asyncio.sleep(0.4)  # the stuck calls finish; the node accepts calls again
        await h.send("py", "again")
        await h.idle()
        last = h.received("errs")[-1]
        assert (last.payload, last.meta["error"]["message"]) == ("again", messages[0])  # started, not refused


async def test_slow_async_function_times_out() -> None:
    async with run_flow(python_flow(f"{FN}:async_slow", timeout=0.05)) as h:
        await h.send("py", 1)
        await h.idle()
        [err] = h.received("errs")
    assert err.meta["error"]["message"] == f"{FN}:async_slow did not return within 0.05s"


async def test_exceptions_become_expression_errors_unless_they_are_klimaflow_errors() -> None:
    async with run_flow(python_flow(f"{FN}:broken")) as h:
        await h.send("py", 1)
        await h.idle()
        [err] = h.received("errs")
    assert err.meta["error"]["class"] == "FunctionError"
    assert err.meta["error"]["message"] == f"{FN}:broken raised ZeroDivisionError: calibration table is empty"

    async with run_flow(python_flow(f"{FN}:rejects")) as h:
        await h.send("py", "garbage")
        await h.idle()
        [err] = h.received("errs")
    assert err.meta["error"]["class"] == "DecodeError"
    assert err.meta["error"]["message"] == "not a reading: 'garbage'"


@pytest.mark.parametrize(
    ("function", "extra", "expected"),
    [
        (
            "tests.nodes.no_such_module:f",
            {},
            "function: cannot import module 'tests.nodes.no_such_module': "
            "ModuleNotFoundError: No module named 'tests.nodes.no_such_module'",
        ),
        (f"{FN}:nope", {}, f"function: module '{FN}' has no attribute 'nope'"),
        (f"{FN}:NOT_CALLABLE", {}, f"function: '{FN}:NOT_CALLABLE' is a int, not a function"),
        ("print('hi')", {}, "function: \"print('hi')\" is not of the form 'package.module:function'"),
        (
            f"{FN}:to_fahrenheit",
            {"kwargs": {"ofset": 1}},
            f"kwargs: {FN}:to_fahrenheit cannot be called as function(value, **kwargs): "
            "got an unexpected keyword argument 'ofset'",
        ),
        (f"{FN}:to_fahrenheit", {"timeout": 0}, "timeout: must be greater than 0"),
        (
            f"{FN}:to_fahrenheit",
            {"timeout": "soon"},
            "timeout: invalid duration 'soon': use seconds (e.g. 5) or a string like '500ms', '5s', '1m', '1h'",
        ),
    ],
)
def test_bad_function_references_are_reported_by_validation(
    function: str, extra: dict[str, Any], expected: str
) -> None:
    assert config_errors(python_flow(function, **extra)) == [f"flow.json:1: node py: {expected}"]
