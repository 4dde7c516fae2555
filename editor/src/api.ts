// The editor API (docs/editor-api.md), with the bearer token kept for this browser tab.

export interface NodeType {
  type: string;
  category: string;
  summary: string;
  inputs: number;
  outputs: string[];
  color: string;
  icon: string;
  config_schema: JsonSchema;
}

export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  format?: string;
  writeOnly?: boolean;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  minimum?: number;
  maximum?: number;
  "x-klimaflow-connection"?: string;
}

export interface ConnectionType {
  type: string;
  summary: string;
  description: string;
  config_schema: JsonSchema;
}

export type Wires = string[] | Record<string, string[]>;

export interface FlowNode {
  id: string;
  type: string;
  name?: string;
  wires?: Wires;
  [key: string]: unknown;
}

export interface FlowDocument {
  id: string;
  label?: string;
  nodes: FlowNode[];
  [key: string]: unknown;
}

export interface FlowView {
  id: string;
  label: string | null;
  file: string;
  document: FlowDocument;
  revision?: string;
}

export interface Issue {
  severity: string;
  message: string;
  node: string | null;
  connection?: string | null;
  field: string | null;
}

export interface Position {
  x: number;
  y: number;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(typeof body.detail === "string" ? body.detail : `HTTP ${status}`);
  }
}

const TOKEN_KEY = "klimaflow.token";

export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (value: string): void => sessionStorage.setItem(TOKEN_KEY, value),
  clear: (): void => sessionStorage.removeItem(TOKEN_KEY),
};

/** JSON request; answers the parsed body, or throws HttpError with it. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const data = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  if (!res.ok) throw new HttpError(res.status, data);
  return data as T;
}

export async function login(username: string, password: string): Promise<string> {
  const res = await call<{ token: string }>("POST", "/api/auth/login", { username, password });
  return res.token;
}

export const listFlows = () => call<{ revision: string; flows: FlowView[] }>("GET", "/api/flows");
export const getFlow = (id: string) => call<FlowView & { revision: string }>("GET", `/api/flows/${encodeURIComponent(id)}`);
export const nodeTypes = () => call<{ nodes: NodeType[]; connections: ConnectionType[] }>("GET", "/api/nodes");
export const getLayout = (id: string) =>
  call<{ positions: Record<string, Position> }>("GET", `/api/flows/${encodeURIComponent(id)}/layout`);
export const putLayout = (id: string, positions: Record<string, Position>) =>
  call("PUT", `/api/flows/${encodeURIComponent(id)}/layout`, { positions });
export const inject = (nodeId: string) => call("POST", `/api/inject/${encodeURIComponent(nodeId)}`, {});
export const status = () =>
  call<{ nodes: { id: string; flow: string; status: { level: string; text: string } }[] }>("GET", "/api/status");

/** `flowId` is the running flow's id: a document with another id renames it in place. */
export const deploy = (revision: string, flowId: string, doc: FlowDocument) =>
  call<{ ok: boolean; revision: string; result: { diff?: Record<string, unknown> } }>("POST", "/api/deploy", {
    revision,
    mode: "modified",
    flows: [{ id: flowId, document: doc }],
  });

export function events(): EventSource {
  return new EventSource(`/api/events?access_token=${encodeURIComponent(token.get() ?? "")}`);
}
