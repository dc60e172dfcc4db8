import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useMemo, useState } from 'react';
import { Link, useNavigate, useSearchParams } from 'react-router';
import {
  bulkDeadLetters,
  listDeadLetters,
  listWorkflows,
  purgeDeadLetter,
  redriveDeadLetter,
  type DeadLetterBulkVerb,
} from '../api/endpoints';
import type { BulkFilter, DeadLetter } from '../api/types';
import { RequireRole, useCan } from '../auth/auth';
import { BulkActionDialog } from '../components/BulkActionDialog';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { TIME_RANGES } from '../lib/runFilters';
import { useTitle } from '../lib/useTitle';
import {
  Button,
  EmptyState,
  ErrorState,
  Field,
  Loading,
  PageHeader,
  Panel,
  RelativeTime,
  Table,
  useNow,
  useToast,
  type Column,
} from '../ui';

export function DeadLettersPage() {
  useTitle('Dead letters');
  const [search, setSearch] = useSearchParams();
  const workflow = search.get('workflow') ?? '';
  const since = search.get('since') ?? '';
  const setParam = (key: string, value: string) => {
    const next = new URLSearchParams(search);
    if (value) next.set(key, value);
    else next.delete(key);
    setSearch(next, { replace: true });
  };
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const toast = useToast();
  const now = useNow(10_000);
  const canOperate = useCan('operator');
  const [bulk, setBulk] = useState<DeadLetterBulkVerb | null>(null);
  const [purging, setPurging] = useState<DeadLetter | null>(null);

  const workflows = useQuery({ queryKey: ['workflows'], queryFn: ({ signal }) => listWorkflows(signal) });
  const letters = useInfiniteQuery({
    queryKey: ['dead-letters', { workflow, since }],
    queryFn: ({ pageParam, signal }) =>
      listDeadLetters({ workflow: workflow || undefined, since: since || undefined, limit: 50, cursor: pageParam }, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.nextCursor ?? undefined,
    refetchInterval: 15_000,
  });

  const refresh = () => {
    void queryClient.invalidateQueries({ queryKey: ['dead-letters'] });
    void queryClient.invalidateQueries({ queryKey: ['tasks'] });
    void queryClient.invalidateQueries({ queryKey: ['overview'] });
  };
  const redrive = useMutation({
    mutationFn: (d: DeadLetter) => redriveDeadLetter(d.id),
    onSuccess: (res) => {
      toast.notify(
        <>
          Redriven: run <Link to={`/runs/${encodeURIComponent(res.taskId)}`}>{res.taskId}</Link> is {res.status}.
        </>,
      );
      refresh();
    },
    onError: (e) => toast.notify(`Redrive failed: ${(e as Error).message}`, 'danger'),
  });
  const purge = useMutation({
    mutationFn: (d: DeadLetter) => purgeDeadLetter(d.id),
    onSuccess: () => {
      setPurging(null);
      toast.notify('Dead letter purged.');
      refresh();
    },
  });

  const filter: BulkFilter = useMemo(() => {
    const f: BulkFilter = {};
    if (workflow) f.workflow = workflow;
    if (since) f.since = since;
    return f;
  }, [workflow, since]);
  const range = TIME_RANGES.find((r) => r.value === since);
  const scope = `dead letters${workflow ? ` of workflow “${workflow}”` : ''}${since ? ` from the ${range?.label.toLowerCase() ?? `last ${since}`}` : ' from any time'}`;
  const items = letters.data?.pages.flatMap((p) => p.items) ?? [];

  const columns: Column<DeadLetter>[] = [
    {
      key: 'id',
      header: 'Dead letter',
      render: (d) => (
        <Link className="mono" to={`/dead-letters/${encodeURIComponent(String(d.id))}`} aria-label={`Inspect dead letter ${d.id}`}>
          {String(d.id)}
        </Link>
      ),
    },
    {
      key: 'run',
      header: 'Run',
      render: (d) => (
        <Link className="mono" to={`/runs/${encodeURIComponent(d.runId)}`}>
          {d.runId}
        </Link>
      ),
    },
    { key: 'workflow', header: 'Workflow', render: (d) => d.workflow },
    { key: 'step', header: 'Failed step', render: (d) => d.stepId },
    {
      key: 'error',
      header: 'Error',
      render: (d) =>
        d.error ? (
          <span className="error-cell" title={d.error}>
            {d.error}
          </span>
        ) : null,
    },
    { key: 'at', header: 'Parked', render: (d) => <RelativeTime iso={d.createdAt} now={now} /> },
  ];
  if (canOperate) {
    columns.push({
      key: 'actions',
      header: <span className="sr-only">Actions</span>,
      render: (d) => (
        <div className="row" style={{ flexWrap: 'nowrap' }}>
          <Button
            size="small"
            busy={redrive.isPending && redrive.variables?.id === d.id}
            onClick={() => redrive.mutate(d)}
            aria-label={`Redrive dead letter ${d.id}`}
          >
            Redrive
          </Button>
          <Button size="small" variant="ghost" onClick={() => setPurging(d)} aria-label={`Purge dead letter ${d.id}`}>
            Purge
          </Button>
        </div>
      ),
    });
  }

  const workflowNames = workflows.data?.items.map((w) => w.name) ?? [];
  const options = workflow && !workflowNames.includes(workflow) ? [workflow, ...workflowNames] : workflowNames;

  return (
    <>
      <PageHeader
        title="Dead letters"
        actions={
          <RequireRole min="operator">
            <Button onClick={() => setBulk('redrive')} disabled={items.length === 0}>
              Redrive filtered…
            </Button>
            <Button onClick={() => setBulk('purge')} disabled={items.length === 0}>
              Purge filtered…
            </Button>
          </RequireRole>
        }
      >
        <p className="muted" style={{ margin: 0 }}>
          Runs that exhausted their retries or failed fatally. Redrive resumes a run at the step that failed.
        </p>
      </PageHeader>
      <Panel flush>
        <form className="filters" role="search" aria-label="Filter dead letters" onSubmit={(e) => e.preventDefault()}>
          <Field label="Workflow">
            {(p) => (
              <select {...p} className="select" value={workflow} onChange={(e) => setParam('workflow', e.target.value)}>
                <option value="">Any workflow</option>
                {options.map((w) => (
                  <option key={w} value={w}>
                    {w}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Parked">
            {(p) => (
              <select {...p} className="select" value={since} onChange={(e) => setParam('since', e.target.value)}>
                {TIME_RANGES.map((r) => (
                  <option key={r.value} value={r.value}>
                    {r.label}
                  </option>
                ))}
              </select>
            )}
          </Field>
        </form>
        {letters.isPending ? (
          <Loading label="Loading dead letters…" />
        ) : letters.isError ? (
          <ErrorState error={letters.error} onRetry={() => void letters.refetch()} />
        ) : items.length === 0 ? (
          <EmptyState title="No dead letters.">
            {workflow || since ? 'None match these filters.' : 'Every run either succeeded, is still going, or was cancelled.'}
          </EmptyState>
        ) : (
          <>
            <Table caption="Dead letters, newest first" columns={columns} rows={items} rowKey={(d) => String(d.id)} />
            {letters.hasNextPage && (
              <div className="row" style={{ padding: 12 }}>
                <Button onClick={() => void letters.fetchNextPage()} busy={letters.isFetchingNextPage}>
                  Load more
                </Button>
              </div>
            )}
          </>
        )}
      </Panel>

      <ConfirmDialog
        open={purging !== null}
        title="Purge this dead letter?"
        confirmLabel="Purge"
        danger
        busy={purge.isPending}
        error={purge.error}
        onConfirm={() => purging && purge.mutate(purging)}
        onClose={() => {
          purge.reset();
          setPurging(null);
        }}
      >
        <p>
          The record of run <span className="mono">{purging?.runId}</span>'s failure at step <strong>{purging?.stepId}</strong> is
          deleted for good. The run stays dead.
        </p>
      </ConfirmDialog>
      <BulkActionDialog
        open={bulk !== null}
        verb={bulk === 'purge' ? 'Purge' : 'Redrive'}
        noun="dead letters"
        scope={scope}
        danger={bulk === 'purge'}
        perform={(dryRun) => bulkDeadLetters(bulk ?? 'redrive', filter, dryRun)}
        onClose={() => setBulk(null)}
        onDone={(r) => {
          toast.notify(`${bulk === 'purge' ? 'Purged' : 'Redrove'} ${r.processed} of ${r.matched} dead letters.`);
          refresh();
          if (bulk === 'redrive' && r.processed > 0) navigate('/runs?status=queued');
        }}
      />
    </>
  );
}
