// Numbers for hand-drawn SVG charts.

/** A round upper bound ≥ `max` (1, 2, 2.5, 5 × 10ⁿ), never below `min`. */
export function niceMax(max: number, min = 1): number {
  if (!Number.isFinite(max) || max <= min) return min;
  const exp = Math.floor(Math.log10(max));
  const base = 10 ** exp;
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * base >= max) return m * base;
  }
  return 10 * base;
}

/** Evenly spaced ticks from 0 to `max`: `count` steps, or the most (≤ 5) that keep them whole. */
export function ticks(max: number, count?: number): number[] {
  count ??= [5, 4, 3, 2].find((n) => Number.isInteger(max / n)) ?? 4;
  const out: number[] = [];
  for (let i = 0; i <= count; i++) out.push(Math.round(((max * i) / count) * 100) / 100);
  return out;
}

export interface StackedBar {
  x: number;
  width: number;
  segments: { key: string; y: number; height: number; value: number }[];
}

/** Lays out stacked bars for `series` (bottom first) over `values` in a plot box. */
export function stackedBars<T>(
  values: T[],
  series: { key: string; value: (v: T) => number }[],
  box: { x: number; y: number; width: number; height: number },
  yMax: number,
  gap = 2,
): StackedBar[] {
  if (values.length === 0) return [];
  const slot = box.width / values.length;
  const width = Math.max(1, slot - gap);
  return values.map((v, i) => {
    let base = box.y + box.height;
    const segments = series.map((s) => {
      const value = Math.max(0, s.value(v));
      const height = yMax > 0 ? (value / yMax) * box.height : 0;
      base -= height;
      return { key: s.key, y: base, height, value };
    });
    return { x: box.x + i * slot + gap / 2, width, segments };
  });
}

/** Milliseconds in a window such as `1h`, `24h` or `7d`; NaN when it is not one. */
export function windowMs(window: string): number {
  const m = /^(\d+)(m|h|d)$/.exec(window);
  if (!m) return NaN;
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
}

/**
 * Every bucket of a time window, with zeros where `points` has none. The API lists only
 * the buckets that have finished runs (each starting at a multiple of `bucketSeconds`
 * since the epoch), so a lone bucket would otherwise fill the whole chart. Without a
 * usable bucket width or window, `points` is returned as it is.
 */
export function fillBuckets<T extends { at: string }>(
  points: T[],
  bucketSeconds: number | undefined,
  spanMs: number,
  nowMs: number,
  empty: (at: string) => T,
  maxBuckets = 500,
): T[] {
  const size = (bucketSeconds ?? 0) * 1000;
  if (!(size > 0) || !(spanMs > 0) || !Number.isFinite(nowMs)) return points;
  const start = Math.floor((nowMs - spanMs) / size) * size;
  const end = Math.floor(nowMs / size) * size;
  if ((end - start) / size + 1 > maxBuckets) return points;
  const byBucket = new Map<number, T>();
  for (const p of points) {
    const t = Date.parse(p.at);
    if (Number.isNaN(t)) return points;
    byBucket.set(Math.floor(t / size) * size, p);
  }
  for (let t = start; t <= end; t += size) {
    if (!byBucket.has(t)) byBucket.set(t, empty(new Date(t).toISOString()));
  }
  return [...byBucket.entries()].sort(([a], [b]) => a - b).map(([, p]) => p);
}

/**
 * Drops the empty buckets before the first one with data, keeping at least `min`
 * buckets (and one empty bucket of lead-in): on a young install the chart starts where
 * its history does instead of drawing one bar at the far right of an empty window.
 * Returns the points and whether any were dropped.
 */
export function trimLeading<T>(points: T[], hasData: (p: T) => boolean, min = 12): { points: T[]; trimmed: boolean } {
  const first = points.findIndex(hasData);
  if (first < 0) return { points, trimmed: false };
  const start = Math.max(0, Math.min(first - 1, points.length - min));
  return { points: points.slice(start), trimmed: start > 0 };
}
