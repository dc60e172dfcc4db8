import { useQuery } from '@tanstack/react-query';
import { Link } from 'react-router';
import { listWorkflows } from '../api/endpoints';
import type { WorkflowSummary } from '../api/types';
import { useTitle } from '../lib/useTitle';
import { EmptyState, ErrorState, Loading, PageHeader, Panel, Table } from '../ui';

export function WorkflowsPage() {
  useTitle('Workflows');
  const workflows = useQuery({ queryKey: ['workflows'], queryFn: ({ signal }) => listWorkflows(signal) });
  return (
    <>
      <PageHeader title="Workflows">
        <p className="muted" style={{ margin: 0 }}>
          The definitions loaded from <code>workflows/*.toml</code>. Each run keeps the definition it started with.
        </p>
      </PageHeader>
      <Panel flush>
        {workflows.isPending ? (
          <Loading label="Loading workflows…" />
        ) : workflows.isError ? (
          <ErrorState error={workflows.error} onRetry={() => void workflows.refetch()} />
        ) : (
          <Table<WorkflowSummary>
            caption="Workflows"
            rows={workflows.data.items}
            rowKey={(w) => w.name}
            empty={<EmptyState title="No workflows are loaded.">Add a TOML file to the workflows directory and restart the API.</EmptyState>}
            columns={[
              { key: 'name', header: 'Name', render: (w) => <Link to={`/workflows/${encodeURIComponent(w.name)}`}>{w.name}</Link> },
              { key: 'description', header: 'Description', render: (w) => w.description ?? <span className="muted">—</span> },
              { key: 'steps', header: 'Steps', className: 'num', render: (w) => w.steps },
              { key: 'hash', header: 'Version', render: (w) => <code title={w.hash}>{w.hash.slice(0, 12)}</code> },
              {
                key: 'runs',
                header: <span className="sr-only">Runs</span>,
                render: (w) => (
                  <Link to={`/runs?workflow=${encodeURIComponent(w.name)}`} aria-label={`Runs of ${w.name}`}>
                    Runs
                  </Link>
                ),
              },
            ]}
          />
        )}
      </Panel>
    </>
  );
}
