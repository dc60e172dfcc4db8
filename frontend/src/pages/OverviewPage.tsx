import { useQuery } from '@tanstack/react-query';
import { Link, useSearchParams } from 'react-router';
import { getOverview, listNotifications } from '../api/endpoints';
import { RUN_STATUSES, statusCounts, type Overview, type QueueDepth, type ThroughputPoint } from '../api/types';
import { ThroughputChart } from '../components/ThroughputChart';
import { fillBuckets, trimLeading, windowMs } from '../lib/chart';
import { formatCount, formatDuration } from '../lib/format';
import { statusLabel, statusTone } from '../lib/status';
import { useTitle } from '../lib/useTitle';
import { EmptyState, ErrorState, Field, Loading, PageHeader, Panel, RelativeTime, Table } from '../ui';

const WINDOWS = [
  { value: '1h', label: 'Last hour' },
  { value: '24h', label: 'Last 24 hours' },
  { value: '7d', label: 'Last 7 days' },
];

const emptyBucket = (at: string): ThroughputPoint => ({ at, succeeded: 0, dead: 0 });

/** Whether every finished run in `points` lies within the last `ms` (and there is one). */
export function finishedWithin(points: ThroughputPoint[], ms: number, now: number): boolean {
  const busy = points.filter((p) => p.succeeded + p.dead > 0);
  return busy.length > 0 && busy.every((p) => now - Date.parse(p.at) <= ms);
}

/** A new install: nothing has run, nothing is queued. */
function noRunsYet(o: Overview): boolean {
  const counts = statusCounts(o.runsByStatus);
  return Object.values(counts).every((n) => !n) && !(o.throughput ?? []).some((p) => p.succeeded + p.dead > 0);
}

function Chart({ overview, window, auto }: { overview: Overview; window: string; auto: boolean }) {
  const filled = fillBuckets(overview.throughput ?? [], overview.bucketSeconds, windowMs(window), Date.now(), emptyBucket);
  const { points, trimmed } = trimLeading(filled, (p) => p.succeeded + p.dead > 0);
  const label = WINDOWS.find((w) => w.value === window)?.label.toLowerCase() ?? window;
  return (
    <div className="stack">
      <ThroughputChart points={points} />
      {(trimmed || auto) && points.some((p) => p.succeeded + p.dead > 0) && (
        <p className="muted" style={{ margin: 0 }}>
          {auto && window === '1h' && trimmed
            ? 'Every run of the last 24 hours finished in the last few minutes: the chart starts just before the first one.'
            : auto && window === '1h'
              ? 'Every run of the last 24 hours finished within the last hour, so this shows the last hour.'
              : `No run finished earlier in the ${label}; the chart starts just before the first one.`}
        </p>
      )}
    </div>
  );
}

/**
 * A failed alert is a dead run (or a failed tick) nobody was told about, and nothing else
 * on this page would show it. The newest one says enough: that there is one, and how recent.
 */
function FailedAlertsNotice() {
  const failed = useQuery({
    queryKey: ['notifications', 'latest-failed'],
    queryFn: ({ signal }) => listNotifications({ state: 'failed', limit: 1 }, signal),
    refetchInterval: 60_000,
  });
  const latest = failed.data?.items[0];
  if (!latest) return null;
  return (
    <p className="callout tone-warning" style={{ margin: 0 }}>
      At least one alert could not be delivered to its webhook (the latest gave up{' '}
      <RelativeTime iso={latest.finishedAt ?? latest.createdAt} />).{' '}
      <Link to="/notifications?state=failed">See failed notifications</Link>
    </p>
  );
}

export function OverviewPage() {
  useTitle('Overview');
  const [search, setSearch] = useSearchParams();
  const windowParam = search.get('window');
  const chosen = WINDOWS.some((w) => w.value === windowParam) ? windowParam : null;
  const day = useQuery({
    queryKey: ['overview', '24h'],
    queryFn: ({ signal }) => getOverview('24h', signal),
    refetchInterval: 10_000,
    enabled: !chosen || chosen === '24h',
  });
  // Unless a window was chosen: when everything of the last day finished within the last
  // hour (a young install), the last hour shows it at a readable scale.
  const young = !chosen && day.data ? finishedWithin(day.data.throughput ?? [], 3_600_000, Date.now()) : false;
  const window = chosen ?? (young ? '1h' : '24h');
  const narrow = useQuery({
    queryKey: ['overview', window],
    queryFn: ({ signal }) => getOverview(window, signal),
    refetchInterval: 10_000,
    enabled: window !== '24h',
  });
  const overview = window === '24h' ? day : narrow;

  const picker = (
    <Field label="Window">
      {(p) => (
        <select {...p} className="select" value={window} onChange={(e) => setSearch({ window: e.target.value }, { replace: true })}>
          {WINDOWS.map((w) => (
            <option key={w.value} value={w.value}>
              {w.label}
            </option>
          ))}
        </select>
      )}
    </Field>
  );

  return (
    <>
      <PageHeader title="Overview" actions={picker} />
      {overview.isPending ? (
        <Loading label="Loading overview…" />
      ) : overview.isError ? (
        <ErrorState error={overview.error} onRetry={() => void overview.refetch()} />
      ) : (
        <div className="stack">
          <FailedAlertsNotice />
          <section aria-label="Totals" className="grid grid--tiles">
            <Link className="stat" to="/dead-letters">
              <span className="stat__value" style={{ color: overview.data.deadLetters ? 'var(--danger)' : undefined }}>
                {formatCount(overview.data.deadLetters)}
              </span>
              <span className="stat__label">Dead letters</span>
            </Link>
            <Link className="stat" to="/workers">
              <span className="stat__value">{formatCount(overview.data.workersAlive)}</span>
              <span className="stat__label">Workers alive</span>
            </Link>
            {RUN_STATUSES.map((s) => (
              <Link key={s} className="stat" to={`/runs?status=${s}&since=${window}`}>
                <span className={`stat__value`} style={{ color: `var(--tone-${statusTone(s)}-fg)` }}>
                  {formatCount(statusCounts(overview.data.runsByStatus)[s] ?? 0)}
                </span>
                <span className="stat__label">{statusLabel(s)} runs</span>
              </Link>
            ))}
          </section>
          <Panel title="Finished runs over time">
            {noRunsYet(overview.data) ? (
              <EmptyState title="No runs yet.">
                Start one from a workflow's page, with <code>ctl submit</code>, or with <code>POST /api/tasks</code>; finished
                runs are charted here. <Link to="/workflows">See the workflows</Link>.
              </EmptyState>
            ) : (
              <Chart overview={overview.data} window={window} auto={!chosen} />
            )}
          </Panel>
          <Panel title="Queues" flush>
            <Table<QueueDepth>
              caption="Queued runs per workflow"
              rows={overview.data.queue ?? []}
              rowKey={(q) => q.workflow}
              empty={<EmptyState title="Nothing is queued.">Every submitted run has been picked up.</EmptyState>}
              columns={[
                {
                  key: 'wf',
                  header: 'Workflow',
                  render: (q) => <Link to={`/runs?workflow=${encodeURIComponent(q.workflow)}&status=queued`}>{q.workflow}</Link>,
                },
                { key: 'depth', header: 'Queued', className: 'num', render: (q) => formatCount(q.depth) },
                { key: 'age', header: 'Oldest waiting', className: 'num', render: (q) => formatDuration(q.oldestQueuedAgeMs) },
              ]}
            />
          </Panel>
        </div>
      )}
    </>
  );
}
