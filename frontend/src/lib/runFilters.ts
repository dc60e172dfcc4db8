// The Runs page's filters, kept in the URL so a filtered view can be shared and reloaded,
// and translated to the two API shapes that take them: the list query string
// (`GET /api/tasks?status=&workflow=&since=&q=`) and the bulk filter body
// (`{ status?, workflow?, since? }`, which has no text search).
import type { TaskListParams } from '../api/endpoints';
import { RUN_STATUSES, type BulkFilter, type RunStatus } from '../api/types';

export interface RunFilters {
  status: RunStatus | '';
  workflow: string;
  /** A duration such as `1h` ("created within the last hour"); '' for any time. */
  since: string;
  q: string;
}

export const EMPTY_FILTERS: RunFilters = { status: '', workflow: '', since: '', q: '' };

export const TIME_RANGES: { value: string; label: string }[] = [
  { value: '', label: 'Any time' },
  { value: '15m', label: 'Last 15 minutes' },
  { value: '1h', label: 'Last hour' },
  { value: '6h', label: 'Last 6 hours' },
  { value: '24h', label: 'Last 24 hours' },
  { value: '7d', label: 'Last 7 days' },
  { value: '30d', label: 'Last 30 days' },
];

const DURATION = /^\d{1,6}(ms|s|m|h|d|w)$/;

export function isRunStatus(value: string | null | undefined): value is RunStatus {
  return !!value && (RUN_STATUSES as readonly string[]).includes(value);
}

/** Reads filters from a URL's search params, dropping values the API would reject. */
export function filtersFromSearch(search: URLSearchParams): RunFilters {
  const status = search.get('status');
  const since = search.get('since')?.trim() ?? '';
  return {
    status: isRunStatus(status) ? status : '',
    workflow: search.get('workflow')?.trim() ?? '',
    since: DURATION.test(since) ? since : '',
    q: search.get('q')?.trim() ?? '',
  };
}

/** The URL search params for `filters`, with empty values left out. */
export function filtersToSearch(filters: RunFilters): URLSearchParams {
  const search = new URLSearchParams();
  if (filters.status) search.set('status', filters.status);
  if (filters.workflow.trim()) search.set('workflow', filters.workflow.trim());
  if (filters.since) search.set('since', filters.since);
  if (filters.q.trim()) search.set('q', filters.q.trim());
  return search;
}

/** Parameters for `GET /api/tasks`. */
export function taskListParams(filters: RunFilters, cursor?: string | null, limit = 50): TaskListParams {
  const params: TaskListParams = { limit };
  if (filters.status) params.status = filters.status;
  if (filters.workflow.trim()) params.workflow = filters.workflow.trim();
  if (filters.since) params.since = filters.since;
  if (filters.q.trim()) params.q = filters.q.trim();
  if (cursor) params.cursor = cursor;
  return params;
}

/** The body filter of `POST /api/tasks/bulk/*`: everything but the text search. */
export function bulkFilter(filters: RunFilters): BulkFilter {
  const f: BulkFilter = {};
  if (filters.status) f.status = filters.status;
  if (filters.workflow.trim()) f.workflow = filters.workflow.trim();
  if (filters.since) f.since = filters.since;
  return f;
}

/** Bulk verbs act on the filter the API can express; a text search cannot be sent. */
export function bulkBlockedReason(filters: RunFilters): string | null {
  if (filters.q.trim()) return 'Bulk actions do not apply a text search. Clear the search to act on the filtered runs.';
  return null;
}

export function hasFilters(filters: RunFilters): boolean {
  return !!(filters.status || filters.workflow.trim() || filters.since || filters.q.trim());
}

/** A sentence naming the set a bulk action acts on, e.g. "dead runs of hello from the last hour". */
export function describeFilter(filters: RunFilters): string {
  const parts: string[] = [];
  parts.push(filters.status ? `${filters.status} runs` : 'runs of any status');
  if (filters.workflow.trim()) parts.push(`of workflow “${filters.workflow.trim()}”`);
  if (filters.since) {
    const range = TIME_RANGES.find((r) => r.value === filters.since);
    parts.push(range ? `created in the ${range.label.toLowerCase()}` : `created in the last ${filters.since}`);
  } else {
    parts.push('created at any time');
  }
  return parts.join(' ');
}
