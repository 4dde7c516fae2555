"""The visual editor in a real browser (Chromium, headless) against `klimaflow run --api`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from editor_api.auth import hash_token
from editor_api.ui import DIST
from tests.flows.ttn_load import SHIPPED_FLOW, flow_env, make_uplinks, messages, points, publish
from tests.services.influxdb import InfluxDB
from tests.services.mosquitto import Mosquitto

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup.sh installs it)"
    ),
    pytest.mark.skipif(
        not (DIST / "index.html").is_file(), reason="editor not built (scripts/setup.sh builds it)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api")

TOKEN = "kf_browser-test-token-0123456789abcdef"
FLOW = """\
# Readings: a button, a rename, a debug node.
id: readings
label: Readings
nodes:
  - id: tick   # pressed from the editor
    type: inject
    payload: {temp: 21.5}
    wires: [rename]
  - id: rename
    type: change
    rules:
      - move: payload.temp
        to: payload.temperature
    wires: [show]
  - id: show
    type: debug
    log: false
"""


READER_TOKEN = "kf_browser-reader-token-0123456789abcdef"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def klimaflow_run(tmp_path: Path, flows: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`klimaflow run --api` over ``flows`` with an admin and a reader token; yields its URL."""
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        json.dumps(
            {
                "tokens": [
                    {"id": "test", "role": "admin", "token_hash": hash_token(TOKEN)},
                    {"id": "rita", "role": "reader", "token_hash": hash_token(READER_TOKEN)},
                ]
            }
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("klimaflow")),
            "run",
            str(flows),
            "--api",
            "127.0.0.1:0",
            "--auth-config",
            str(auth),
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KLIMAFLOW_DATA": str(tmp_path / "data"), **(env or {})},
    )
    assert proc.stderr is not None
    url = None
    deadline = time.monotonic() + 20
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"editor API on (http://\S+)", line)
        url = m.group(1) if m else None
    # Keep reading what it logs, so a full pipe never blocks the server.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        assert url, "klimaflow run --api did not print its URL"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "readings.yaml").write_text(FLOW, encoding="utf-8")
    with klimaflow_run(tmp_path, flows) as url:
        yield url, flows


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


def log_in(browser: Any, url: str, token: str = TOKEN) -> Any:
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url + "/")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    sync_api.expect(page.locator("#app")).to_be_visible()
    return page


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """Into $KLIMAFLOW_SCREENSHOTS if set (for a person to look at), else the test's tmp_path."""
    folder = Path(os.environ.get("KLIMAFLOW_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def _wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_edit_a_flow_in_the_browser(server: tuple[str, Path], browser: Any, tmp_path: Path) -> None:
    url, flows = server
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url + "/")
    assert page.url == url + "/editor/"
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")

    # The flow is drawn: three boxes with their type, wires between the named ports, left to right.
    nodes = page.locator(".kf-node")
    sync_api.expect(nodes).to_have_count(3)
    assert page.locator("#flows li").all_inner_texts() == ["Readings"]
    assert page.locator(".kf-node .kf-type").all_inner_texts() == ["inject", "change", "debug"]
    sync_api.expect(page.locator(".drawflow .connection")).to_have_count(2)
    wired = sorted(
        (c.get_attribute("class") or "").split()[1:5] for c in page.locator(".drawflow .connection").all()
    )
    ids = {n.get_attribute("data-node-id"): n.locator("xpath=../..").get_attribute("id") for n in nodes.all()}
    assert wired == sorted(
        [
            [f"node_in_{ids['rename']}", f"node_out_{ids['tick']}", "output_1", "input_1"],
            [f"node_in_{ids['show']}", f"node_out_{ids['rename']}", "output_1", "input_1"],
        ]
    )
    assert page.locator(f"#{ids['rename']} .output").evaluate_all("els => els.map(e => e.dataset.port)") == [
        "out",
        "error",
    ]
    boxes = {
        i: page.locator(f".kf-node[data-node-id={i}]").bounding_box() for i in ("tick", "rename", "show")
    }
    assert boxes["tick"]["x"] + boxes["tick"]["width"] < boxes["rename"]["x"]  # type: ignore[index]
    assert boxes["rename"]["x"] + boxes["rename"]["width"] < boxes["show"]["x"]  # type: ignore[index]

    # Moving a box saves its position beside the flow file, not in it.
    show = page.locator(".kf-node[data-node-id=show] .kf-type")
    b = show.bounding_box()
    assert b is not None
    page.mouse.move(b["x"] + 5, b["y"] + 5)
    page.mouse.down()
    page.mouse.move(b["x"] + 65, b["y"] + 125, steps=5)
    page.mouse.up()
    layout_file = flows / "readings.layout.json"
    _wait_for(layout_file.exists)
    saved = json.loads(layout_file.read_text(encoding="utf-8"))["positions"]
    node_style = page.locator(f"#{ids['show']}")
    left = node_style.evaluate("e => parseFloat(e.style.left)")
    assert saved["show"]["x"] == pytest.approx(left, abs=1)
    assert set(saved) == {"tick", "rename", "show"}
    assert (flows / "readings.yaml").read_text(encoding="utf-8") == FLOW

    # Reloading the page restores the moved box where it was put.
    page.reload()
    sync_api.expect(nodes).to_have_count(3)
    assert page.locator(".drawflow-node:has([data-node-id=show])").evaluate(
        "e => parseFloat(e.style.left)"
    ) == pytest.approx(saved["show"]["x"], abs=1)

    # An invalid value is refused and shown next to its field.
    page.dblclick(".kf-node[data-node-id=show] .kf-type")
    page.fill("#node-form [data-field=keep] input", "99999")
    page.click("#node-form button.primary")
    page.click("#deploy")
    sync_api.expect(page.locator("#result.error")).to_contain_text("Refused")
    page.dblclick(".kf-node[data-node-id=show] .kf-type")
    sync_api.expect(page.locator("#node-form [data-field=keep] .field-error")).not_to_be_empty()

    # A valid edit deploys: the flow file changes, its comments stay.
    page.fill("#node-form [data-field=keep] input", "5")
    page.fill("#node-form [data-field=property] input", "payload.temperature")
    page.click("#node-form button.primary")
    page.keyboard.press("Control+s")
    sync_api.expect(page.locator("#result.ok")).to_contain_text("Deployed")
    text = (flows / "readings.yaml").read_text(encoding="utf-8")
    assert "    property: payload.temperature\n" in text
    assert "    keep: 5\n" in text
    assert "  - id: tick   # pressed from the editor\n" in text

    screenshot(page, tmp_path, "editor-readings.png")


def box_of(page: Any, node_id: str) -> Any:
    """drawflow's element for a node (it holds the ports; .kf-node is only the content)."""
    return page.locator(f".drawflow-node:has(.kf-node[data-node-id='{node_id}'])")


def centre(locator: Any) -> tuple[float, float]:
    b = locator.bounding_box()
    assert b is not None
    return b["x"] + b["width"] / 2, b["y"] + b["height"] / 2


def draw_wire(page: Any, source: str, port: str, target: str) -> None:
    """Press on the source's output port, drag to the target's input, let go: as a person does."""
    page.mouse.move(*centre(box_of(page, source).locator(f".output[data-port='{port}']")))
    page.mouse.down()
    x, y = centre(box_of(page, target).locator(".input"))
    page.mouse.move(x - 30, y, steps=4)
    page.mouse.move(x, y, steps=2)
    page.mouse.up()


def drop_from_palette(page: Any, node_type: str, x: float, y: float) -> None:
    """Drag a palette item onto the canvas at (x, y), relative to the canvas's top-left corner."""
    page.drag_and_drop(f".palette-item[data-type='{node_type}']", "#canvas", target_position={"x": x, "y": y})


def wires_of(page: Any) -> list[tuple[str, str, str]]:
    """(source node id, port, target node id) of every wire drawn, sorted."""
    return sorted(
        tuple(w)
        for w in page.evaluate(
            """() => [...document.querySelectorAll('.drawflow .connection')].map(c => {
                const cls = [...c.classList];
                const df = (prefix) => cls.find(k => k.startsWith(prefix)).slice(prefix.length);
                const id = (n) => document.querySelector(`#node-${n} .kf-node`).dataset.nodeId;
                const out = document.querySelector(`#node-${df('node_out_node-')} .${cls.find(k => k.startsWith('output_'))}`);
                return [id(df('node_out_node-')), out.dataset.port, id(df('node_in_node-'))];
            })"""
        )
    )


def test_add_wire_run_delete_and_undo_in_the_browser(
    server: tuple[str, Path], browser: Any, tmp_path: Path
) -> None:
    url, flows = server
    page = log_in(browser, url)
    nodes = page.locator(".kf-node")
    sync_api.expect(nodes).to_have_count(3)
    original = [("rename", "out", "show"), ("tick", "out", "rename")]
    assert wires_of(page) == original

    # A debug node dragged from the palette lands where it was dropped, and is wired from the button.
    canvas = page.locator("#canvas").bounding_box()
    drop_from_palette(page, "debug", 300, 330)
    sync_api.expect(nodes).to_have_count(4)
    added = box_of(page, "debug-1")
    assert added.locator(".kf-type").inner_text() == "debug"
    b = added.bounding_box()
    assert (b["x"] - canvas["x"], b["y"] - canvas["y"]) == (
        pytest.approx(300, abs=2),
        pytest.approx(330, abs=2),
    )
    draw_wire(page, "tick", "out", "debug-1")
    assert wires_of(page) == sorted([*original, ("tick", "out", "debug-1")])

    # Deployed, the ▶ button sends a message: both debug nodes show it in the sidebar.
    page.click("#deploy")
    sync_api.expect(page.locator("#result.ok")).to_contain_text("Deployed")
    text = (flows / "readings.yaml").read_text(encoding="utf-8")
    assert "  - id: debug-1\n    type: debug\n" in text
    assert "wires: [rename, debug-1]" in text
    box_of(page, "tick").locator(".kf-inject").click()
    debug = page.locator("#debug li")
    sync_api.expect(debug).to_have_count(2)
    assert sorted(debug.all_inner_texts()) == [
        'debug-1 payload: {"temp":21.5}',
        'show payload: {"temperature":21.5}',
    ]

    # A node added with a click is removed with the Delete key, and Ctrl+Z brings it back.
    page.click(".palette-item[data-type='delay']")
    sync_api.expect(nodes).to_have_count(5)
    delay = box_of(page, "delay-1")
    delay.locator(".kf-type").click()
    sync_api.expect(delay).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("Delete")
    sync_api.expect(nodes).to_have_count(4)
    assert page.locator(".kf-node[data-node-id='delay-1']").count() == 0
    page.keyboard.press("Control+z")
    sync_api.expect(nodes).to_have_count(5)
    assert box_of(page, "delay-1").locator(".kf-type").inner_text() == "delay"

    # A wire is selected with a click and removed with Delete; Ctrl+Z draws it again.
    wire = page.locator(f".connection.node_in_{box_of(page, 'debug-1').get_attribute('id')} .main-path")
    wire.dispatch_event("mousedown")
    page.keyboard.press("Delete")
    sync_api.expect(page.locator(".drawflow .connection")).to_have_count(2)
    assert wires_of(page) == original
    page.keyboard.press("Control+z")
    sync_api.expect(page.locator(".drawflow .connection")).to_have_count(3)
    assert wires_of(page) == sorted([*original, ("tick", "out", "debug-1")])


def test_a_reader_sees_the_flow_but_cannot_deploy(server: tuple[str, Path], browser: Any) -> None:
    url, flows = server
    page = log_in(browser, url, READER_TOKEN)
    sync_api.expect(page.locator(".kf-node")).to_have_count(3)
    page.click(".palette-item[data-type='debug']")
    sync_api.expect(page.locator(".kf-node")).to_have_count(4)
    page.click("#deploy")
    refused = "Deploy failed: this needs the admin role; rita has reader"
    sync_api.expect(page.locator("#result.error")).to_have_text(refused)
    # Saving the moved boxes is refused too, quietly: it must not replace the deploy's answer.
    page.wait_for_timeout(600)
    assert page.locator("#result").inner_text() == refused
    assert (flows / "readings.yaml").read_text(encoding="utf-8") == FLOW


def test_a_branch_added_in_the_browser_writes_to_influxdb(
    mosquitto: Mosquitto, influxdb: InfluxDB, browser: Any, tmp_path: Path
) -> None:
    """The shipped TTN flow, against real Mosquitto and influxd: an `influxdb-out` branch drawn in
    the editor, deployed, carries the next uplink into InfluxDB with its own tag."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "ttn-sensors.yaml").write_text(SHIPPED_FLOW.read_text(encoding="utf-8"), encoding="utf-8")
    with klimaflow_run(tmp_path, flows, flow_env(mosquitto, influxdb)) as url:
        page = log_in(browser, url)
        nodes = page.locator(".kf-node")
        sync_api.expect(nodes).to_have_count(6)
        shipped = [
            ("ttn-decode", "error", "ttn-errors"),
            ("ttn-decode", "events", "ttn-events"),
            ("ttn-decode", "out", "ttn-registry"),
            ("ttn-registry", "error", "ttn-errors"),
            ("ttn-registry", "out", "ttn-store"),
            ("ttn-store", "error", "ttn-errors"),
            ("ttn-uplinks", "error", "ttn-errors"),
            ("ttn-uplinks", "out", "ttn-decode"),
        ]
        assert wires_of(page) == shipped
        # Status badges: the MQTT input shows it is connected to the fixture broker.
        badge = box_of(page, "ttn-uplinks").locator(".kf-status")
        sync_api.expect(badge).to_have_text("connected")
        sync_api.expect(badge).to_have_class(re.compile(r"\bok\b"))

        # The flow is wider than the window: drag the canvas left to see the registry's ports.
        canvas = page.locator("#canvas").bounding_box()
        page.mouse.move(canvas["x"] + 500, canvas["y"] + 650)
        page.mouse.down()
        page.mouse.move(canvas["x"] + 100, canvas["y"] + 650, steps=5)
        page.mouse.up()
        drop_from_palette(page, "influxdb-out", 420, 470)
        sync_api.expect(nodes).to_have_count(7)
        # Redrawing the boxes keeps their status badges.
        sync_api.expect(badge).to_have_text("connected")
        draw_wire(page, "ttn-registry", "out", "influxdb-out-1")
        assert wires_of(page) == sorted([*shipped, ("ttn-registry", "out", "influxdb-out-1")])

        # An invalid batch size is refused and shown next to its field; fixed, the flow deploys.
        page.dblclick(".kf-node[data-node-id='influxdb-out-1'] .kf-type")
        form = page.locator("#node-form")
        form.locator("[data-field=server] input").fill("influx")
        form.locator("[data-field=static_tags] textarea").fill('{"via": "editor"}')
        form.locator("[data-field=batch_size] input").fill("0")
        form.locator("button.primary").click()
        page.click("#deploy")
        sync_api.expect(page.locator("#result.error")).to_contain_text("Refused")
        sync_api.expect(page.locator(".kf-node[data-node-id='influxdb-out-1']")).to_have_class(
            re.compile(r"\binvalid\b")
        )
        page.dblclick(".kf-node[data-node-id='influxdb-out-1'] .kf-type")
        sync_api.expect(form.locator("[data-field=batch_size] .field-error")).to_have_text(
            "Input should be greater than or equal to 1"
        )
        form.locator("[data-field=batch_size] input").fill("1")
        form.locator("button.primary").click()
        page.click("#deploy")
        sync_api.expect(page.locator("#result.ok")).to_contain_text("Deployed")
        sync_api.expect(box_of(page, "ttn-uplinks").locator(".kf-status")).to_have_text("connected")

        # The next uplink reaches InfluxDB twice: through the shipped node and through the new one.
        uplink = make_uplinks(1)[0]
        # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, publish(mosquitto, messages([uplink]))).result(timeout=10)
        deadline = time.monotonic() + 10
        while len(points(influxdb)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(points(influxdb), key=lambda r: "via" in r) == [
            uplink.row(),
            {**uplink.row(), "via": "editor"},
        ]
        # Both writers' badges count the point they wrote.
        for node_id in ("ttn-store", "influxdb-out-1"):
            sync_api.expect(box_of(page, node_id).locator(".kf-status")).to_have_text("1 written, 0 rejected")
        screenshot(page, tmp_path, "editor-ttn-sensors.png")
