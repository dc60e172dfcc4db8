import { describe, expect, it } from 'vitest';
import { niceMax, stackedBars, ticks } from './chart';
import { statusCounts } from '../api/types';
import { attemptDuration } from '../pages/DeadLetterPage';
import { elapsedMs, formatDuration, formatRelative } from './format';

describe('formatting', () => {
  it('formats durations at a readable precision', () => {
    expect(formatDuration(null)).toBe('—');
    expect(formatDuration(850)).toBe('850 ms');
    expect(formatDuration(1234)).toBe('1.2 s');
    expect(formatDuration(42_000)).toBe('42 s');
    expect(formatDuration(184_000)).toBe('3m 4s');
    expect(formatDuration(2 * 3_600_000 + 5 * 60_000)).toBe('2h 5m');
    expect(formatDuration(3 * 86_400_000 + 4 * 3_600_000)).toBe('3d 4h');
  });

  it('formats times relative to now, past and future', () => {
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(formatRelative('2026-01-01T11:59:59.500Z', now)).toBe('just now');
    expect(formatRelative('2026-01-01T11:59:30Z', now)).toBe('30s ago');
    expect(formatRelative('2026-01-01T11:57:00Z', now)).toBe('3m ago');
    expect(formatRelative('2026-01-01T14:00:00Z', now)).toBe('in 2h');
    expect(formatRelative(null, now)).toBe('—');
  });

  it('measures elapsed time, up to now for unfinished work', () => {
    expect(elapsedMs('2026-01-01T00:00:00Z', '2026-01-01T00:00:02Z')).toBe(2000);
    expect(elapsedMs('2026-01-01T00:00:00Z', null, Date.parse('2026-01-01T00:01:00Z'))).toBe(60_000);
    expect(elapsedMs(null, null)).toBeNull();
  });
});

describe('chart numbers', () => {
  it('rounds the axis maximum up to a nice number', () => {
    expect(niceMax(0)).toBe(1);
    expect(niceMax(7)).toBe(10);
    expect(niceMax(13)).toBe(20);
    expect(niceMax(23)).toBe(25);
    expect(niceMax(420)).toBe(500);
    expect(ticks(20)).toEqual([0, 4, 8, 12, 16, 20]);
    expect(ticks(50)).toEqual([0, 10, 20, 30, 40, 50]);
    expect(ticks(1)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(ticks(20, 4)).toEqual([0, 5, 10, 15, 20]);
  });

  it('stacks bars bottom-up inside the plot box', () => {
    const bars = stackedBars(
      [
        { ok: 5, bad: 5 },
        { ok: 0, bad: 0 },
      ],
      [
        { key: 'ok', value: (v) => v.ok },
        { key: 'bad', value: (v) => v.bad },
      ],
      { x: 0, y: 0, width: 100, height: 100 },
      10,
      0,
    );
    expect(bars).toHaveLength(2);
    expect(bars[0]!.segments).toEqual([
      { key: 'ok', y: 50, height: 50, value: 5 },
      { key: 'bad', y: 0, height: 50, value: 5 },
    ]);
    expect(bars[1]!.x).toBe(50);
    expect(bars[1]!.segments.every((s) => s.height === 0)).toBe(true);
  });
});

describe('API shape adapters', () => {
  it('reads run counts from a map or a list of { status, count }', () => {
    expect(statusCounts({ dead: 2 })).toEqual({ dead: 2 });
    expect(statusCounts([{ status: 'dead', count: 2 }, { status: 'queued', count: 1 }])).toEqual({ dead: 2, queued: 1 });
    expect(statusCounts(undefined)).toEqual({});
  });

  it('takes an attempt duration as recorded or from its start and finish', () => {
    expect(attemptDuration({ durationMs: 5 })).toBe(5);
    expect(attemptDuration({ startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:00:01.5Z' })).toBe(1500);
    expect(attemptDuration({ startedAt: '2026-01-01T00:00:00Z', finishedAt: null })).toBeNull();
  });
});
