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

function isDuration(s: JsonSchema): boolean {
  return (s.anyOf ?? []).some((o) => o.type === "number") && (s.anyOf ?? []).some((o) => o.type === "string");
}

function field(schema: JsonSchema, root: JsonSchema, value: unknown): Field {
  const s = unwrapOptional(schema, root);
  if (isSecret(schema)) {
    // Never echo what the flow holds (an ${ENV} reference at most): empty keeps it as it is.
    const input = h("input", { type: "password", autocomplete: "new-password", placeholder: value ? "unchanged" : "" });
    return { element: input, read: () => (input.value ? input.value : value) };
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
  // Anything else (free-form payloads, alternatives): edited as JSON.
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
  const add = (v: unknown) => {
    const f = field(items, root, v);
    const row = h("div", { className: "list-item" });
    const remove = h("button", { type: "button", textContent: "−", title: "Remove" });
    remove.onclick = () => {
      row.remove();
      rows.splice(rows.findIndex((r) => r.row === row), 1);
    };
    row.append(f.element, remove);
    box.insertBefore(row, addButton);
    rows.push({ row, f });
  };
  const addButton = h("button", { type: "button", textContent: "+ add", className: "add" });
  addButton.onclick = () => add(undefined);
  box.append(addButton);
  values.forEach(add);
  return { element: box, read: () => rows.map((r) => r.f.read()).filter((v) => v !== undefined) };
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
