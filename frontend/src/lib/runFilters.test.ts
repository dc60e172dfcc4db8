import { describe, expect, it } from 'vitest';
import { queryString } from '../api/client';
import {
  bulkBlockedReason,
  bulkFilter,
  describeFilter,
  EMPTY_FILTERS,
  filtersFromSearch,
  filtersToSearch,
  hasFilters,
  taskListParams,
} from './runFilters';

describe('run filters', () => {
  it('turn into the exact GET /api/tasks query string', () => {
    const filters = filtersFromSearch(new URLSearchParams('status=dead&workflow=hello&since=1h&q=timeout'));
    expect(filters).toEqual({ status: 'dead', workflow: 'hello', since: '1h', q: 'timeout' });
    expect(queryString({ ...taskListParams(filters) })).toBe('?limit=50&status=dead&workflow=hello&since=1h&q=timeout');
    expect(queryString({ ...taskListParams(filters, 'c_123', 20) })).toBe(
      '?limit=20&status=dead&workflow=hello&since=1h&q=timeout&cursor=c_123',
    );
  });

  it('leave empty filters out of the query', () => {
    expect(queryString({ ...taskListParams(EMPTY_FILTERS) })).toBe('?limit=50');
    expect(hasFilters(EMPTY_FILTERS)).toBe(false);
  });

  it('drop values the API would reject instead of sending them', () => {
    const f = filtersFromSearch(new URLSearchParams('status=exploded&since=yesterday&workflow=%20x%20'));
    expect(f).toEqual({ status: '', workflow: 'x', since: '', q: '' });
  });

  it('round-trip through the URL', () => {
    const f = { status: 'running' as const, workflow: 'run_report', since: '7d', q: 'a b&c' };
    const search = filtersToSearch(f);
    expect(search.toString()).toBe('status=running&workflow=run_report&since=7d&q=a+b%26c');
    expect(filtersFromSearch(new URLSearchParams(search.toString()))).toEqual(f);
  });

  it('become the bulk filter without the text search, and say so', () => {
    const f = { status: 'dead' as const, workflow: 'hello', since: '24h', q: '' };
    expect(bulkFilter(f)).toEqual({ status: 'dead', workflow: 'hello', since: '24h' });
    expect(bulkBlockedReason(f)).toBeNull();
    expect(bulkFilter({ ...f, q: 'boom' })).not.toHaveProperty('q');
    expect(bulkBlockedReason({ ...f, q: 'boom' })).toMatch(/text search/);
    expect(bulkFilter(EMPTY_FILTERS)).toEqual({});
  });

  it('describe the set a bulk action acts on', () => {
    expect(describeFilter({ status: 'dead', workflow: 'hello', since: '1h', q: '' })).toBe(
      'dead runs of workflow “hello” created in the last hour',
    );
    expect(describeFilter(EMPTY_FILTERS)).toBe('runs of any status created at any time');
  });
});
