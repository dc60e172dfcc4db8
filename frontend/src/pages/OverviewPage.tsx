import { useQuery } from '@tanstack/react-query';
import { Link, useSearchParams } from 'react-router';
import { getOverview } from '../api/endpoints';
import { RUN_STATUSES, statusCounts, type QueueDepth, type ThroughputPoint } from '../api/types';
import { ThroughputChart } from '../components/ThroughputChart';
import { fillBuckets, windowMs } from '../lib/chart';
import { formatCount, formatDuration } from '../lib/format';
import { statusLabel, statusTone } from '../lib/status';
import { useTitle } from '../lib/useTitle';
import { EmptyState, ErrorState, Field, Loading, PageHeader, Panel, Table } from '../ui';

const WINDOWS = [
  { value: '1h', label: 'Last hour' },
  { value: '24h', label: 'Last 24 hours' },
  { value: '7d', label: 'Last 7 days' },
];

const emptyBucket = (at: string): ThroughputPoint => ({ at, succeeded: 0, dead: 0 });

export function OverviewPage() {
  useTitle('Overview');
  const [search, setSearch] = useSearchParams();
  const windowParam = search.get('window');
  const window = WINDOWS.some((w) => w.value === windowParam) ? windowParam! : '24h';
  const overview = useQuery({
    queryKey: ['overview', window],
    queryFn: ({ signal }) => getOverview(window, signal),
    refetchInterval: 10_000,
  });

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
            <ThroughputChart points={fillBuckets(overview.data.throughput ?? [], overview.data.bucketSeconds, windowMs(window), Date.now(), emptyBucket)} />
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
