// Automatic layout for nodes without a stored position: dagre's layered drawing, left to right.
import dagre from "@dagrejs/dagre";
import type { FlowNode, Position, Wires } from "./api";

export const NODE_WIDTH = 200;
export const NODE_HEIGHT = 90;

export function wiresOf(node: FlowNode): Record<string, string[]> {
  const w: Wires | undefined = node.wires;
  if (!w) return {};
  return Array.isArray(w) ? { out: [...w] } : Object.fromEntries(Object.entries(w).map(([k, v]) => [k, [...v]]));
}

/** Written back in the shortest form the flow format allows (a plain list for `out` alone). */
export function setWires(node: FlowNode, wires: Record<string, string[]>): void {
  const used = Object.entries(wires).filter(([, ids]) => ids.length > 0);
  if (used.length === 0) delete node.wires;
  else if (used.length === 1 && used[0][0] === "out") node.wires = used[0][1];
  else node.wires = Object.fromEntries(used);
}

interface Box {
  x: number;
  y: number;
  h: number;
}

const GAP = 30;

function overlaps(a: Box, b: Box): boolean {
  return a.x < b.x + NODE_WIDTH + GAP && b.x < a.x + NODE_WIDTH + GAP && a.y < b.y + b.h + GAP && b.y < a.y + a.h + GAP;
}

/** Positions for every node: stored ones kept, the others placed by dagre (sources first) and moved
 * down until they overlap no box already placed (dagre knows nothing of the stored positions).
 * `heightOf` is a box's height estimate: boxes with many ports are taller than NODE_HEIGHT. */
export function autoLayout(
  nodes: FlowNode[],
  stored: Record<string, Position>,
  heightOf: (n: FlowNode) => number = () => NODE_HEIGHT,
): Record<string, Position> {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 40, ranksep: 120, marginx: 40, marginy: 40 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: NODE_WIDTH, height: heightOf(n) });
  for (const n of nodes) {
    for (const targets of Object.values(wiresOf(n))) {
      for (const t of targets) if (g.hasNode(t)) g.setEdge(n.id, t);
    }
  }
  dagre.layout(g);
  const out: Record<string, Position> = {};
  const placed: Box[] = [];
  for (const n of nodes) {
    const p = stored[n.id];
    if (p) {
      out[n.id] = p;
      placed.push({ ...p, h: heightOf(n) });
    }
  }
  for (const n of nodes) {
    if (stored[n.id]) continue;
    const p = g.node(n.id);
    const box: Box = { x: Math.round(p.x - NODE_WIDTH / 2), y: Math.round(p.y - p.height / 2), h: heightOf(n) };
    for (let hit = placed.find((b) => overlaps(box, b)); hit; hit = placed.find((b) => overlaps(box, b))) {
      box.y = hit.y + hit.h + GAP;
    }
    placed.push(box);
    out[n.id] = { x: box.x, y: box.y };
  }
  return out;
}
