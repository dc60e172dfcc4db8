import { useQuery } from '@tanstack/react-query';
import { Link } from 'react-router';
import { listWorkers } from '../api/endpoints';
import type { StuckRun, Worker } from '../api/types';
import { formatDuration } from '../lib/format';
import { useTitle } from '../lib/useTitle';
import { Badge, EmptyState, ErrorState, Loading, PageHeader, Panel, RelativeTime, Table, useNow } from '../ui';

/** A worker whose last heartbeat is older than this is shown as late. */
export const HEARTBEAT_LATE_MS = 30_000;

export function WorkersPage() {
  useTitle('Workers');
  const now = useNow(5000);
  const workers = useQuery({ queryKey: ['workers'], queryFn: ({ signal }) => listWorkers(signal), refetchInterval: 5000 });
  return (
    <>
      <PageHeader title="Workers">
        <p className="muted" style={{ margin: 0 }}>
          Refreshed every 5 seconds.
        </p>
      </PageHeader>
      {workers.isPending ? (
        <Loading label="Loading workers…" />
      ) : workers.isError ? (
        <ErrorState error={workers.error} onRetry={() => void workers.refetch()} />
      ) : (
        <div className="stack">
          <Panel title={`Live workers (${workers.data.items.length})`} flush>
            <Table<Worker>
              caption="Live workers"
              rows={workers.data.items}
              rowKey={(w) => w.id}
              empty={<EmptyState title="No workers are running.">Start one with <code>cairn worker</code>; queued runs wait until then.</EmptyState>}
              columns={[
                { key: 'id', header: 'Worker', render: (w) => <span className="mono">{w.id}</span> },
                { key: 'host', header: 'Host', render: (w) => `${w.hostname} (pid ${w.pid})` },
                { key: 'version', header: 'Version', render: (w) => w.version },
                {
                  key: 'hb',
                  header: 'Heartbeat',
                  render: (w) =>
                    w.heartbeatAgeMs > HEARTBEAT_LATE_MS ? (
                      <Badge tone="warning">late: {formatDuration(w.heartbeatAgeMs)} ago</Badge>
                    ) : (
                      <span>{formatDuration(w.heartbeatAgeMs)} ago</span>
                    ),
                },
                { key: 'inflight', header: 'In flight', className: 'num', render: (w) => `${w.inFlight} / ${w.concurrency}` },
                { key: 'started', header: 'Started', render: (w) => <RelativeTime iso={w.startedAt} now={now} /> },
              ]}
            />
          </Panel>
          <Panel title={`Stuck runs (${workers.data.stuck.length})`} flush>
            <Table<StuckRun>
              caption="Runs whose lease expired without a worker finishing them"
              rows={workers.data.stuck}
              rowKey={(s) => s.runId}
              empty={<EmptyState title="No stuck runs.">Every running run is held by a live worker.</EmptyState>}
              columns={[
                {
                  key: 'run',
                  header: 'Run',
                  render: (s) => (
                    <Link className="mono" to={`/runs/${encodeURIComponent(s.runId)}`}>
                      {s.runId}
                    </Link>
                  ),
                },
                { key: 'workflow', header: 'Workflow', render: (s) => s.workflow },
                { key: 'worker', header: 'Last worker', render: (s) => <span className="mono">{s.worker ?? '—'}</span> },
                { key: 'ago', header: 'Lease expired', render: (s) => `${formatDuration(s.leaseExpiredAgoMs)} ago` },
              ]}
            />
          </Panel>
        </div>
      )}
    </>
  );
}
