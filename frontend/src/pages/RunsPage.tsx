import { useInfiniteQuery, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo, useState, type FormEvent } from 'react';
import { Link, useSearchParams } from 'react-router';
import { ApiError } from '../api/client';
import { bulkTasks, listTasks, listWorkflows, type TaskBulkVerb } from '../api/endpoints';
import { RUN_STATUSES, type TaskSummary } from '../api/types';
import { RequireRole } from '../auth/auth';
import { BulkActionDialog } from '../components/BulkActionDialog';
import { elapsedMs, formatDuration } from '../lib/format';
import {
  bulkBlockedReason,
  bulkFilter,
  describeFilter,
  EMPTY_FILTERS,
  filtersFromSearch,
  filtersToSearch,
  hasFilters,
  taskListParams,
  TIME_RANGES,
  type RunFilters,
} from '../lib/runFilters';
import { statusLabel } from '../lib/status';
import { throttle, useLiveEvents } from '../lib/useLiveEvents';
import { useTitle } from '../lib/useTitle';
import {
  Button,
  EmptyState,
  ErrorState,
  Field,
  LiveIndicator,
  Loading,
  PageHeader,
  Panel,
  RelativeTime,
  StatusPill,
  Table,
  useNow,
  useToast,
  type Column,
} from '../ui';

/** The filter controls; selects apply at once, the text search on Enter or after a pause. */
export function RunFiltersForm({
  filters,
  workflows,
  onChange,
}: {
  filters: RunFilters;
  workflows: string[];
  onChange: (next: RunFilters) => void;
}) {
  const [q, setQ] = useState(filters.q);
  useEffect(() => setQ(filters.q), [filters.q]);
  useEffect(() => {
    if (q.trim() === filters.q) return;
    const t = setTimeout(() => onChange({ ...filters, q: q.trim() }), 400);
    return () => clearTimeout(t);
  }, [q, filters, onChange]);
  const workflowOptions = filters.workflow && !workflows.includes(filters.workflow) ? [filters.workflow, ...workflows] : workflows;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onChange({ ...filters, q: q.trim() });
  };
  return (
    <form className="filters" role="search" aria-label="Filter runs" onSubmit={submit}>
      <Field label="Status">
        {(p) => (
          <select
            {...p}
            className="select"
            value={filters.status}
            onChange={(e) => onChange({ ...filters, status: e.target.value as RunFilters['status'] })}
          >
            <option value="">Any status</option>
            {RUN_STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusLabel(s)}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Workflow">
        {(p) => (
          <select
            {...p}
            className="select"
            value={filters.workflow}
            onChange={(e) => onChange({ ...filters, workflow: e.target.value })}
          >
            <option value="">Any workflow</option>
            {workflowOptions.map((w) => (
              <option key={w} value={w}>
                {w}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Created">
        {(p) => (
          <select {...p} className="select" value={filters.since} onChange={(e) => onChange({ ...filters, since: e.target.value })}>
            {TIME_RANGES.map((r) => (
              <option key={r.value} value={r.value}>
                {r.label}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Search" hint="Run id, workflow or error text">
        {(p) => <input {...p} className="input" type="search" value={q} onChange={(e) => setQ(e.target.value)} />}
      </Field>
      <div className="row">
        <Button type="submit" className="sr-only">
          Apply search
        </Button>
        <Button onClick={() => onChange(EMPTY_FILTERS)} disabled={!hasFilters(filters)}>
          Clear filters
        </Button>
      </div>
    </form>
  );
}

/**
 * Whether `error` is the API refusing the text search itself: a 400 to a list request
 * that carried `q`. Servers whose `GET /api/tasks` predates `q` reject the unknown
 * parameter; the dashboard sends `q` only when the search box has text.
 */
export function isSearchUnsupported(error: unknown, filters: RunFilters): boolean {
  return !!filters.q.trim() && error instanceof ApiError && error.status === 400;
}

export function RunsTable({ runs, now, caption }: { runs: TaskSummary[]; now: number; caption: string }) {
  const columns: Column<TaskSummary>[] = [
    {
      key: 'id',
      header: 'Run',
      render: (r) => (
        <Link className="mono" to={`/runs/${encodeURIComponent(r.id)}`}>
          {r.id}
        </Link>
      ),
    },
    { key: 'workflow', header: 'Workflow', render: (r) => <Link to={`/workflows/${encodeURIComponent(r.workflow)}`}>{r.workflow}</Link> },
    { key: 'status', header: 'Status', render: (r) => <StatusPill status={r.status} /> },
    { key: 'created', header: 'Created', render: (r) => <RelativeTime iso={r.createdAt} now={now} /> },
    {
      key: 'duration',
      header: 'Duration',
      className: 'num',
      render: (r) => (r.startedAt ? formatDuration(elapsedMs(r.startedAt, r.finishedAt, now)) : '—'),
    },
    { key: 'error', header: 'Error', render: (r) => (r.error ? <span className="error-cell" title={r.error}>{r.error}</span> : null) },
  ];
  return <Table caption={caption} columns={columns} rows={runs} rowKey={(r) => r.id} />;
}

export function RunsPage() {
  useTitle('Runs');
  const [search, setSearch] = useSearchParams();
  const filters = useMemo(() => filtersFromSearch(search), [search]);
  const setFilters = useMemo(
    () => (next: RunFilters) => setSearch(filtersToSearch(next), { replace: true }),
    [setSearch],
  );
  const queryClient = useQueryClient();
  const toast = useToast();
  const now = useNow(5000);
  const [bulk, setBulk] = useState<TaskBulkVerb | null>(null);

  const workflows = useQuery({ queryKey: ['workflows'], queryFn: ({ signal }) => listWorkflows(signal) });

  const invalidate = useMemo(
    () => throttle(() => void queryClient.invalidateQueries({ queryKey: ['tasks'] }), 1000),
    [queryClient],
  );
  useEffect(() => () => invalidate.cancel(), [invalidate]);
  const live = useLiveEvents({ workflow: filters.workflow || undefined }, () => invalidate.call());

  const runs = useInfiniteQuery({
    queryKey: ['tasks', taskListParams(filters)],
    queryFn: ({ pageParam, signal }) => listTasks(taskListParams(filters, pageParam), signal),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.nextCursor ?? undefined,
    refetchInterval: live === 'open' ? false : 5000,
  });

  const items = runs.data?.pages.flatMap((p) => p.items) ?? [];
  const blocked = bulkBlockedReason(filters);
  const scope = describeFilter(filters);

  return (
    <>
      <PageHeader
        title="Runs"
        actions={
          <>
            <LiveIndicator state={live} />
            <RequireRole min="operator">
              <Button onClick={() => setBulk('retry')} disabled={!!blocked} title={blocked ?? undefined}>
                Retry filtered…
              </Button>
              <Button onClick={() => setBulk('cancel')} disabled={!!blocked} title={blocked ?? undefined}>
                Cancel filtered…
              </Button>
            </RequireRole>
          </>
        }
      />
      <Panel flush>
        <RunFiltersForm
          filters={filters}
          workflows={workflows.data?.items.map((w) => w.name) ?? []}
          onChange={setFilters}
        />
        <RequireRole min="operator">
          {blocked && (
            <p className="muted" style={{ padding: '8px 16px', margin: 0 }}>
              {blocked}
            </p>
          )}
        </RequireRole>
        {runs.isPending ? (
          <Loading label="Loading runs…" />
        ) : runs.isError && isSearchUnsupported(runs.error, filters) ? (
          <EmptyState
            title="This Cairn server cannot search runs by text."
            action={<Button onClick={() => setFilters({ ...filters, q: '' })}>Clear search</Button>}
          >
            Its run list does not take a text search yet ({runs.error.message}). Clear the search to see the runs the other
            filters select.
          </EmptyState>
        ) : runs.isError ? (
          <ErrorState error={runs.error} onRetry={() => void runs.refetch()} />
        ) : items.length === 0 ? (
          <EmptyState title={hasFilters(filters) ? 'No runs match these filters.' : 'No runs yet.'}>
            {hasFilters(filters) ? 'Try a wider time range or clear the filters.' : 'Runs appear here as soon as they are submitted.'}
          </EmptyState>
        ) : (
          <>
            <RunsTable runs={items} now={now} caption={`Runs: ${scope}`} />
            <div className="row" style={{ padding: 12 }}>
              <span className="muted" aria-live="polite">
                Showing {items.length} run{items.length === 1 ? '' : 's'}
              </span>
              {runs.hasNextPage && (
                <Button onClick={() => void runs.fetchNextPage()} busy={runs.isFetchingNextPage}>
                  Load more
                </Button>
              )}
            </div>
          </>
        )}
      </Panel>
      <BulkActionDialog
        open={bulk !== null}
        verb={bulk === 'cancel' ? 'Cancel' : 'Retry'}
        noun="runs"
        scope={scope}
        danger={bulk === 'cancel'}
        perform={(dryRun) => bulkTasks(bulk ?? 'retry', bulkFilter(filters), dryRun)}
        onClose={() => setBulk(null)}
        onDone={(r) => {
          toast.notify(`${bulk === 'cancel' ? 'Cancelled' : 'Retried'} ${r.processed} of ${r.matched} runs.`);
          void queryClient.invalidateQueries({ queryKey: ['tasks'] });
        }}
      />
    </>
  );
}
