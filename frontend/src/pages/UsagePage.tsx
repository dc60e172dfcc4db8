// Usage & cost: what ran and what model calls cost, per workflow, project and user,
// over a period (`GET /api/billing/usage`). Costs are estimates from the server's
// model prices; models without a price count as 0 and are named.
import { useQuery } from '@tanstack/react-query';
import { Link, useSearchParams } from 'react-router';
import { getUsage } from '../api/endpoints';
import type { UsageLine } from '../api/types';
import { formatCount, formatDateTime } from '../lib/format';
import { useTitle } from '../lib/useTitle';
import { EmptyState, ErrorState, Field, Loading, PageHeader, Panel, Table, type Column } from '../ui';

export const PERIODS = [
  { value: '24h', label: 'Last 24 hours' },
  { value: '7d', label: 'Last 7 days' },
  { value: '30d', label: 'Last 30 days' },
  { value: '90d', label: 'Last 90 days' },
];

/** US dollars: cents for ordinary sums, more digits for the tiny costs of a few calls. */
export function formatCost(usd: number): string {
  if (!Number.isFinite(usd)) return '—';
  if (usd === 0) return '$0.00';
  if (Math.abs(usd) < 0.01) return `$${usd.toFixed(4)}`;
  return new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' }).format(usd);
}

const lineKey = (l: UsageLine) => `${l.workflow}|${l.userId ?? '-'}|${l.projectId ?? '-'}`;

export function UsagePage() {
  useTitle('Usage & cost');
  const [search, setSearch] = useSearchParams();
  const param = search.get('since');
  const since = PERIODS.some((p) => p.value === param) ? param! : '30d';
  const usage = useQuery({ queryKey: ['usage', since], queryFn: ({ signal }) => getUsage({ since }, signal) });

  const picker = (
    <Field label="Period">
      {(p) => (
        <select {...p} className="select" value={since} onChange={(e) => setSearch({ since: e.target.value }, { replace: true })}>
          {PERIODS.map((w) => (
            <option key={w.value} value={w.value}>
              {w.label}
            </option>
          ))}
        </select>
      )}
    </Field>
  );

  const columns: Column<UsageLine>[] = [
    {
      key: 'workflow',
      header: 'Workflow',
      render: (l) => (
        <Link className="cell-clip" to={`/workflows/${encodeURIComponent(l.workflow)}`} title={l.workflow}>
          {l.workflow}
        </Link>
      ),
    },
    {
      key: 'project',
      header: 'Project',
      render: (l) =>
        l.projectId !== null ? (
          <Link className="cell-clip" to={`/projects/${encodeURIComponent(String(l.projectId))}`} title={l.project ?? undefined}>
            {l.project ?? `project ${l.projectId}`}
          </Link>
        ) : (
          <span className="muted">none</span>
        ),
    },
    {
      key: 'user',
      header: 'User',
      render: (l) =>
        l.user ? (
          <span className="cell-clip" title={l.user}>
            {l.user}
          </span>
        ) : (
          <span className="muted">{l.userId !== null ? `user ${l.userId}` : 'a token or schedule'}</span>
        ),
    },
    { key: 'runs', header: 'Runs', className: 'num', render: (l) => formatCount(l.runs) },
    { key: 'steps', header: 'Step attempts', className: 'num', render: (l) => formatCount(l.steps) },
    { key: 'prompt', header: 'Prompt tokens', className: 'num', render: (l) => formatCount(l.promptTokens) },
    { key: 'completion', header: 'Completion tokens', className: 'num', render: (l) => formatCount(l.completionTokens) },
    {
      key: 'cost',
      header: 'Estimated cost',
      className: 'num',
      render: (l) => (
        <>
          {formatCost(l.estimatedCost)}
          {l.unpricedModels.length > 0 && (
            <span className="muted" title={`No price for ${l.unpricedModels.join(', ')}`}>
              {' '}
              + unpriced
            </span>
          )}
        </>
      ),
    },
  ];

  return (
    <>
      <PageHeader title="Usage & cost" actions={picker}>
        <p className="muted" style={{ margin: 0 }}>
          Runs, step attempts and model tokens per workflow, project and user. Costs are estimates from the model prices the
          server was given (<code>CAIRN_LLM_PRICES</code>).
        </p>
      </PageHeader>
      {usage.isPending ? (
        <Loading label="Loading usage…" />
      ) : usage.isError ? (
        <ErrorState error={usage.error} onRetry={() => void usage.refetch()} />
      ) : (
        <div className="stack">
          <section aria-label="Totals" className="grid grid--tiles">
            <div className="stat">
              <span className="stat__value">{formatCost(usage.data.totals.estimatedCost)}</span>
              <span className="stat__label">Estimated cost</span>
            </div>
            <div className="stat">
              <span className="stat__value">{formatCount(usage.data.totals.runs)}</span>
              <span className="stat__label">Runs</span>
            </div>
            <div className="stat">
              <span className="stat__value">{formatCount(usage.data.totals.steps)}</span>
              <span className="stat__label">Step attempts</span>
            </div>
            <div className="stat">
              <span className="stat__value">
                {formatCount(usage.data.totals.promptTokens + usage.data.totals.completionTokens)}
              </span>
              <span className="stat__label">Model tokens</span>
            </div>
          </section>
          {usage.data.totals.unpricedModels.length > 0 && (
            <div className="callout tone-warning">
              No price for {usage.data.totals.unpricedModels.join(', ')}: their calls count as $0 here. Set{' '}
              <code>CAIRN_LLM_PRICES</code> (<code>model=prompt/completion</code> in USD per million tokens) to price them.
            </div>
          )}
          <Panel title="By workflow, project and user" flush>
            <Table
              caption={`Usage from ${formatDateTime(usage.data.from)} to ${formatDateTime(usage.data.to)}`}
              captionVisible={false}
              columns={columns}
              rows={[...usage.data.items].sort((a, b) => b.estimatedCost - a.estimatedCost || b.runs - a.runs)}
              rowKey={lineKey}
              empty={<EmptyState title="Nothing ran in this period.">Pick a longer period, or start a run.</EmptyState>}
            />
          </Panel>
          <p className="muted" style={{ margin: 0 }}>
            From {formatDateTime(usage.data.from)} to {formatDateTime(usage.data.to)}.
          </p>
        </div>
      )}
    </>
  );
}
