"""Editor forms beyond a node's plain fields: connections, the flow's own settings, and rules that
are one of several shapes (change and switch), in Chromium against `klimaflow run --api`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.editor.test_editor_browser import (
    box_of,
    browser,
    klimaflow_run,
    log_in,
    pytestmark,
    screenshot,
    sync_api,
)
from tests.services.mosquitto import Mosquitto

__all__ = ["browser", "pytestmark"]  # the fixture and the skip marks, taken over from there
expect = sync_api.expect

FLOW = """\
# Sensors: rules of several shapes, a broker, settings.
id: sensors
label: Sensors
env:
  SITE: garden
connections:
  broker:
    type: mqtt
    url: ${MQTT_URL}
    password: ${MQTT_PASSWORD:-}
nodes:
  - id: tick
    type: inject
    payload: {temp: 21.5, raw: 1}
    wires: [rename]
  - id: rename
    type: change
    rules:
      - move: payload.temp
        to: payload.temperature
      - delete: payload.raw
    wires: [route]
  - id: route
    type: switch
    rules:
      - {port: warm, property: payload.temperature, op: gt, value: 20}
    wires: {else: [show]}
  - id: show
    type: debug
    log: false
"""


@pytest.fixture
def server(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[str, Path]]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "sensors.yaml").write_text(FLOW, encoding="utf-8")
    with klimaflow_run(tmp_path, flows, {"MQTT_URL": mosquitto.url}) as url:
        yield url, flows


def flow_file(flows: Path) -> dict[str, Any]:
    data = YAML(typ="safe").load((flows / "sensors.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def deploy_ok(page: Any) -> None:
    page.click("#deploy")
    expect(page.locator("#result.ok")).to_contain_text("Deployed")


def test_connections_are_edited_with_secrets_as_references(server: tuple[str, Path], browser: Any) -> None:
    url, flows = server
    page = log_in(browser, url)
    expect(page.locator(".kf-node")).to_have_count(4)
    expect(page.locator("#connections li")).to_have_text(["broker mqtt"])

    # The broker's form: fields from the mqtt schema the API serves, the secret as its reference.
    page.click("#connections li[data-connection=broker]")
    form = page.locator("#node-form")
    expect(form.locator("h2")).to_have_text("Connection broker (mqtt)")
    expect(form.locator("[data-field=url] input")).to_have_value("${MQTT_URL}")
    password = form.locator("[data-field=password] input")
    expect(password).to_have_value("${MQTT_PASSWORD:-}")
    expect(form.locator("[data-field=protocol] select option")).to_have_text(["(default)", "3.1.1", "5"])

    # A literal password is refused by the API and the reason shows beside the field.
    password.fill("hunter2")
    form.locator("button.primary").click()
    page.click("#deploy")
    expect(page.locator("#result.error")).to_contain_text("Refused")
    expect(page.locator("#connections li[data-connection=broker]")).to_have_class("invalid")
    assert "hunter2" not in (flows / "sensors.yaml").read_text(encoding="utf-8")
    page.click("#connections li[data-connection=broker]")
    expect(form.locator("[data-field=password] .field-error")).not_to_be_empty()
    # The literal is not echoed back into the form.
    expect(password).to_have_value("")

    # A reference is accepted; a client id and protocol 5 land in the file.
    password.fill("${BROKER_PASSWORD:-}")
    form.locator("[data-field=client_id] input").fill("klimaflow-editor")
    form.locator("[data-field=protocol] select").select_option(label="5")
    form.locator("button.primary").click()
    deploy_ok(page)
    assert flow_file(flows)["connections"]["broker"] == {
        "type": "mqtt",
        "url": "${MQTT_URL}",
        "password": "${BROKER_PASSWORD:-}",
        "client_id": "klimaflow-editor",
        "protocol": "5",
    }

    # A new InfluxDB connection from the list of connection types.
    page.select_option("#add-connection", "influxdb")
    expect(form.locator("h2")).to_have_text("Connection influxdb-1 (influxdb)")
    form.locator("[data-field=name] input").fill("archive")
    form.locator("[data-field=url] input").fill("http://127.0.0.1:9")
    form.locator("[data-field=database] input").fill("klimadaten")
    form.locator("[data-field=token] input").fill("${ARCHIVE_TOKEN:-}")
    form.locator("button.primary").click()
    expect(page.locator("#connections li")).to_have_text(["broker mqtt", "archive influxdb"])
    deploy_ok(page)
    assert flow_file(flows)["connections"]["archive"] == {
        "type": "influxdb",
        "url": "http://127.0.0.1:9",
        "database": "klimadaten",
        "token": "${ARCHIVE_TOKEN:-}",
    }

    # A node picks the connection by name; renaming the connection renames it in the node too.
    page.click(".palette-item[data-type='influxdb-out']")
    page.dblclick(".kf-node[data-node-id='influxdb-out-1'] .kf-type")
    server_field = form.locator("[data-field=server] input")
    assert server_field.evaluate("e => [...e.list.options].map(o => o.value)") == ["archive"]
    server_field.fill("archive")
    form.locator("button.primary").click()
    page.click("#connections li[data-connection=archive]")
    form.locator("[data-field=name] input").fill("store")
    form.locator("button.primary").click()
    expect(page.locator("#connections li")).to_have_text(["broker mqtt", "store influxdb"])
    deploy_ok(page)
    data = flow_file(flows)
    assert list(data["connections"]) == ["broker", "store"]
    assert data["nodes"][-1] == {"id": "influxdb-out-1", "type": "influxdb-out", "server": "store"}

    # Deleted with its node.
    page.locator(".kf-node[data-node-id='influxdb-out-1'] .kf-type").click()
    page.keyboard.press("Delete")
    expect(page.locator(".kf-node")).to_have_count(4)
    page.click("#connections li[data-connection=store]")
    form.locator("button.danger").click()
    expect(page.locator("#connections li")).to_have_text(["broker mqtt"])
    deploy_ok(page)
    assert list(flow_file(flows)["connections"]) == ["broker"]


def test_flow_settings_are_edited_and_deployed(
    server: tuple[str, Path], browser: Any, tmp_path: Path
) -> None:
    url, flows = server
    page = log_in(browser, url)
    expect(page.locator(".kf-node")).to_have_count(4)
    page.click("#settings")
    form = page.locator("#node-form")
    expect(form.locator("[data-field=id] input")).to_have_value("sensors")
    expect(form.locator("[data-field=label] input")).to_have_value("Sensors")
    expect(form.locator(".env-row .env-name")).to_have_value("SITE")
    expect(form.locator(".env-row .env-value")).to_have_value("garden")

    # An applied change shows in the title and is undone like any edit.
    form.locator("[data-field=label] input").fill("Oops")
    form.locator("button.primary").click()
    expect(page.locator("#flow-title")).to_have_text("Oops")
    page.click("#undo")
    expect(page.locator("#flow-title")).to_have_text("Sensors")
    page.click("#settings")
    expect(form.locator("[data-field=label] input")).to_have_value("Sensors")

    form.locator("[data-field=label] input").fill("Garden sensors")
    form.locator("textarea[name=description]").fill("Readings from the garden's sensors.")
    form.locator(".env .add").click()
    form.locator(".env-row .env-name").nth(1).fill("ROOM")
    form.locator(".env-row .env-value").nth(1).fill("shed")
    form.locator("button.primary").click()
    deploy_ok(page)
    data = flow_file(flows)
    assert (data["label"], data["description"], data["env"]) == (
        "Garden sensors",
        "Readings from the garden's sensors.",
        {"SITE": "garden", "ROOM": "shed"},
    )
    text = (flows / "sensors.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Sensors: rules of several shapes, a broker, settings.\n")

    # A new id renames the running flow; the list of flows follows.
    page.click("#settings")
    form.locator("[data-field=id] input").fill("garden")
    form.locator("button.primary").click()
    expect(page.locator("#flow-title")).to_have_text("Garden sensors (renamed from sensors: deploy to apply)")
    deploy_ok(page)
    expect(page.locator("#flow-title")).to_have_text("Garden sensors")
    assert flow_file(flows)["id"] == "garden"
    expect(page.locator("#flows li")).to_have_text(["Garden sensors"])
    assert page.locator("#flows li").get_attribute("data-flow-id") == "garden"
    page.reload()
    expect(page.locator(".kf-node")).to_have_count(4)
    expect(page.locator("#flow-title")).to_have_text("Garden sensors")
    screenshot(page, tmp_path, "editor-settings.png")


def test_rules_of_several_shapes_have_real_form_controls(server: tuple[str, Path], browser: Any) -> None:
    url, flows = server
    page = log_in(browser, url)
    expect(page.locator(".kf-node")).to_have_count(4)

    # The change node's rules: one row per rule, the variant chosen from what the rule holds.
    page.dblclick(".kf-node[data-node-id=rename] .kf-type")
    form = page.locator("#node-form")
    rules = form.locator("[data-field=rules] .list > .list-item")
    expect(rules).to_have_count(2)
    selects = rules.locator("> .variant > .variant-select")
    assert [s.evaluate("e => e.selectedOptions[0].textContent") for s in selects.all()] == ["move", "delete"]
    expect(rules.nth(0).locator("[data-field=move] input")).to_have_value("payload.temp")
    expect(rules.nth(0).locator("[data-field=to] input")).to_have_value("payload.temperature")
    expect(rules.nth(1).locator("[data-field=delete] input")).to_have_value("payload.raw")

    # The delete rule becomes a set rule, moves to the top; a third rule is added and removed.
    selects.nth(1).select_option(label="set")
    rules.nth(1).locator("[data-field=set] input").fill("payload.unit")
    rules.nth(1).locator("[data-field=to] textarea").fill("°C")
    rules.nth(1).locator("button[data-action=up]").click()
    expect(rules.nth(0).locator("[data-field=set] input")).to_have_value("payload.unit")
    form.locator("[data-field=rules] .list > .add").click()
    expect(rules).to_have_count(3)
    rules.nth(2).locator("button[data-action=remove]").click()
    expect(rules).to_have_count(2)
    form.locator("button.primary").click()

    # The switch rule: `gt` is a comparison; it becomes a range, keeping its port and property.
    page.dblclick(".kf-node[data-node-id=route] .kf-type")
    rule = form.locator("[data-field=rules] .list > .list-item").nth(0)
    expect(rule.locator("> .variant > .variant-select")).to_have_value("0")
    expect(rule.locator("[data-field=op] select")).to_have_value('"gt"')
    rule.locator("> .variant > .variant-select").select_option(label="op: between")
    expect(rule.locator("[data-field=port] input")).to_have_value("warm")
    expect(rule.locator("[data-field=property] input")).to_have_value("payload.temperature")
    expect(rule.locator("[data-field=op] output")).to_have_text("between")
    rule.locator("[data-field=min] input").fill("0")
    rule.locator("[data-field=max] input").fill("20")
    form.locator("button.primary").click()
    deploy_ok(page)

    data = flow_file(flows)
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes["rename"]["rules"] == [
        {"set": "payload.unit", "to": "°C"},
        {"move": "payload.temp", "to": "payload.temperature"},
    ]
    assert nodes["route"]["rules"] == [
        {"port": "warm", "property": "payload.temperature", "op": "between", "min": 0, "max": 20}
    ]

    # The running engine does what the form said: 21.5 is outside 0..20, so `else` shows it.
    box_of(page, "tick").locator(".kf-inject").click()
    expect(page.locator("#debug li")).to_have_text(['show payload: {"raw":1,"unit":"°C","temperature":21.5}'])
