import { describe, expect, it } from 'vitest';
import { fillBuckets, trimLeading, windowMs } from './chart';

const empty = (at: string) => ({ at, succeeded: 0, dead: 0 });

describe('windowMs', () => {
  it('reads the overview windows', () => {
    expect(windowMs('1h')).toBe(3_600_000);
    expect(windowMs('24h')).toBe(86_400_000);
    expect(windowMs('7d')).toBe(7 * 86_400_000);
    expect(windowMs('soon')).toBeNaN();
  });
});

describe('fillBuckets', () => {
  const now = Date.parse('2026-01-01T12:10:00Z');

  it('fills the window around the buckets the API sent', () => {
    const points = [{ at: '2026-01-01T11:00:00Z', succeeded: 3, dead: 1 }];
    const filled = fillBuckets(points, 1800, 3 * 3_600_000, now, empty);
    expect(filled.map((p) => p.at)).toEqual([
      '2026-01-01T09:00:00.000Z',
      '2026-01-01T09:30:00.000Z',
      '2026-01-01T10:00:00.000Z',
      '2026-01-01T10:30:00.000Z',
      '2026-01-01T11:00:00Z',
      '2026-01-01T11:30:00.000Z',
      '2026-01-01T12:00:00.000Z',
    ]);
    expect(filled[4]).toBe(points[0]);
    expect(filled.filter((p) => p.succeeded + p.dead > 0)).toHaveLength(1);
  });

  it('keeps buckets outside the window, in order', () => {
    const points = [{ at: '2026-01-01T13:00:00Z', succeeded: 1, dead: 0 }];
    const filled = fillBuckets(points, 3600, 2 * 3_600_000, now, empty);
    expect(filled.map((p) => p.at)).toEqual([
      '2026-01-01T10:00:00.000Z',
      '2026-01-01T11:00:00.000Z',
      '2026-01-01T12:00:00.000Z',
      '2026-01-01T13:00:00Z',
    ]);
  });

  it('leaves the points alone without a bucket width, or with too many buckets', () => {
    const points = [{ at: '2026-01-01T11:00:00Z', succeeded: 3, dead: 1 }];
    expect(fillBuckets(points, undefined, 3_600_000, now, empty)).toBe(points);
    expect(fillBuckets(points, 0, 3_600_000, now, empty)).toBe(points);
    expect(fillBuckets(points, 1, 86_400_000, now, empty)).toBe(points);
  });
});

describe('trimLeading', () => {
  const has = (n: number) => n > 0;
  it('starts one bucket before the first with data, keeping at least the minimum', () => {
    const points = [0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 5, 0];
    expect(trimLeading(points, has, 3)).toEqual({ points: [0, 3, 0, 5, 0], trimmed: true });
    expect(trimLeading(points, has, 6)).toEqual({ points: [0, 0, 3, 0, 5, 0], trimmed: true });
  });
  it('keeps everything when there is no data or history starts at the window', () => {
    expect(trimLeading([0, 0, 0], has, 1)).toEqual({ points: [0, 0, 0], trimmed: false });
    expect(trimLeading([1, 0, 0], has, 1)).toEqual({ points: [1, 0, 0], trimmed: false });
    expect(trimLeading([0, 0, 1], has, 12)).toEqual({ points: [0, 0, 1], trimmed: false });
  });
});
