import { useQuery } from '@tanstack/react-query';
import { Link, useParams } from 'react-router';
import { getWorkflow } from '../api/endpoints';
import type { WorkflowStepDef } from '../api/types';
import { DagView } from '../components/DagView';
import { formatDuration, formatJson } from '../lib/format';
import { useTitle } from '../lib/useTitle';
import { EmptyState, ErrorState, JsonView, Loading, PageHeader, Panel, Table } from '../ui';

const COMMON = new Set(['id', 'kind', 'needs', 'condition', 'timeoutMs', 'retry']);

/** A step's kind-specific settings (query, url, duration…), without the common ones. */
export function stepSettings(step: WorkflowStepDef): Record<string, unknown> {
  return Object.fromEntries(Object.entries(step).filter(([k]) => !COMMON.has(k)));
}

export function WorkflowPage() {
  const { name = '' } = useParams();
  useTitle(`Workflow ${name}`);
  const wf = useQuery({ queryKey: ['workflow', name], queryFn: ({ signal }) => getWorkflow(name, signal) });
  const breadcrumb = <Link to="/workflows">Workflows</Link>;
  if (wf.isPending) return <Loading label="Loading workflow…" />;
  if (wf.isError)
    return (
      <>
        <PageHeader title={name} breadcrumb={breadcrumb} />
        <ErrorState error={wf.error} onRetry={() => void wf.refetch()} />
      </>
    );
  const { definition, hash, source } = wf.data;
  const steps = definition?.steps ?? [];
  return (
    <>
      <PageHeader
        title={wf.data.name}
        breadcrumb={breadcrumb}
        actions={<Link to={`/runs?workflow=${encodeURIComponent(wf.data.name)}`}>See its runs</Link>}
      >
        {definition?.description && <p style={{ margin: 0 }}>{definition.description}</p>}
        <span className="muted">
          Version <code title={hash}>{hash.slice(0, 12)}</code>
        </span>
      </PageHeader>
      <div className="stack">
        <Panel title="Steps">
          <DagView steps={steps.map((s) => ({ id: s.id, needs: s.needs, kind: s.kind }))} label={`Steps of workflow ${wf.data.name}`} />
        </Panel>
        <Panel title="Step definitions" flush>
          <Table<WorkflowStepDef>
            caption={`Step definitions of ${wf.data.name}`}
            rows={steps}
            rowKey={(s) => s.id}
            empty={<EmptyState title="No steps." />}
            columns={[
              { key: 'id', header: 'Step', render: (s) => <strong>{s.id}</strong> },
              { key: 'kind', header: 'Kind', render: (s) => s.kind },
              { key: 'needs', header: 'Needs', render: (s) => (s.needs?.length ? s.needs.join(', ') : '—') },
              { key: 'if', header: 'Runs if', render: (s) => (s.condition ? <code>{s.condition}</code> : '—') },
              { key: 'timeout', header: 'Timeout', className: 'num', render: (s) => formatDuration(s.timeoutMs ?? null) },
              {
                key: 'retry',
                header: 'Retry',
                render: (s) =>
                  s.retry
                    ? `${s.retry.maxAttempts} attempts, ${formatDuration(s.retry.initialDelayMs)} → ${formatDuration(s.retry.maxDelayMs)}`
                    : '—',
              },
              {
                key: 'settings',
                header: 'Settings',
                render: (s) => (
                  <details>
                    <summary>Show</summary>
                    <pre className="code code--wrap">{formatJson(stepSettings(s))}</pre>
                  </details>
                ),
              },
            ]}
          />
        </Panel>
        <div className="grid grid--2">
          <Panel title="Input" flush>
            <Table
              caption="Input fields"
              rows={definition?.input ?? []}
              rowKey={(f) => f.name}
              empty={<EmptyState title="This workflow takes no input." />}
              columns={[
                { key: 'name', header: 'Field', render: (f) => <code>{f.name}</code> },
                { key: 'type', header: 'Type', render: (f) => f.type },
                { key: 'default', header: 'Default', render: (f) => (f.default === undefined ? '—' : <code>{JSON.stringify(f.default)}</code>) },
                { key: 'desc', header: 'Description', render: (f) => f.description ?? (f.enum ? `one of ${f.enum.map((e) => JSON.stringify(e)).join(', ')}` : '—') },
              ]}
            />
          </Panel>
          <Panel title="Output">
            <JsonView value={definition?.output ?? 'the outputs of the steps nothing depends on'} label="Output template" wrap />
          </Panel>
        </div>
        <Panel title="Source">
          <pre className="code" aria-label={`Source of ${wf.data.name}`} tabIndex={0} style={{ maxHeight: 480 }}>
            {source}
          </pre>
        </Panel>
      </div>
    </>
  );
}
