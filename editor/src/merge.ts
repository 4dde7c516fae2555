// Three-way merge of a flow after a deploy conflict: the document the edit started from (base),
// the edit in this tab (local) and the flow that is running now (remote), node by node.
import type { FlowDocument, FlowNode } from "./api";
import { setWires, wiresOf } from "./layout";

export type Side = "local" | "remote";

/** One thing both sides changed differently; `undefined` means that side deleted it. */
export interface Conflict {
  /** `node:ID`, `connection:NAME` or `setting:KEY`. */
  key: string;
  local: unknown;
  remote: unknown;
}

export interface Merge {
  conflicts: Conflict[];
  /** The merged document, with each conflict decided as `choices` says (remote by default). */
  result(choices?: Record<string, Side>): FlowDocument;
}

const same = (a: unknown, b: unknown): boolean => canonical(a) === canonical(b);

/** JSON with sorted keys: two documents that differ only in key order are the same. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === "object" && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : x,
  );
}

type Pick = { value: unknown } | { conflict: Conflict };

/** The usual rule: a side that left the base as it was yields to the other. */
function three(key: string, base: unknown, local: unknown, remote: unknown): Pick {
  if (same(local, base)) return { value: remote };
  if (same(remote, base) || same(local, remote)) return { value: local };
  return { conflict: { key, local, remote } };
}

function byKey<T>(entries: [string, T][]): Map<string, T> {
  return new Map(entries);
}

/** Merges three versions of one flow: nodes by id, connections by name, the other settings by key. */
export function merge(base: FlowDocument, local: FlowDocument, remote: FlowDocument): Merge {
  const picks = new Map<string, Pick>();
  const nodes = (d: FlowDocument) => byKey((d.nodes ?? []).map((n): [string, FlowNode] => [n.id, n]));
  const [bn, ln, rn] = [nodes(base), nodes(local), nodes(remote)];
  // Remote's order, then the nodes only this tab added, in its order.
  const order = [...rn.keys(), ...[...ln.keys()].filter((id) => !rn.has(id))];
  for (const id of new Set([...order, ...bn.keys()])) picks.set(`node:${id}`, three(`node:${id}`, bn.get(id), ln.get(id), rn.get(id)));

  const conns = (d: FlowDocument) => byKey(Object.entries((d.connections ?? {}) as Record<string, unknown>));
  const [bc, lc, rc] = [conns(base), conns(local), conns(remote)];
  const connOrder = [...new Set([...rc.keys(), ...lc.keys(), ...bc.keys()])];
  for (const name of connOrder) picks.set(`connection:${name}`, three(`connection:${name}`, bc.get(name), lc.get(name), rc.get(name)));

  const settings = new Set([...Object.keys(base), ...Object.keys(local), ...Object.keys(remote)]);
  settings.delete("nodes");
  settings.delete("connections");
  for (const key of settings) picks.set(`setting:${key}`, three(`setting:${key}`, base[key], local[key], remote[key]));

  const conflicts = [...picks.values()].flatMap((p) => ("conflict" in p ? [p.conflict] : []));
  return {
    conflicts,
    result(choices = {}) {
      const value = (key: string): unknown => {
        const p = picks.get(key);
        if (!p) return undefined;
        if ("value" in p) return p.value;
        return choices[key] === "local" ? p.conflict.local : p.conflict.remote;
      };
      const out: Record<string, unknown> = {};
      for (const key of settings) {
        const v = value(`setting:${key}`);
        if (v !== undefined) out[key] = structuredClone(v);
      }
      const connections: Record<string, unknown> = {};
      for (const name of connOrder) {
        const v = value(`connection:${name}`);
        if (v !== undefined) connections[name] = structuredClone(v);
      }
      if (Object.keys(connections).length || "connections" in remote || "connections" in local) out.connections = connections;
      out.nodes = order.flatMap((id) => {
        const v = value(`node:${id}`) as FlowNode | undefined;
        return v ? [structuredClone(v)] : [];
      });
      // A wire to a node the merge left out would only be refused: it goes with the node.
      const ids = new Set((out.nodes as FlowNode[]).map((n) => n.id));
      for (const n of out.nodes as FlowNode[]) {
        if (!n.wires) continue;
        const wires = wiresOf(n);
        if (Object.values(wires).some((ts) => ts.some((t) => !ids.has(t)))) {
          setWires(n, Object.fromEntries(Object.entries(wires).map(([p, ts]) => [p, ts.filter((t) => ids.has(t))])));
        }
      }
      return out as FlowDocument;
    },
  };
}
