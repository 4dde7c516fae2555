"""After a deploy conflict the editor reloads the running flow and lays this tab's edits over it
(a three-way merge by node), asks about nodes both sides changed, and deploys the result."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.editor.test_editor_browser import (
    TOKEN,
    browser,
    log_in,
    pytestmark,
    screenshot,
    server,
    sync_api,
)

__all__ = ["browser", "pytestmark", "server"]  # fixtures and skip marks, taken over from there
expect = sync_api.expect


def api(url: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def deploy_elsewhere(url: str, change: Any) -> None:
    """Someone else's deploy, through the API, of the running flow changed by ``change``."""
    flow = api(url, "GET", "/api/flows/readings")
    doc = flow["document"]
    change(doc, {n["id"]: n for n in doc["nodes"]})
    result = api(
        url,
        "POST",
        "/api/deploy",
        {"revision": flow["revision"], "flows": [{"id": "readings", "document": doc}]},
    )
    assert result["ok"] is True


def nodes_in(flows: Path) -> dict[str, dict[str, Any]]:
    data = YAML(typ="safe").load((flows / "readings.yaml").read_text(encoding="utf-8"))
    return {n["id"]: n for n in data["nodes"]}


def rename_show(page: Any, name: str) -> None:
    page.dblclick(".kf-node[data-node-id=show] .kf-type")
    page.locator("#node-form [data-field=name] input").fill(name)
    page.locator("#node-form button.primary").click()


def test_a_conflict_is_merged_node_by_node_and_deployed(
    server: tuple[str, Path], browser: Any, tmp_path: Path
) -> None:
    url, flows = server
    page = log_in(browser, url)
    expect(page.locator(".kf-node")).to_have_count(3)

    # Here: `show` renamed, a debug node added. Meanwhile elsewhere: `show` renamed too, and the
    # button's payload changed.
    rename_show(page, "shown here")
    page.click("#settings")
    page.locator("#node-form [data-field=label] input").fill("Readings here")
    page.locator("#node-form button.primary").click()
    page.click(".palette-item[data-type='debug']")
    expect(page.locator(".kf-node")).to_have_count(4)

    def elsewhere(doc: dict[str, Any], nodes: dict[str, Any]) -> None:
        doc["label"] = "Readings there"
        nodes["tick"]["payload"] = {"temp": 30}
        nodes["show"]["name"] = "shown there"

    deploy_elsewhere(url, elsewhere)

    page.click("#deploy")
    expect(page.locator("#result.error")).to_contain_text("Conflict: someone deployed revision")
    assert "debug-1" not in nodes_in(flows)
    page.click("#merge")

    # Only `show` and the label are asked about; both versions of each are shown.
    conflicts = page.locator("#node-form .conflict")
    expect(conflicts.locator("legend")).to_have_text(["node show", "setting label"])
    show = conflicts.nth(0)
    expect(show.locator("pre").nth(0)).to_contain_text('"name": "shown here"')
    expect(show.locator("pre").nth(1)).to_contain_text('"name": "shown there"')
    expect(conflicts.nth(1).locator("pre")).to_have_text(['"Readings here"', '"Readings there"'])
    screenshot(page, tmp_path, "editor-merge-conflict.png")
    show.locator("input[value=remote]").check()  # the label stays mine (the default)
    page.locator("#node-form button.primary", has_text="Merge and deploy").click()
    expect(page.locator("#result.ok")).to_contain_text("Deployed")

    assert (
        YAML(typ="safe").load((flows / "readings.yaml").read_text(encoding="utf-8"))["label"]
        == "Readings here"
    )
    nodes = nodes_in(flows)
    assert list(nodes) == ["tick", "rename", "show", "debug-1"]
    assert nodes["tick"]["payload"] == {"temp": 30}  # changed only there: taken
    assert nodes["show"]["name"] == "shown there"  # both changed: the running one was chosen
    assert nodes["debug-1"] == {"id": "debug-1", "type": "debug"}  # added only here: kept
    expect(page.locator(".kf-node[data-node-id=show] .kf-label")).to_have_text("shown there")
    expect(page.locator(".kf-node")).to_have_count(4)

    # Edits to different nodes merge without a question and deploy at once; mine wins a
    # conflict chosen so.
    rename_show(page, "mine again")
    page.dblclick(".kf-node[data-node-id='debug-1'] .kf-type")
    page.locator("#node-form [data-field=name] input").fill("new debug")
    page.locator("#node-form button.primary").click()

    def elsewhere_again(doc: dict[str, Any], nodes: dict[str, Any]) -> None:
        nodes["rename"]["rules"] = [{"move": "payload.temp", "to": "payload.celsius"}]
        doc["label"] = "Readings (celsius)"

    deploy_elsewhere(url, elsewhere_again)
    page.click("#deploy")
    expect(page.locator("#result.error")).to_contain_text("Conflict")
    page.click("#merge")
    expect(page.locator("#result.ok")).to_contain_text("Deployed")
    nodes = nodes_in(flows)
    assert nodes["rename"]["rules"] == [{"move": "payload.temp", "to": "payload.celsius"}]
    assert (nodes["show"]["name"], nodes["debug-1"]["name"]) == ("mine again", "new debug")
    expect(page.locator("#flow-title")).to_have_text("Readings (celsius)")

    # The merged flow runs: the button's new payload goes through the new rule.
    page.locator(".kf-node[data-node-id=tick] .kf-inject").click()
    expect(page.locator("#debug li").filter(has_text="show payload")).to_have_text(
        ['show payload: {"celsius":30}']
    )
