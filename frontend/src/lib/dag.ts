// Lays out a workflow's steps as a left-to-right DAG from their `needs`.
//
// A small Sugiyama-style layout, enough for workflows of tens of steps:
//   1. rank  = length of the longest `needs` chain leading to the step (roots are 0),
//   2. order = steps of a rank sorted by the mean position of the steps they need
//              (barycentre), which removes most edge crossings in practice,
//   3. place = rank → column, order → row, each column centred vertically.
// Unknown `needs` are reported and ignored; a cycle (which Cairn rejects at load time,
// but a picture should never hang) is broken at the edge that closes it.

export interface DagInput {
  id: string;
  needs?: readonly string[] | null;
  /** This node's height, when it draws more than the others (a map step's progress). */
  height?: number;
}

export interface DagNode {
  id: string;
  rank: number;
  order: number;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface DagEdge {
  from: string;
  to: string;
  /** An SVG path from the right side of `from` to the left side of `to`. */
  path: string;
}

export interface DagLayout {
  nodes: DagNode[];
  edges: DagEdge[];
  width: number;
  height: number;
  /** `needs` entries naming no step, as `step → missing`. */
  missing: string[];
}

export interface DagOptions {
  nodeWidth?: number;
  nodeHeight?: number;
  columnGap?: number;
  rowGap?: number;
  padding?: number;
}

export function layoutDag(steps: readonly DagInput[], options: DagOptions = {}): DagLayout {
  const nodeWidth = options.nodeWidth ?? 168;
  const nodeHeight = options.nodeHeight ?? 56;
  const columnGap = options.columnGap ?? 56;
  const rowGap = options.rowGap ?? 20;
  const padding = options.padding ?? 12;

  const ids = new Set<string>();
  const unique: DagInput[] = [];
  const heightOf = new Map<string, number>();
  for (const s of steps) {
    if (ids.has(s.id)) continue;
    ids.add(s.id);
    unique.push(s);
    heightOf.set(s.id, s.height ?? nodeHeight);
  }
  const missing: string[] = [];
  const parents = new Map<string, string[]>();
  for (const s of unique) {
    const known: string[] = [];
    for (const n of s.needs ?? []) {
      if (ids.has(n)) {
        if (!known.includes(n) && n !== s.id) known.push(n);
      } else {
        missing.push(`${s.id} → ${n}`);
      }
    }
    parents.set(s.id, known);
  }

  // 1. ranks by longest path, with cycle breaking.
  const rank = new Map<string, number>();
  const visiting = new Set<string>();
  const dropped = new Set<string>(); // "parent\u0000child" edges that close a cycle
  const rankOf = (id: string): number => {
    const known = rank.get(id);
    if (known !== undefined) return known;
    visiting.add(id);
    let r = 0;
    for (const p of parents.get(id) ?? []) {
      if (visiting.has(p)) {
        dropped.add(`${p}\u0000${id}`);
        continue;
      }
      r = Math.max(r, rankOf(p) + 1);
    }
    visiting.delete(id);
    rank.set(id, r);
    return r;
  };
  unique.forEach((s) => rankOf(s.id));

  // 2. order within ranks: input order first, then one barycentre sweep.
  const layers: string[][] = [];
  for (const s of unique) {
    const r = rank.get(s.id) ?? 0;
    (layers[r] ??= []).push(s.id);
  }
  const order = new Map<string, number>();
  layers.forEach((layer) => layer.forEach((id, i) => order.set(id, i)));
  for (let r = 1; r < layers.length; r++) {
    const layer = layers[r] ?? [];
    const centre = (id: string): number => {
      const ps = (parents.get(id) ?? []).filter((p) => !dropped.has(`${p}\u0000${id}`));
      if (ps.length === 0) return order.get(id) ?? 0;
      return ps.reduce((sum, p) => sum + (order.get(p) ?? 0), 0) / ps.length;
    };
    const keyed = layer.map((id, i) => ({ id, key: centre(id), i }));
    keyed.sort((a, b) => a.key - b.key || a.i - b.i);
    layers[r] = keyed.map((k) => k.id);
    layers[r]!.forEach((id, i) => order.set(id, i));
  }

  // 3. coordinates. Edges that skip a column arc above the nodes in between, so the
  // picture keeps room for them at the top.
  const spans = (from: string, to: string) => (rank.get(to) ?? 0) - (rank.get(from) ?? 0) > 1;
  const hasLongEdges = unique.some((s) => (parents.get(s.id) ?? []).some((p) => !dropped.has(`${p}\u0000${s.id}`) && spans(p, s.id)));
  const maxNode = Math.max(nodeHeight, ...heightOf.values());
  const lift = (maxNode / 2 + 12) / 0.75; // a cubic with both controls at -lift peaks at 0.75·lift
  const top = padding + (hasLongEdges ? Math.ceil(0.75 * lift - maxNode / 2) : 0);
  const columnHeight = (layer: readonly string[]) =>
    layer.reduce((sum, id) => sum + (heightOf.get(id) ?? nodeHeight), 0) + Math.max(0, layer.length - 1) * rowGap;
  const fullHeight = Math.max(nodeHeight, ...layers.map((l) => columnHeight(l ?? [])));
  const nodes: DagNode[] = [];
  const byId = new Map<string, DagNode>();
  layers.forEach((layer, r) => {
    let y = top + (fullHeight - columnHeight(layer)) / 2;
    layer.forEach((id, i) => {
      const height = heightOf.get(id) ?? nodeHeight;
      const node: DagNode = {
        id,
        rank: r,
        order: i,
        x: padding + r * (nodeWidth + columnGap),
        y,
        width: nodeWidth,
        height,
      };
      y += height + rowGap;
      nodes.push(node);
      byId.set(id, node);
    });
  });

  const edges: DagEdge[] = [];
  for (const s of unique) {
    const to = byId.get(s.id)!;
    for (const p of parents.get(s.id) ?? []) {
      if (dropped.has(`${p}\u0000${s.id}`)) continue;
      const from = byId.get(p)!;
      const x1 = from.x + from.width;
      const y1 = from.y + from.height / 2;
      const x2 = to.x;
      const y2 = to.y + to.height / 2;
      if (spans(p, s.id)) {
        const cy = Math.min(y1, y2) - lift;
        const reach = columnGap;
        edges.push({ from: p, to: s.id, path: `M${x1},${y1} C${x1 + reach},${cy} ${x2 - reach},${cy} ${x2},${y2}` });
      } else {
        const mid = x1 + (x2 - x1) / 2;
        edges.push({ from: p, to: s.id, path: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` });
      }
    }
  }

  const columns = layers.length;
  return {
    nodes,
    edges,
    width: padding * 2 + columns * nodeWidth + Math.max(0, columns - 1) * columnGap,
    height: top + padding + (nodes.length ? fullHeight : 0),
    missing,
  };
}
