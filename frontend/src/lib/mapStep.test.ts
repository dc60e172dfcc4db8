import { describe, expect, it } from 'vitest';
import { isMapInProgress, mapProgressText, mapShares } from './mapStep';

describe('map step progress', () => {
  it('reads done of total, then what runs and what failed', () => {
    expect(mapProgressText({ total: 50, done: 37, failed: 1, running: 5 })).toBe('37/50 · 5 running · 1 failed');
    expect(mapProgressText({ total: 50, done: 50, failed: 0, running: 0 })).toBe('50/50');
    expect(mapProgressText({ total: 10, done: 2, failed: 3, running: 0 })).toBe('2/10 · 3 failed');
    // the list is still being written
    expect(mapProgressText({ total: null, done: 4, failed: 0, running: 2 })).toBe('4/? · 2 running');
  });

  it('gives the shares of the bar, never more than the whole, and none without a total', () => {
    expect(mapShares({ total: 50, done: 37, failed: 1, running: 5 })).toEqual({ done: 0.74, failed: 0.02 });
    expect(mapShares({ total: 4, done: 5, failed: 2, running: 0 })).toEqual({ done: 1, failed: 0 });
    expect(mapShares({ total: null, done: 4, failed: 0, running: 2 })).toBeNull();
    expect(mapShares({ total: 0, done: 0, failed: 0, running: 0 })).toBeNull();
  });

  it('is in progress only while the map step waits for its items', () => {
    const map = { total: 3, done: 1, failed: 0, running: 2 };
    expect(isMapInProgress({ status: 'waiting', map })).toBe(true);
    expect(isMapInProgress({ status: 'succeeded', map: { ...map, done: 3, running: 0 } })).toBe(false);
    expect(isMapInProgress({ status: 'failed', map })).toBe(false);
    // a `wait` or `workflow` step waits too, but has no items to follow
    expect(isMapInProgress({ status: 'waiting', map: null })).toBe(false);
  });
});
