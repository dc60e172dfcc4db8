import { describe, expect, it } from 'vitest';
import { layoutDag, type DagNode } from './dag';

const byId = (nodes: DagNode[]) => Object.fromEntries(nodes.map((n) => [n.id, n]));

function overlaps(a: DagNode, b: DagNode): boolean {
  return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
}

describe('layoutDag', () => {
  it('ranks each step by its longest chain of needs (workflows/hello.toml)', () => {
    const layout = layoutDag([
      { id: 'greet' },
      { id: 'pause', needs: ['greet'] },
      { id: 'confirm', needs: ['greet', 'pause'] },
    ]);
    const n = byId(layout.nodes);
    expect([n.greet!.rank, n.pause!.rank, n.confirm!.rank]).toEqual([0, 1, 2]);
    expect(n.greet!.x).toBeLessThan(n.pause!.x);
    expect(n.pause!.x).toBeLessThan(n.confirm!.x);
    expect(layout.edges.map((e) => `${e.from}->${e.to}`).sort()).toEqual(['greet->confirm', 'greet->pause', 'pause->confirm']);
    expect(layout.missing).toEqual([]);
  });

  it('puts independent steps in one column without overlapping (parallel branches)', () => {
    const layout = layoutDag([
      { id: 'a' },
      { id: 'b', needs: ['a'] },
      { id: 'c', needs: ['a'] },
      { id: 'd', needs: ['b', 'c'] },
    ]);
    const n = byId(layout.nodes);
    expect(n.b!.x).toBe(n.c!.x);
    expect(n.b!.y).not.toBe(n.c!.y);
    for (const x of layout.nodes) for (const y of layout.nodes) if (x !== y) expect(overlaps(x, y)).toBe(false);
    // the single-node columns are centred on the two-node column
    expect(n.a!.y + n.a!.height / 2).toBeCloseTo((n.b!.y + n.c!.y + n.c!.height) / 2);
    expect(n.d!.y).toBe(n.a!.y);
  });

  it('fits every node inside the reported size', () => {
    const steps = Array.from({ length: 12 }, (_, i) => ({ id: `s${i}`, needs: i ? [`s${Math.floor((i - 1) / 3)}`] : [] }));
    const layout = layoutDag(steps);
    expect(layout.nodes).toHaveLength(12);
    for (const node of layout.nodes) {
      expect(node.x).toBeGreaterThanOrEqual(0);
      expect(node.y).toBeGreaterThanOrEqual(0);
      expect(node.x + node.width).toBeLessThanOrEqual(layout.width);
      expect(node.y + node.height).toBeLessThanOrEqual(layout.height);
    }
  });

  it('orders a column by the position of what it needs, avoiding crossings', () => {
    // x1 needs b (second in column 0), x2 needs a (first): the layout swaps them.
    const layout = layoutDag([{ id: 'a' }, { id: 'b' }, { id: 'x1', needs: ['b'] }, { id: 'x2', needs: ['a'] }]);
    const n = byId(layout.nodes);
    expect(n.x2!.y).toBeLessThan(n.x1!.y);
  });

  it('arcs an edge that skips a column over the step in between', () => {
    const layout = layoutDag([{ id: 'greet' }, { id: 'pause', needs: ['greet'] }, { id: 'confirm', needs: ['greet', 'pause'] }]);
    const n = byId(layout.nodes);
    const long = layout.edges.find((e) => e.from === 'greet' && e.to === 'confirm')!;
    const [x1, y1, c1x, c1y, c2x, c2y, x2, y2] = long.path.match(/-?[\d.]+/g)!.map(Number) as [number, number, number, number, number, number, number, number];
    // sample the cubic: where it passes over `pause`, it is above it
    for (let t = 0; t <= 1; t += 0.01) {
      const u = 1 - t;
      const x = u ** 3 * x1 + 3 * u * u * t * c1x + 3 * u * t * t * c2x + t ** 3 * x2;
      const y = u ** 3 * y1 + 3 * u * u * t * c1y + 3 * u * t * t * c2y + t ** 3 * y2;
      if (x > n.pause!.x && x < n.pause!.x + n.pause!.width) expect(y).toBeLessThan(n.pause!.y);
      expect(y).toBeGreaterThanOrEqual(0);
    }
  });

  it('draws edges from the right side of a step to the left side of the next', () => {
    const layout = layoutDag([{ id: 'a' }, { id: 'b', needs: ['a'] }], { nodeWidth: 100, nodeHeight: 40, columnGap: 50, padding: 0 });
    expect(layout.edges[0]!.path).toBe('M100,20 C125,20 125,20 150,20');
    expect(layout.width).toBe(250);
    expect(layout.height).toBe(40);
  });

  it('reports unknown needs and survives cycles and duplicates', () => {
    const layout = layoutDag([
      { id: 'a', needs: ['c'] },
      { id: 'b', needs: ['a', 'ghost'] },
      { id: 'c', needs: ['b'] },
      { id: 'a', needs: [] },
    ]);
    expect(layout.nodes.map((n) => n.id).sort()).toEqual(['a', 'b', 'c']);
    expect(layout.missing).toEqual(['b → ghost']);
    // one edge of the cycle a→b→c→a is dropped, the rest drawn
    expect(layout.edges).toHaveLength(2);
  });

  it('gives a taller node its own height, keeping columns centred and apart', () => {
    const layout = layoutDag(
      [{ id: 'split' }, { id: 'fanout', needs: ['split'], height: 80 }, { id: 'announce', needs: ['split'] }, { id: 'collect', needs: ['fanout'] }],
      { nodeHeight: 56, rowGap: 20, padding: 0 },
    );
    const n = byId(layout.nodes);
    expect(n.fanout!.height).toBe(80);
    expect(n.announce!.height).toBe(56);
    expect(n.announce!.y).toBe(n.fanout!.y + 80 + 20);
    expect(layout.height).toBe(80 + 20 + 56);
    for (const x of layout.nodes) for (const y of layout.nodes) if (x !== y) expect(overlaps(x, y)).toBe(false);
    // a single node is centred on the taller column, and edges meet each node at its middle
    expect(n.split!.y + n.split!.height / 2).toBeCloseTo(layout.height / 2);
    const edge = layout.edges.find((e) => e.from === 'fanout' && e.to === 'collect')!;
    expect(edge.path.startsWith(`M${n.fanout!.x + n.fanout!.width},${n.fanout!.y + 40} `)).toBe(true);
  });

  it('handles no steps', () => {
    const layout = layoutDag([]);
    expect(layout.nodes).toEqual([]);
    expect(layout.height).toBe(24);
  });
});
