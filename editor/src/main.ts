// The visual flow editor: log in, pick a flow, edit it as a graph (drawflow), deploy, watch it run.
import "drawflow/dist/drawflow.min.css";
import "./style.css";
import Drawflow from "drawflow";
import * as api from "./api";
import type { ConnectionType, FlowDocument, FlowNode, Issue, JsonSchema, NodeType, Position } from "./api";
import { formContext, objectField } from "./form";
import { merge } from "./merge";
import type { Merge, Side } from "./merge";
import { NODE_HEIGHT, autoLayout, setWires, wiresOf } from "./layout";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const clone = <T>(v: T): T => structuredClone(v);

interface Snapshot {
  doc: FlowDocument;
  positions: Record<string, Position>;
}

const state = {
  types: new Map<string, NodeType>(),
  connectionTypes: new Map<string, ConnectionType>(),
  doc: null as FlowDocument | null,
  /** The running flow's id (the document's may be edited: deploying renames the flow). */
  flowId: "",
  /** The flow as it was loaded or last deployed: the base of a merge after a conflict. */
  base: null as FlowDocument | null,
  revision: "",
  positions: {} as Record<string, Position>,
  undo: [] as Snapshot[],
  dfToNode: new Map<number, string>(),
  nodeToDf: new Map<string, number>(),
  rendering: false,
  issues: [] as Issue[],
  /** Last status of each node, drawn again whenever the boxes are. */
  statuses: new Map<string, { level: string; text: string }>(),
};

const editor = new Drawflow($("canvas"));
editor.reroute = false;
editor.start();

/** drawflow's events and methods its type declarations leave out. */
const untyped = editor as unknown as {
  on(event: string, callback: (data: never) => void): void;
  removeConnection(): void;
};
function on<T>(event: string, callback: (data: T) => void): void {
  untyped.on(event, callback as (data: never) => void);
}

// -- rendering ------------------------------------------------------------------------------------

function ports(node: FlowNode): string[] {
  return [...(state.types.get(node.type)?.outputs ?? []), "error"];
}

function nodeHtml(node: FlowNode): string {
  const t = state.types.get(node.type);
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const button = node.type === "inject" ? `<button class="kf-inject" title="Trigger">▶</button>` : "";
  return `<div class="kf-node" data-node-id="${esc(node.id)}" style="--kf-color:${esc(t?.color ?? "#ddd")}">
    <div class="kf-head">${button}<span class="kf-label">${esc(node.name ?? node.id)}</span></div>
    <div class="kf-type">${esc(node.type)}${t ? "" : " (unknown type)"}</div>
    <div class="kf-status" hidden></div></div>`;
}

function render(): void {
  const doc = state.doc;
  if (!doc) return;
  state.rendering = true;
  editor.clear();
  state.dfToNode.clear();
  state.nodeToDf.clear();
  for (const node of doc.nodes) {
    const p = state.positions[node.id] ?? { x: 40, y: 40 };
    const inputs = state.types.get(node.type)?.inputs ?? 1;
    const names = ports(node);
    const df = Number(editor.addNode(node.type, inputs, names.length, p.x, p.y, "kf", { id: node.id }, nodeHtml(node), false));
    state.dfToNode.set(df, node.id);
    state.nodeToDf.set(node.id, df);
    const outs = document.querySelectorAll<HTMLElement>(`#node-${df} .outputs .output`);
    outs.forEach((el, i) => {
      el.dataset.port = names[i];
      el.title = names[i];
    });
  }
  for (const node of doc.nodes) {
    const names = ports(node);
    for (const [port, targets] of Object.entries(wiresOf(node))) {
      const from = state.nodeToDf.get(node.id);
      const index = names.indexOf(port);
      for (const target of targets) {
        const to = state.nodeToDf.get(target);
        if (from !== undefined && to !== undefined && index >= 0) {
          editor.addConnection(from, to, `output_${index + 1}`, "input_1");
        }
      }
    }
  }
  state.rendering = false;
  for (const [id, st] of state.statuses) drawStatus(id, st.level, st.text);
  showIssues();
}

/** drawflow draws a box taller than NODE_HEIGHT when it has many output ports. */
function heightOf(node: FlowNode): number {
  return Math.max(NODE_HEIGHT, 25 * ports(node).length + 20);
}

/** Zoom (never above 1) and pan so every box is inside the canvas. drawflow scales its inner
 * canvas about the canvas's centre, so the translation is taken relative to that centre. */
function fitView(): void {
  const boxes = [...document.querySelectorAll<HTMLElement>("#canvas .drawflow-node")];
  if (boxes.length === 0) return;
  // Input dots stick out on the left, output dots and their port names on the right.
  const left = Math.min(...boxes.map((b) => b.offsetLeft)) - 20;
  const top = Math.min(...boxes.map((b) => b.offsetTop));
  const right = Math.max(...boxes.map((b) => b.offsetLeft + b.offsetWidth)) + 70;
  const bottom = Math.max(...boxes.map((b) => b.offsetTop + b.offsetHeight));
  const width = editor.precanvas.clientWidth;
  const height = editor.precanvas.clientHeight;
  const margin = 30;
  const zoom = Math.min(1, (width - 2 * margin) / (right - left), (height - 2 * margin) / (bottom - top));
  const view = editor as unknown as { canvas_x: number; canvas_y: number; zoom_last_value: number };
  editor.zoom = zoom;
  view.zoom_last_value = zoom;
  view.canvas_x = Math.round(-((left + right) / 2 - width / 2) * zoom);
  view.canvas_y = Math.round(-((top + bottom) / 2 - height / 2) * zoom);
  editor.precanvas.style.transform = `translate(${view.canvas_x}px, ${view.canvas_y}px) scale(${zoom})`;
}

// -- edits (each one undoable) ---------------------------------------------------------------------

function remember(): void {
  if (state.doc) state.undo.push({ doc: clone(state.doc), positions: clone(state.positions) });
  if (state.undo.length > 100) state.undo.shift();
}

function undo(): void {
  const last = state.undo.pop();
  if (!last || !state.doc) return;
  state.doc = last.doc;
  state.positions = last.positions;
  render();
  renderConnections();
  showTitle();
  saveLayout();
}

function nodeById(id: string | undefined): FlowNode | undefined {
  return state.doc?.nodes.find((n) => n.id === id);
}

let layoutTimer: number | undefined;
function saveLayout(): void {
  const doc = state.doc;
  if (!doc) return;
  window.clearTimeout(layoutTimer);
  layoutTimer = window.setTimeout(() => {
    api.putLayout(doc.id, state.positions).catch((e: Error) => {
      // A reader may move boxes to look at a flow; that they are not kept is no error to report
      // (and must not hide the answer to their last deploy).
      if (!(e instanceof api.HttpError && e.status === 403)) showResult(`Layout not saved: ${e.message}`, "error");
    });
  }, 300);
}

on<string>("nodeMoved", (df) => {
  const id = state.dfToNode.get(Number(df));
  // The box's style, not drawflow's pos_x/pos_y: those are computed one step off during a drag.
  const box = document.getElementById(`node-${df}`);
  if (!id || !box) return;
  remember();
  state.positions[id] = { x: Math.round(parseFloat(box.style.left)), y: Math.round(parseFloat(box.style.top)) };
  saveLayout();
});

on<{ output_id: string; input_id: string; output_class: string }>("connectionCreated", (c) => {
  if (state.rendering) return;
  const source = nodeById(state.dfToNode.get(Number(c.output_id)));
  const target = state.dfToNode.get(Number(c.input_id));
  if (!source || !target) return;
  remember();
  const port = ports(source)[Number(c.output_class.replace("output_", "")) - 1];
  const wires = wiresOf(source);
  wires[port] = [...new Set([...(wires[port] ?? []), target])];
  setWires(source, wires);
});

on<{ output_id: string; input_id: string; output_class: string }>("connectionRemoved", (c) => {
  if (state.rendering) return;
  const source = nodeById(state.dfToNode.get(Number(c.output_id)));
  const target = state.dfToNode.get(Number(c.input_id));
  if (!source || !target) return;
  remember();
  const port = ports(source)[Number(c.output_class.replace("output_", "")) - 1];
  const wires = wiresOf(source);
  wires[port] = (wires[port] ?? []).filter((t) => t !== target);
  setWires(source, wires);
});

// drawflow removes a node's wires before the node; those removals were recorded above.
on<string>("nodeRemoved", (df) => {
  const id = state.dfToNode.get(Number(df));
  const doc = state.doc;
  if (state.rendering || !id || !doc) return;
  remember();
  doc.nodes = doc.nodes.filter((n) => n.id !== id);
  for (const n of doc.nodes) {
    const wires = wiresOf(n);
    for (const port of Object.keys(wires)) wires[port] = wires[port].filter((t) => t !== id);
    setWires(n, wires);
  }
  delete state.positions[id];
  state.dfToNode.delete(Number(df));
  state.nodeToDf.delete(id);
  saveLayout();
});

function addNode(type: string, at?: Position): void {
  const doc = state.doc;
  if (!doc) return;
  remember();
  let n = 1;
  while (doc.nodes.some((x) => x.id === `${type}-${n}`)) n++;
  const node: FlowNode = { id: `${type}-${n}`, type };
  doc.nodes.push(node);
  const right = Math.max(0, ...Object.values(state.positions).map((p) => p.x));
  state.positions[node.id] = at ?? { x: right + 260, y: 40 };
  render();
  saveLayout();
}

function deleteSelected(): void {
  const selected = document.querySelector<HTMLElement>(".drawflow-node.selected");
  if (selected) editor.removeNodeId(selected.id);
  else untyped.removeConnection();
}

// -- node form ---------------------------------------------------------------------------------

/** Fills the one dialog with a heading, form parts and Cancel/Apply; `apply` runs on Apply. */
function openDialog(title: string, parts: HTMLElement[], apply: () => void, extra: HTMLButtonElement[] = []): void {
  const dialog = $<HTMLDialogElement>("node-dialog");
  const form = $<HTMLFormElement>("node-form");
  form.replaceChildren();
  const heading = document.createElement("h2");
  heading.textContent = title;
  const buttons = document.createElement("menu");
  buttons.innerHTML = `<button value="cancel" type="button">Cancel</button> <button value="ok" class="primary">Apply</button>`;
  (buttons.firstElementChild as HTMLButtonElement).onclick = () => dialog.close();
  buttons.prepend(...extra);
  form.append(heading, ...parts, buttons);
  form.onsubmit = (e) => {
    e.preventDefault();
    apply();
    dialog.close();
  };
  dialog.showModal();
}

function openForm(nodeId: string): void {
  const node = nodeById(nodeId);
  if (!node) return;
  const type = state.types.get(node.type);
  const schema = type?.config_schema ?? { properties: {} };
  const nameSchema = { type: "object", properties: { name: { type: "string", title: "Name", description: "Shown on the box." } } };
  const common = objectField(nameSchema, nameSchema, node);
  const config = objectField(schema, schema, node);
  for (const issue of state.issues.filter((i) => i.node === node.id && i.field)) {
    config.showError(issue.field ?? "", issue.message);
  }
  openDialog(`${node.id} (${node.type})`, [common.element, config.element], () => {
    remember();
    const { id, type: t, wires } = node;
    const fresh: FlowNode = { id, type: t, ...common.read(), ...config.read() };
    if (wires) fresh.wires = wires;
    const doc = state.doc;
    if (doc) doc.nodes = doc.nodes.map((n) => (n.id === id ? fresh : n));
    render();
  });
}

// -- connections and flow settings -------------------------------------------------------------

type Connections = Record<string, Record<string, unknown>>;

function connectionsOf(doc: FlowDocument): Connections {
  return (doc.connections ?? {}) as Connections;
}

formContext.connections = (type) =>
  Object.entries(state.doc ? connectionsOf(state.doc) : {})
    .filter(([, c]) => c.type === type)
    .map(([name]) => name);

function renderConnections(): void {
  const list = $("connections");
  list.replaceChildren();
  for (const [name, conn] of Object.entries(state.doc ? connectionsOf(state.doc) : {})) {
    const li = document.createElement("li");
    li.dataset.connection = name;
    li.append(Object.assign(document.createElement("b"), { textContent: name }), ` ${String(conn.type)}`);
    const issue = state.issues.find((i) => i.connection === name);
    if (issue) {
      li.classList.add("invalid");
      li.title = issue.message;
    }
    li.onclick = () => openConnection(name);
    list.append(li);
  }
}

/** Node config fields that name a connection of `type` (for renaming it everywhere). */
function connectionFields(node: FlowNode, type: string): string[] {
  const props = state.types.get(node.type)?.config_schema.properties ?? {};
  return Object.entries(props)
    .filter(([, p]) => p["x-klimaflow-connection"] === type)
    .map(([k]) => k);
}

function openConnection(name: string, created?: Record<string, unknown>): void {
  const doc = state.doc;
  if (!doc) return;
  const conn = created ?? connectionsOf(doc)[name];
  if (!conn) return;
  const type = String(conn.type);
  const schema: JsonSchema = state.connectionTypes.get(type)?.config_schema ?? { properties: {} };
  const nameSchema: JsonSchema = {
    type: "object",
    required: ["name"],
    properties: { name: { type: "string", title: "Name", description: "Nodes name the connection by this." } },
  };
  const naming = objectField(nameSchema, nameSchema, { name });
  const config = objectField(schema, schema, conn);
  for (const issue of state.issues.filter((i) => i.connection === name && i.field)) config.showError(issue.field ?? "", issue.message);
  const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "Delete connection", className: "danger" });
  remove.onclick = () => {
    remember();
    const conns = { ...connectionsOf(doc) };
    delete conns[name];
    doc.connections = conns;
    $<HTMLDialogElement>("node-dialog").close();
    renderConnections();
  };
  openDialog(`Connection ${name} (${type})`, [naming.element, config.element], () => {
    remember();
    const newName = String(naming.read().name ?? name).trim() || name;
    // Rebuilt in the same order, under the new name where it was renamed.
    const conns: Connections = {};
    for (const [k, v] of Object.entries(connectionsOf(doc))) conns[k === name ? newName : k] = k === name ? { type, ...config.read() } : v;
    if (!(name in conns) && !(newName in conns)) conns[newName] = { type, ...config.read() };
    doc.connections = conns;
    if (newName !== name) {
      for (const node of doc.nodes) for (const f of connectionFields(node, type)) if (node[f] === name) node[f] = newName;
    }
    renderConnections();
  }, created ? [] : [remove]);
}

function addConnection(type: string): void {
  const doc = state.doc;
  if (!doc || !state.connectionTypes.has(type)) return;
  const taken = connectionsOf(doc);
  let n = 1;
  while (`${type}-${n}` in taken) n++;
  openConnection(`${type}-${n}`, { type });
}

function openSettings(): void {
  const doc = state.doc;
  if (!doc) return;
  const schema: JsonSchema = {
    type: "object",
    required: ["id"],
    properties: {
      id: { type: "string", title: "Id", description: "The flow's id: letters, digits and _ . : - (changing it renames the flow)." },
      label: { type: "string", title: "Label", description: "Shown in the list of flows." },
      description: { type: "string", title: "Description", description: "What the flow does, for the next person." },
    },
  };
  const main = objectField(schema, schema, doc);
  const description = main.element.querySelector<HTMLElement>("[data-field=description] input");
  const area = Object.assign(document.createElement("textarea"), { rows: 4, name: "description", value: String(doc.description ?? "") });
  description?.replaceWith(area);
  const env = envEditor((doc.env ?? {}) as Record<string, unknown>);
  openDialog(`Flow ${state.flowId}`, [main.element, env.element], () => {
    remember();
    const { id, label } = main.read();
    const text = area.value.trim();
    const fresh: FlowDocument = { ...doc, id: typeof id === "string" && id ? id : doc.id };
    if (typeof label === "string" && label) fresh.label = label;
    else delete fresh.label;
    if (text) fresh.description = area.value;
    else delete fresh.description;
    const vars = env.read();
    if (Object.keys(vars).length) fresh.env = vars;
    else delete fresh.env;
    state.doc = fresh;
    showTitle();
  });
}

function showTitle(): void {
  const doc = state.doc;
  if (!doc) return;
  const renaming = doc.id !== state.flowId ? ` (renamed from ${state.flowId}: deploy to apply)` : "";
  $("flow-title").textContent = `${String(doc.label ?? doc.id)}${renaming}`;
}

/** The flow's `env`: rows of NAME = value; a value that was a number or boolean stays one. */
function envEditor(values: Record<string, unknown>): { element: HTMLElement; read(): Record<string, unknown> } {
  const box = Object.assign(document.createElement("fieldset"), { className: "env" });
  box.append(Object.assign(document.createElement("legend"), { textContent: "Environment (env): variables for ${NAME}" }));
  const rows: { row: HTMLElement; key: HTMLInputElement; value: HTMLInputElement; was: unknown }[] = [];
  const add = (key: string, value: unknown) => {
    const row = document.createElement("div");
    row.className = "env-row";
    const k = Object.assign(document.createElement("input"), { value: key, placeholder: "NAME", className: "env-name" });
    const v = Object.assign(document.createElement("input"), { value: value === undefined ? "" : String(value), placeholder: "value", className: "env-value" });
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "−", title: "Remove this variable" });
    remove.onclick = () => {
      row.remove();
      rows.splice(rows.findIndex((r) => r.row === row), 1);
    };
    row.append(k, " = ", v, remove);
    box.insertBefore(row, addButton);
    rows.push({ row, key: k, value: v, was: value });
  };
  const addButton = Object.assign(document.createElement("button"), { type: "button", textContent: "+ variable", className: "add" });
  addButton.onclick = () => add("", undefined);
  box.append(addButton);
  for (const [k, v] of Object.entries(values)) add(k, v);
  return {
    element: box,
    read: () =>
      Object.fromEntries(
        rows
          .filter((r) => r.key.value.trim())
          .map((r) => [r.key.value.trim(), r.was !== undefined && String(r.was) === r.value.value ? r.was : r.value.value]),
      ),
  };
}

$("canvas").addEventListener("dblclick", (e) => {
  const box = (e.target as HTMLElement).closest<HTMLElement>(".kf-node");
  if (box?.dataset.nodeId) openForm(box.dataset.nodeId);
});

$("canvas").addEventListener("click", (e) => {
  const button = (e.target as HTMLElement).closest<HTMLElement>(".kf-inject");
  const id = button?.closest<HTMLElement>(".kf-node")?.dataset.nodeId;
  if (!id) return;
  e.stopPropagation();
  api.inject(id).catch((err: Error) => showResult(`Inject ${id}: ${err.message}`, "error"));
});

// -- deploy ------------------------------------------------------------------------------------

function showResult(text: string, kind: "ok" | "error" | "info", details: string[] = []): void {
  const box = $("result");
  box.className = `result ${kind}`;
  box.replaceChildren(Object.assign(document.createElement("p"), { textContent: text }));
  if (details.length) {
    const list = document.createElement("ul");
    for (const d of details) list.append(Object.assign(document.createElement("li"), { textContent: d }));
    box.append(list);
  }
}

function showIssues(): void {
  document.querySelectorAll(".kf-node.invalid").forEach((el) => el.classList.remove("invalid"));
  for (const issue of state.issues) {
    const el = document.querySelector<HTMLElement>(`.kf-node[data-node-id="${CSS.escape(issue.node ?? "")}"]`);
    if (el) {
      el.classList.add("invalid");
      el.title = issue.message;
    }
  }
}

async function deploy(): Promise<void> {
  const doc = state.doc;
  if (!doc) return;
  showResult("Deploying…", "info");
  try {
    const res = await api.deploy(state.revision, state.flowId, doc);
    state.revision = res.revision;
    state.issues = [];
    state.base = clone(doc);
    if (doc.id !== state.flowId) renamed(state.flowId, doc);
    const diff = res.result.diff ?? {};
    const parts = Object.entries(diff)
      .filter(([, v]) => Array.isArray(v) && v.length > 0)
      .map(([k, v]) => `${k}: ${(v as string[]).join(", ")}`);
    showResult(`Deployed (revision ${res.revision.slice(0, 12)})`, "ok", parts.length ? parts : ["no changes"]);
  } catch (e) {
    if (!(e instanceof api.HttpError)) throw e;
    if (e.status === 409 && typeof e.body.revision === "string") {
      showResult(
        `Conflict: someone deployed revision ${String(e.body.revision).slice(0, 12)} since your edit started ` +
          `(from ${String(e.body.base_revision).slice(0, 12)}).`,
        "error",
      );
      const button = Object.assign(document.createElement("button"), {
        id: "merge",
        textContent: "Reload the running flow and re-apply my edits",
      });
      button.onclick = () =>
        reloadAndMerge().catch((err: Error) => showResult(`Reloading ${state.flowId} failed: ${err.message}`, "error"));
      $("result").append(button);
    } else if (e.status === 422) {
      state.issues = ((e.body.issues ?? []) as Issue[]).filter((i) => i.severity === "error");
      showResult("Refused: nothing was deployed", "error", state.issues.map((i) => `${i.node ?? i.connection ?? ""} ${i.field ?? ""}: ${i.message}`));
    } else {
      showResult(`Deploy failed: ${e.message}`, "error");
    }
  }
  showIssues();
  renderConnections();
}

/** The flow list and the address follow a flow renamed by a deploy. */
function renamed(oldId: string, doc: FlowDocument): void {
  const li = document.querySelector<HTMLElement>(`#flows li[data-flow-id="${CSS.escape(oldId)}"]`);
  if (li) {
    li.dataset.flowId = doc.id;
    li.textContent = doc.label ?? doc.id;
    li.onclick = () => void openFlow(doc.id);
  }
  state.flowId = doc.id;
  $("flow-title").textContent = doc.label ?? doc.id;
  location.hash = `flow=${encodeURIComponent(doc.id)}`;
}

/** After a conflict: the running flow, this tab's edits laid over it (a three-way merge by node),
 * the conflicts for the person to decide, then a deploy against the running revision. */
async function reloadAndMerge(): Promise<void> {
  const local = state.doc;
  const base = state.base;
  if (!local || !base) return;
  const remote = await api.getFlow(state.flowId);
  const m = merge(base, local, remote.document);
  const apply = (choices: Record<string, Side>) => {
    remember();
    state.doc = m.result(choices);
    state.base = clone(remote.document);
    state.revision = remote.revision;
    state.positions = autoLayout(state.doc.nodes, state.positions, heightOf);
    render();
    renderConnections();
    showTitle();
    void deploy();
  };
  if (m.conflicts.length === 0) apply({});
  else openConflicts(m, apply);
}

function describe(v: unknown): string {
  return v === undefined ? "(deleted)" : JSON.stringify(v, null, 1);
}

function openConflicts(m: Merge, apply: (choices: Record<string, Side>) => void): void {
  const intro = Object.assign(document.createElement("p"), {
    textContent:
      "Both you and the running flow changed these. Everything else is merged: your changes where only you " +
      "changed something, the running flow's where only it did. Choose, then the result is deployed.",
  });
  const table = document.createElement("div");
  table.className = "conflicts";
  for (const c of m.conflicts) {
    const row = document.createElement("fieldset");
    row.className = "conflict";
    row.dataset.key = c.key;
    row.append(Object.assign(document.createElement("legend"), { textContent: c.key.replace(":", " ") }));
    for (const side of ["local", "remote"] as const) {
      const label = document.createElement("label");
      const radio = Object.assign(document.createElement("input"), { type: "radio", name: c.key, value: side, checked: side === "local" });
      const pre = Object.assign(document.createElement("pre"), { textContent: describe(c[side]) });
      label.append(radio, side === "local" ? " mine" : " running", pre);
      row.append(label);
    }
    table.append(row);
  }
  openDialog(`${m.conflicts.length} conflict${m.conflicts.length === 1 ? "" : "s"}`, [intro, table], () => {
    const choices: Record<string, Side> = {};
    for (const c of m.conflicts) {
      const checked = table.querySelector<HTMLInputElement>(`input[name="${CSS.escape(c.key)}"]:checked`);
      choices[c.key] = checked?.value === "remote" ? "remote" : "local";
    }
    apply(choices);
  });
  const ok = $("node-form").querySelector<HTMLButtonElement>("button.primary");
  if (ok) ok.textContent = "Merge and deploy";
}

// -- flows, palette, live events ---------------------------------------------------------------

async function openFlow(id: string): Promise<void> {
  const [flow, layout] = await Promise.all([api.getFlow(id), api.getLayout(id)]);
  state.doc = clone(flow.document);
  state.doc.nodes ??= [];
  state.base = clone(state.doc);
  state.flowId = flow.id;
  state.revision = flow.revision;
  state.positions = autoLayout(state.doc.nodes, layout.positions, heightOf);
  state.undo = [];
  state.issues = [];
  state.statuses.clear();
  $("flow-title").textContent = flow.label ?? flow.id;
  document.querySelectorAll("#flows li").forEach((li) => li.classList.toggle("current", li.textContent === (flow.label ?? flow.id)));
  location.hash = `flow=${encodeURIComponent(id)}`;
  render();
  renderConnections();
  fitView();
  const st = await api.status();
  for (const n of st.nodes) if (n.flow === id) setStatus(n.id, n.status.level, n.status.text);
  fitView(); // again: status lines make boxes taller
}

function setStatus(nodeId: string, level: string, text: string): void {
  state.statuses.set(nodeId, { level, text });
  drawStatus(nodeId, level, text);
}

function drawStatus(nodeId: string, level: string, text: string): void {
  const el = document.querySelector<HTMLElement>(`.kf-node[data-node-id="${CSS.escape(nodeId)}"] .kf-status`);
  if (!el) return;
  el.className = `kf-status ${level}`;
  el.textContent = text;
  // A level without words (e.g. a delay's "ok, nothing dropped") would be a bare square.
  el.hidden = text === "";
}

function renderPalette(types: NodeType[]): void {
  const box = $("palette");
  box.replaceChildren();
  const categories = [...new Set(types.map((t) => t.category))].sort();
  for (const category of categories) {
    const group = document.createElement("details");
    group.open = true;
    group.append(Object.assign(document.createElement("summary"), { textContent: category }));
    for (const t of types.filter((x) => x.category === category)) {
      const item = document.createElement("div");
      item.className = "palette-item";
      item.draggable = true;
      item.dataset.type = t.type;
      item.title = `${t.summary}\n(click or drag to add)`;
      item.style.setProperty("--kf-color", t.color);
      item.innerHTML = `<b></b><small></small>`;
      (item.firstElementChild as HTMLElement).textContent = t.type;
      (item.lastElementChild as HTMLElement).textContent = t.summary;
      item.onclick = () => addNode(t.type);
      item.ondragstart = (e) => e.dataTransfer?.setData("text/plain", t.type);
      group.append(item);
    }
    box.append(group);
  }
}

$("canvas").addEventListener("dragover", (e) => e.preventDefault());
$("canvas").addEventListener("drop", (e) => {
  e.preventDefault();
  const type = e.dataTransfer?.getData("text/plain");
  if (!type || !state.types.has(type)) return;
  const rect = editor.precanvas.getBoundingClientRect();
  addNode(type, { x: Math.round((e.clientX - rect.x) / editor.zoom), y: Math.round((e.clientY - rect.y) / editor.zoom) });
});

function debugLine(kind: string, text: string): void {
  const list = $("debug");
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  list.prepend(li);
  while (list.children.length > 200) list.lastElementChild?.remove();
}

function listen(): void {
  const source = api.events();
  source.addEventListener("status", (e) => {
    const d = JSON.parse((e as MessageEvent<string>).data) as { node: string; level: string; text: string };
    setStatus(d.node, d.level, d.text);
  });
  source.addEventListener("debug", (e) => {
    const d = JSON.parse((e as MessageEvent<string>).data) as { node: string; topic: string | null; property: string; value: unknown };
    debugLine("debug", `${d.node}${d.topic ? ` [${d.topic}]` : ""} ${d.property}: ${JSON.stringify(d.value)}`);
  });
  source.addEventListener("error", (e) => {
    if (!(e instanceof MessageEvent)) return; // the connection's own error event: EventSource retries
    const d = JSON.parse(e.data as string) as { node: string; error: { message: string } };
    debugLine("error", `${d.node} error: ${d.error.message}`);
  });
}

async function start(): Promise<void> {
  const [flows, types] = await Promise.all([api.listFlows(), api.nodeTypes()]);
  for (const t of types.nodes) state.types.set(t.type, t);
  for (const t of types.connections) state.connectionTypes.set(t.type, t);
  renderPalette(types.nodes);
  const adder = $<HTMLSelectElement>("add-connection");
  adder.replaceChildren(Object.assign(document.createElement("option"), { value: "", textContent: "+ connection…" }));
  for (const t of types.connections) adder.append(Object.assign(document.createElement("option"), { value: t.type, textContent: t.type, title: t.summary }));
  const list = $("flows");
  list.replaceChildren();
  for (const f of flows.flows) {
    const li = document.createElement("li");
    li.textContent = f.label ?? f.id;
    li.dataset.flowId = f.id;
    li.onclick = () => void openFlow(f.id);
    list.append(li);
  }
  $("login").hidden = true;
  $("app").hidden = false;
  listen();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("flow");
  const first = flows.flows.find((f) => f.id === wanted) ?? flows.flows[0];
  if (first) await openFlow(first.id);
}

function showLogin(message = ""): void {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

$<HTMLFormElement>("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const data = new FormData(e.target as HTMLFormElement);
  try {
    const given = String(data.get("token") ?? "").trim();
    api.token.set(given || (await api.login(String(data.get("username")), String(data.get("password")))));
    await start();
  } catch (err) {
    api.token.clear();
    showLogin(err instanceof Error ? err.message : String(err));
  }
});

$("logout").onclick = () => {
  api.token.clear();
  location.reload();
};
$("undo").onclick = undo;
$("settings").onclick = openSettings;
$<HTMLSelectElement>("add-connection").onchange = (e) => {
  const select = e.target as HTMLSelectElement;
  const type = select.value;
  select.value = "";
  addConnection(type);
};
$("delete").onclick = deleteSelected;
$("fit").onclick = fitView;
$("deploy").onclick = () => void deploy();
$("clear-debug").onclick = () => $("debug").replaceChildren();

document.addEventListener("keydown", (e) => {
  const typing = (e.target as HTMLElement).closest("input, textarea, select, dialog");
  if ((e.ctrlKey || e.metaKey) && e.key === "s") {
    e.preventDefault();
    void deploy();
  } else if (!typing && (e.ctrlKey || e.metaKey) && e.key === "z") {
    e.preventDefault();
    undo();
  } else if (!typing && !e.ctrlKey && !e.metaKey && !e.altKey && e.key === "f") {
    fitView();
  }
});

if (api.token.get()) start().catch(() => showLogin("Your session has ended: log in again."));
else showLogin();
