"""Smoke test of the editor in Firefox: Debian's firefox-esr, driven over its own Marionette
protocol with Mozilla's marionette-driver (PyPI). Playwright's Firefox is a patched build it
downloads itself, which cannot be fetched here, and firefox-esr does not speak Playwright's
protocol; Marionette is built into every Firefox, so no geckodriver binary is needed."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from editor_api.ui import DIST
from tests.editor.test_editor_browser import FLOW, TOKEN, klimaflow_run

FIREFOX = Path("/usr/bin/firefox-esr")
pytestmark = [
    pytest.mark.skipif(
        not FIREFOX.exists(), reason="needs Debian's firefox-esr (scripts/setup.sh installs it)"
    ),
    pytest.mark.skipif(
        not (DIST / "index.html").is_file(), reason="editor not built (scripts/setup.sh builds it)"
    ),
]
marionette = pytest.importorskip("marionette_driver.marionette")
By = pytest.importorskip("marionette_driver.by").By
Wait = pytest.importorskip("marionette_driver.wait").Wait
Keys = pytest.importorskip("marionette_driver.keys").Keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def firefox(tmp_path: Path) -> Iterator[Any]:
    client = marionette.Marionette(
        bin=str(FIREFOX),
        port=_free_port(),
        headless=True,
        startup_timeout=90,
        workspace=str(tmp_path),
        gecko_log=str(tmp_path / "gecko.log"),  # not into the checkout
    )
    client.start_session()
    try:
        client.set_window_rect(width=1366, height=768)
        yield client
    finally:
        client.cleanup()


def texts(ff: Any, css: str) -> list[str]:
    return [e.text for e in ff.find_elements(By.CSS_SELECTOR, css)]


def keys(ff: Any, *pressed: str) -> None:
    """Press the keys together (modifiers first) and let go, as a person does."""
    seq = ff.actions.sequence("key", "keyboard")
    for k in pressed:
        seq.key_down(k)
    for k in reversed(pressed):
        seq.key_up(k)
    seq.perform()


def until(ff: Any, check: Any, message: str) -> Any:
    return Wait(ff, timeout=20).until(check, message=message)


def test_log_in_see_the_graph_and_deploy_in_firefox(firefox: Any, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "readings.yaml").write_text(FLOW, encoding="utf-8")
    with klimaflow_run(tmp_path, flows) as url:
        ff = firefox
        ff.navigate(url + "/")
        assert ff.get_url() == url + "/editor/"
        assert "Firefox/" in ff.execute_script("return navigator.userAgent")
        ff.find_element(By.CSS_SELECTOR, "input[name=token]").send_keys(TOKEN)
        ff.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

        # The graph: three boxes with their types, two wires.
        until(ff, lambda f: len(f.find_elements(By.CSS_SELECTOR, ".kf-node")) == 3, "the flow's three boxes")
        assert texts(ff, ".kf-node .kf-type") == ["inject", "change", "debug"]
        assert texts(ff, "#flows li") == ["Readings"]
        until(ff, lambda f: len(f.find_elements(By.CSS_SELECTOR, ".drawflow .connection")) == 2, "two wires")

        # Two nodes from the palette; one is selected and removed with the Delete key.
        ff.find_element(By.CSS_SELECTOR, ".palette-item[data-type='debug']").click()
        ff.find_element(By.CSS_SELECTOR, ".palette-item[data-type='delay']").click()
        until(ff, lambda f: len(f.find_elements(By.CSS_SELECTOR, ".kf-node")) == 5, "the added boxes")
        ff.find_element(By.CSS_SELECTOR, ".kf-node[data-node-id='delay-1'] .kf-type").click()
        keys(ff, Keys.DELETE)
        until(ff, lambda f: len(f.find_elements(By.CSS_SELECTOR, ".kf-node")) == 4, "the box deleted")

        # Ctrl+S deploys (and does not open Firefox's "Save page"): the file has the new node.
        keys(ff, Keys.CONTROL, "s")
        until(
            ff, lambda f: f.find_element(By.ID, "result").text.startswith("Deployed"), "the deploy's answer"
        )
        text = (flows / "readings.yaml").read_text(encoding="utf-8")
        assert "  - id: debug-1\n    type: debug\n" in text
        assert "delay-1" not in text

        # Live: the ▶ button runs the flow and the sidebar shows the debug message (SSE).
        ff.find_element(By.CSS_SELECTOR, ".kf-node[data-node-id=tick] .kf-inject").click()
        until(ff, lambda f: texts(f, "#debug li") == ['show payload: {"temperature":21.5}'], "the debug line")
        folder = Path(os.environ.get("KLIMAFLOW_SCREENSHOTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "editor-firefox.png").write_bytes(ff.screenshot(format="binary"))
