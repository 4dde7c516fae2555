// A node's config form, generated from its type's JSON Schema (pydantic's output).
import type { JsonSchema } from "./api";

/** A rendered field: `read()` answers the value, or undefined to leave the key out. */
interface Field {
  element: HTMLElement;
  read(): unknown;
}

function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Record<string, unknown> = {}): HTMLElementTagNameMap[K] {
  return Object.assign(document.createElement(tag), props);
}

function resolve(schema: JsonSchema, root: JsonSchema): JsonSchema {
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop() ?? "";
    return { ...(root.$defs?.[name] ?? {}), ...schema, $ref: undefined };
  }
  return schema;
}

/** `anyOf: [X, {type: null}]` is an optional X; the outer schema keeps title, default, description. */
function unwrapOptional(schema: JsonSchema, root: JsonSchema): JsonSchema {
  const s = resolve(schema, root);
  const options = s.anyOf?.filter((o) => o.type !== "null");
  if (options && options.length === 1) {
    const { anyOf: _, ...outer } = s;
    return { ...resolve(options[0], root), ...outer };
  }
  return s;
}

export const isSecret = (s: JsonSchema): boolean =>
  s.writeOnly === true || s.format === "password" || (s.anyOf ?? []).some((o) => isSecret(o));

/** What a form needs from the flow it edits: the connections a node's field may name. */
let datalists = 0;

export const formContext = {
  connections: (_type: string): string[] => [],
};

/** `${NAME}`, `${NAME:-default}` or `${file:/path}`: how a secret is written in a flow. */
export const isReference = (v: string): boolean => /^\$\{[^}]+\}$/.test(v.trim());

function isDuration(s: JsonSchema): boolean {
  return (s.anyOf ?? []).some((o) => o.type === "number") && (s.anyOf ?? []).some((o) => o.type === "string");
}

function field(schema: JsonSchema, root: JsonSchema, value: unknown): Field {
  const s = unwrapOptional(schema, root);
  if (isSecret(schema)) {
    // A flow holds a secret only as a ${VAR} / ${file:...} reference: that is shown and edited.
    // Anything else (a literal the API would refuse, or a masked value) is never echoed: left
    // empty, the field keeps what the flow has.
    const ref = typeof value === "string" && isReference(value) ? value : "";
    const input = h("input", { type: "text", value: ref, autocomplete: "off", className: "secret" });
    input.placeholder = value && !ref ? "unchanged (set a ${VAR} reference)" : "${VAR} or ${file:/path}";
    return { element: input, read: () => (input.value ? input.value : value) };
  }
  const connectionType = s["x-klimaflow-connection"];
  if (typeof connectionType === "string") {
    // A node's broker/server: offered the flow's connections of that type, while anything
    // else can still be typed (a connection added later, a ${VAR}).
    const names = formContext.connections(connectionType);
    const list = h("datalist", { id: `kf-connections-${++datalists}` });
    for (const name of names) list.append(h("option", { value: name }));
    const input = h("input", { type: "text", value: typeof value === "string" ? value : "", placeholder: names.join(", ") });
    input.setAttribute("list", list.id);
    const box = h("span", { className: "connection-choice" });
    box.append(input, list);
    return {
      element: box,
      read: () => (input.value ? input.value : undefined),
    };
  }
  if (s.const !== undefined) {
    // A variant's tag (e.g. a switch rule's `op: between`): fixed by the variant chosen.
    const tag = h("output", { textContent: String(s.const) });
    return { element: tag, read: () => s.const };
  }
  if (s.enum) {
    const select = h("select");
    select.append(h("option", { value: "", textContent: "(default)" }));
    for (const option of s.enum) select.append(h("option", { value: JSON.stringify(option), textContent: String(option) }));
    select.value = value === undefined ? "" : JSON.stringify(value);
    return { element: select, read: () => (select.value ? JSON.parse(select.value) : undefined) };
  }
  if (s.type === "boolean") {
    const input = h("input", { type: "checkbox", checked: Boolean(value ?? s.default) });
    return { element: input, read: () => input.checked };
  }
  if (s.type === "number" || s.type === "integer") {
    const input = h("input", { type: "number", step: s.type === "integer" ? "1" : "any" });
    if (typeof value === "number") input.value = String(value);
    else if (typeof s.default === "number") input.placeholder = String(s.default);
    return { element: input, read: () => (input.value === "" ? undefined : Number(input.value)) };
  }
  if (s.type === "string" || isDuration(s)) {
    const input = h("input", { type: "text", value: value === undefined || value === null ? "" : String(value) });
    if (s.default !== undefined && s.default !== null) input.placeholder = String(s.default);
    const numeric = isDuration(s);
    return {
      element: input,
      read: () => {
        if (input.value === "") return undefined;
        return numeric && /^\d+(\.\d+)?$/.test(input.value) ? Number(input.value) : input.value;
      },
    };
  }
  if (s.type === "array" && s.items) return listField(s.items, root, Array.isArray(value) ? value : []);
  if (s.type === "object" && s.properties) return objectField(s, root, (value ?? {}) as Record<string, unknown>);
  const options = s.oneOf ?? s.anyOf;
  if (options && options.length > 1) return variantField(options, root, value);
  // Anything else (free-form payloads): edited as JSON.
  const area = h("textarea", { rows: 3, value: value === undefined ? "" : JSON.stringify(value, null, 1) });
  return {
    element: area,
    read: () => {
      if (area.value.trim() === "") return undefined;
      try {
        return JSON.parse(area.value);
      } catch {
        return area.value; // plain text is a string payload
      }
    },
  };
}

function listField(items: JsonSchema, root: JsonSchema, values: unknown[]): Field {
  const box = h("div", { className: "list" });
  const rows: { row: HTMLElement; f: Field }[] = [];
  const button = (action: string, text: string, title: string, onclick: () => void) => {
    const b = h("button", { type: "button", textContent: text, title });
    b.dataset.action = action;
    b.onclick = onclick;
    return b;
  };
  /** Swaps the row at i with its neighbour at i + step, on screen and in reading order. */
  const move = (row: HTMLElement, step: number) => {
    const i = rows.findIndex((r) => r.row === row);
    const j = i + step;
    if (i < 0 || j < 0 || j >= rows.length) return;
    [rows[i], rows[j]] = [rows[j], rows[i]];
    for (const r of rows) box.insertBefore(r.row, addButton);
  };
  const add = (v: unknown) => {
    const f = field(items, root, v);
    const row = h("div", { className: "list-item" });
    const tools = h("span", { className: "list-tools" });
    tools.append(
      button("up", "↑", "Move this item up", () => move(row, -1)),
      button("down", "↓", "Move this item down", () => move(row, 1)),
      button("remove", "−", "Remove this item", () => {
        row.remove();
        rows.splice(
          rows.findIndex((r) => r.row === row),
          1,
        );
      }),
    );
    row.append(f.element, tools);
    box.insertBefore(row, addButton);
    rows.push({ row, f });
  };
  const addButton = h("button", { type: "button", textContent: "+ add", className: "add" });
  addButton.onclick = () => add(undefined);
  box.append(addButton);
  values.forEach(add);
  return { element: box, read: () => rows.map((r) => r.f.read()).filter((v) => v !== undefined) };
}

/** Which JSON type a value has, in JSON Schema's words. */
function jsonType(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (Number.isInteger(v)) return "integer";
  return typeof v;
}

function typeFits(s: JsonSchema, v: unknown): boolean {
  if (s.type === undefined) return true;
  const types = Array.isArray(s.type) ? s.type : [s.type];
  const t = jsonType(v);
  return types.includes(t) || (t === "integer" && types.includes("number"));
}

/** How well a value fits a variant: -1 not at all, else more for more of its keys and tags named. */
function fit(s: JsonSchema, v: unknown): number {
  if (s.const !== undefined) return JSON.stringify(s.const) === JSON.stringify(v) ? 1 : -1;
  if (!typeFits(s, v)) return -1;
  if (!s.properties || typeof v !== "object" || v === null || Array.isArray(v)) return 0;
  const obj = v as Record<string, unknown>;
  if ((s.required ?? []).some((k) => !(k in obj))) return -1;
  let score = 0;
  for (const [k, x] of Object.entries(obj)) {
    const prop = s.properties[k];
    if (!prop) return -1;
    if (prop.const !== undefined && JSON.stringify(prop.const) !== JSON.stringify(x)) return -1;
    if (prop.enum && !prop.enum.some((e) => JSON.stringify(e) === JSON.stringify(x))) return -1;
    score += prop.const !== undefined || prop.enum ? 2 : 1;
  }
  return score;
}

/** A variant's name in the selector: its title, its tag (`op: between`), else its type. */
function variantName(s: JsonSchema): string {
  const tag = Object.entries(s.properties ?? {}).find(([, p]) => p.const !== undefined);
  if (tag) return `${tag[0]}: ${String(tag[1].const)}`;
  if (s.title) return s.title.replace(/Rule$/, "").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  if (s.type === "null") return "(none)";
  return Array.isArray(s.type) ? s.type.join("/") : (s.type ?? "value");
}

/** A `oneOf`/`anyOf` property: a selector for the variant and that variant's own form. Switching
 * variant carries over the values the two have in common (e.g. a switch rule's port). */
function variantField(options: JsonSchema[], root: JsonSchema, value: unknown): Field {
  const variants = options.map((o) => resolve(o, root));
  const box = h("div", { className: "variant" });
  const select = h("select", { className: "variant-select" });
  variants.forEach((v, i) => select.append(h("option", { value: String(i), textContent: variantName(v) })));
  const body = h("div", { className: "variant-body" });
  box.append(select, body);
  let current: Field;
  const show = (i: number, v: unknown) => {
    const chosen = variants[i];
    current = chosen.type === "null" ? { element: h("span"), read: () => null } : field(chosen, root, v);
    body.replaceChildren(current.element);
  };
  let best = 0;
  if (value !== undefined) {
    const scores = variants.map((v) => fit(v, value));
    best = Math.max(0, scores.indexOf(Math.max(...scores)));
  }
  select.value = String(best);
  show(best, value);
  select.onchange = () => {
    const was = current.read();
    const chosen = variants[Number(select.value)];
    let carried: unknown;
    if (chosen.properties && typeof was === "object" && was !== null && !Array.isArray(was)) {
      carried = Object.fromEntries(
        Object.entries(was).filter(([k]) => k in (chosen.properties ?? {}) && chosen.properties?.[k].const === undefined),
      );
    } else if (typeFits(chosen, was) && chosen.type !== undefined) carried = was;
    show(Number(select.value), carried);
  };
  return { element: box, read: () => current.read() };
}

export interface ObjectField extends Field {
  read(): Record<string, unknown>;
  /** Marks the named property with the API's message (validation issues). */
  showError(name: string, message: string): void;
}

export function objectField(schema: JsonSchema, root: JsonSchema, value: Record<string, unknown>): ObjectField {
  const box = h("fieldset", { className: "object" });
  const fields: Record<string, { f: Field; error: HTMLElement }> = {};
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    const label = h("label", { className: "field" });
    label.dataset.field = name;
    const title = h("span", { className: "title", textContent: prop.title ?? name });
    if (schema.required?.includes(name)) title.textContent += " *";
    const f = field(prop, root, value[name]);
    f.element.setAttribute("name", name);
    const help = h("small", { textContent: prop.description ?? "" });
    const error = h("span", { className: "field-error" });
    label.append(title, f.element, help, error);
    box.append(label);
    fields[name] = { f, error };
  }
  return {
    element: box,
    read: () => {
      const out: Record<string, unknown> = {};
      for (const [name, { f }] of Object.entries(fields)) {
        const v = f.read();
        const prop = schema.properties?.[name] ?? {};
        const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
        // A key the flow did not have stays out while it holds the default: the file stays as written.
        const untouched = !(name in value) && (same(v, prop.default) || same(v, []));
        if (v !== undefined && !untouched) out[name] = v;
      }
      return out;
    },
    showError: (name, message) => {
      const target = fields[name] ?? fields[name.split(".")[0]];
      if (target) target.error.textContent = message;
    },
  };
}
