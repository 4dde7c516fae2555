"""The editor at laptop size: a flow opens fitted to the window, partly stored layouts get no
overlapping boxes, and a node without status text shows no badge."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path
from typing import Any

from tests.editor.test_editor_browser import (
    CHROMIUM,
    box_of,
    browser,
    klimaflow_run,
    log_in,
    pytestmark,
    screenshot,
    sync_api,
)
from tests.flows.ttn_load import SHIPPED_FLOW

__all__ = ["browser", "pytestmark"]  # the fixture and the skip marks, taken over from there
assert CHROMIUM

FIVE = """\
id: five
label: Five
nodes:
  - {id: tick, type: inject, payload: 1, wires: [slow]}
  - {id: slow, type: delay, mode: rate, rate: 1, period: 60, drop: true, wires: [show]}
  - {id: show, type: debug, log: false}
  - {id: tock, type: inject, payload: 2, wires: [also]}
  - {id: also, type: debug, log: false}
"""


def boxes(page: Any) -> dict[str, dict[str, float]]:
    """Each node's drawflow box on the screen, by node id."""
    ids = page.locator(".kf-node").evaluate_all("els => els.map(e => e.dataset.nodeId)")
    return {i: box_of(page, i).bounding_box() for i in ids}


def columns(bs: dict[str, dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Left edge and width of each box: what fitting decides, whatever status badges appear.

    A node's height (and so the vertical centring) changes when its status text arrives,
    which may happen at any moment while the test runs.
    """
    return {i: (round(b["x"], 1), round(b["width"], 1)) for i, b in bs.items()}


def inside(b: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        b["x"] >= outer["x"]
        and b["y"] >= outer["y"]
        and b["x"] + b["width"] <= outer["x"] + outer["width"]
        and b["y"] + b["height"] <= outer["y"] + outer["height"]
    )


def intersect(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def test_a_wide_flow_opens_fitted_to_the_window(browser: Any, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "ttn-sensors.yaml").write_text(SHIPPED_FLOW.read_text(encoding="utf-8"), encoding="utf-8")
    with klimaflow_run(tmp_path, flows) as url:
        page = log_in(browser, url)
        sync_api.expect(page.locator(".kf-node")).to_have_count(6)
        canvas = page.locator("#canvas").bounding_box()
        opened = boxes(page)
        outside = [i for i, b in opened.items() if not inside(b, canvas)]
        assert outside == []
        # Their ports too, with the port names beside them.
        ports = page.locator(".drawflow-node .output, .drawflow-node .input").all()
        assert len(ports) == 15  # 10 outputs, 5 inputs (the MQTT input has none)
        assert [p.get_attribute("class") for p in ports if not inside(p.bounding_box(), canvas)] == []
        # The flow is wider than the canvas at full size, so it was zoomed out to fit.
        assert page.evaluate("() => document.querySelector('.drawflow').style.transform").endswith(")")
        right = max(b["x"] + b["width"] for b in opened.values())
        left = min(b["x"] for b in opened.values())
        assert right - left > canvas["width"] * 0.6
        screenshot(page, tmp_path, "editor-fitted.png")

        # Panned away, the whole flow is brought back by the key `f` and by the Fit button.
        page.mouse.move(canvas["x"] + 20, canvas["y"] + canvas["height"] - 10)
        page.mouse.down()
        page.mouse.move(canvas["x"] + 620, canvas["y"] + canvas["height"] - 10, steps=5)
        page.mouse.up()
        panned = boxes(page)
        assert [i for i, b in panned.items() if not inside(b, canvas)] != []
        assert columns(panned) != columns(opened)
        page.keyboard.press("f")
        refitted = boxes(page)
        assert [i for i, b in refitted.items() if not inside(b, canvas)] == []
        assert columns(refitted) == columns(opened)
        page.mouse.move(canvas["x"] + 20, canvas["y"] + canvas["height"] - 10)
        page.mouse.down()
        page.mouse.move(canvas["x"] + 420, canvas["y"] + 300, steps=5)
        page.mouse.up()
        assert columns(boxes(page)) != columns(opened)
        page.click("#fit")
        refitted = boxes(page)
        assert [i for i, b in refitted.items() if not inside(b, canvas)] == []
        assert columns(refitted) == columns(opened)


def test_nodes_without_a_stored_position_overlap_no_box(browser: Any, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "five.yaml").write_text(FIVE, encoding="utf-8")
    # Two boxes stored where dagre would put the other three.
    stored = {"tick": {"x": 40, "y": 160}, "also": {"x": 360, "y": 40}}
    (flows / "five.layout.json").write_text(json.dumps({"positions": stored}), encoding="utf-8")
    with klimaflow_run(tmp_path, flows) as url:
        page = log_in(browser, url)
        sync_api.expect(page.locator(".kf-node")).to_have_count(5)
        placed = boxes(page)
        assert sorted(placed) == ["also", "show", "slow", "tick", "tock"]
        screenshot(page, tmp_path, "editor-partial-layout.png")
        assert [(a, b) for a, b in combinations(sorted(placed), 2) if intersect(placed[a], placed[b])] == []
        # The stored two stay where they were stored.
        for node_id, p in stored.items():
            assert box_of(page, node_id).evaluate(
                "e => [parseFloat(e.style.left), parseFloat(e.style.top)]"
            ) == [
                p["x"],
                p["y"],
            ]


def test_no_status_square_without_status_text(browser: Any, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "five.yaml").write_text(FIVE, encoding="utf-8")
    with klimaflow_run(tmp_path, flows) as url:
        page = log_in(browser, url)
        sync_api.expect(page.locator(".kf-node")).to_have_count(5)
        for node_id in ("show", "slow"):
            sync_api.expect(box_of(page, node_id).locator(".kf-status")).to_be_hidden()
        # The delay reports "ok" with no words when a message went through: still no square.
        box_of(page, "tick").locator(".kf-inject").click()
        sync_api.expect(page.locator("#debug li")).to_have_text(["show payload: 1"])
        badge = box_of(page, "slow").locator(".kf-status")
        sync_api.expect(badge).to_have_class(re.compile(r"\bok\b"))
        sync_api.expect(badge).to_be_hidden()
        # The next message within the minute is dropped: the delay says so, with a square.
        box_of(page, "tick").locator(".kf-inject").click()
        sync_api.expect(badge).to_have_text("dropped 1")
        sync_api.expect(badge).to_be_visible()
        sync_api.expect(badge).to_have_class(re.compile(r"\bwarning\b"))
        square = badge.evaluate("e => getComputedStyle(e, '::before').backgroundColor")
        assert square == "rgb(238, 153, 0)"
        sync_api.expect(box_of(page, "show").locator(".kf-status")).to_be_hidden()
