import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { Link, useNavigate, useParams } from 'react-router';
import { getDeadLetter, purgeDeadLetter, redriveDeadLetter } from '../api/endpoints';
import type { Json } from '../api/types';
import { RequireRole } from '../auth/auth';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { elapsedMs, formatDuration } from '../lib/format';
import { useTitle } from '../lib/useTitle';
import { Button, DateTime, ErrorState, InlineError, JsonView, Loading, PageHeader, Panel, StatusPill, Table, useToast } from '../ui';

interface AttemptRow {
  attempt?: number;
  status?: string;
  error?: string | null;
  startedAt?: string;
  finishedAt?: string | null;
  durationMs?: number | null;
  worker?: string | null;
  retryDelayMs?: number | null;
}

/** How long an attempt took: as recorded, or from its start and finish. */
export function attemptDuration(a: AttemptRow): number | null {
  if (typeof a.durationMs === 'number') return a.durationMs;
  return a.startedAt && a.finishedAt ? elapsedMs(a.startedAt, a.finishedAt) : null;
}

/** A dead letter's `attempts` as rows, when it is a list of attempt objects. */
export function attemptRows(attempts: Json | undefined): AttemptRow[] | null {
  if (!Array.isArray(attempts)) return null;
  if (!attempts.every((a) => a !== null && typeof a === 'object' && !Array.isArray(a))) return null;
  return attempts as unknown as AttemptRow[];
}

export function DeadLetterPage() {
  const { id = '' } = useParams();
  useTitle(`Dead letter ${id}`);
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const toast = useToast();
  const [confirmPurge, setConfirmPurge] = useState(false);
  const letter = useQuery({ queryKey: ['dead-letter', id], queryFn: ({ signal }) => getDeadLetter(id, signal) });

  const redrive = useMutation({
    mutationFn: () => redriveDeadLetter(id),
    onSuccess: (res) => {
      toast.notify(`Redriven: run ${res.taskId} is ${res.status}.`);
      void queryClient.invalidateQueries({ queryKey: ['dead-letters'] });
      navigate(`/runs/${encodeURIComponent(res.taskId)}`);
    },
  });
  const purge = useMutation({
    mutationFn: () => purgeDeadLetter(id),
    onSuccess: () => {
      toast.notify('Dead letter purged.');
      void queryClient.invalidateQueries({ queryKey: ['dead-letters'] });
      navigate('/dead-letters');
    },
  });

  const breadcrumb = <Link to="/dead-letters">Dead letters</Link>;
  if (letter.isPending) return <Loading label="Loading dead letter…" />;
  if (letter.isError)
    return (
      <>
        <PageHeader title={`Dead letter ${id}`} breadcrumb={breadcrumb} />
        <ErrorState error={letter.error} onRetry={() => void letter.refetch()} />
      </>
    );
  const d = letter.data;
  const rows = attemptRows(d.attempts);

  return (
    <>
      <PageHeader
        title={`Dead letter ${String(d.id)}`}
        breadcrumb={breadcrumb}
        actions={
          <RequireRole min="operator">
            <Button variant="primary" busy={redrive.isPending} onClick={() => redrive.mutate()}>
              Redrive
            </Button>
            <Button variant="danger" onClick={() => setConfirmPurge(true)}>
              Purge…
            </Button>
          </RequireRole>
        }
      />
      {redrive.isError && <InlineError error={redrive.error} />}
      <div className="stack">
        <Panel title="Failure">
          <div className="stack">
            <dl className="props">
              <dt>Run</dt>
              <dd>
                <Link className="mono" to={`/runs/${encodeURIComponent(d.runId)}`}>
                  {d.runId}
                </Link>
              </dd>
              <dt>Workflow</dt>
              <dd>
                <Link to={`/workflows/${encodeURIComponent(d.workflow)}`}>{d.workflow}</Link>
              </dd>
              <dt>Failed step</dt>
              <dd>{d.stepId}</dd>
              <dt>Parked</dt>
              <dd>
                <DateTime iso={d.createdAt} />
              </dd>
            </dl>
            <div>
              <h3>Error</h3>
              <JsonView value={d.error ?? 'no error text recorded'} label="Error" wrap />
            </div>
          </div>
        </Panel>
        <Panel title="Attempts" flush={!!rows}>
          {rows ? (
            <Table
              caption="Every attempt of the failed step"
              rows={rows}
              rowKey={(a) => String(a.attempt ?? rows.indexOf(a))}
              columns={[
                { key: 'n', header: '#', className: 'num', render: (a) => a.attempt ?? '—' },
                { key: 'status', header: 'Status', render: (a) => (a.status ? <StatusPill status={a.status} /> : '—') },
                { key: 'start', header: 'Started', render: (a) => <DateTime iso={a.startedAt} /> },
                { key: 'dur', header: 'Duration', className: 'num', render: (a) => formatDuration(attemptDuration(a)) },
                { key: 'worker', header: 'Worker', render: (a) => <span className="mono">{a.worker ?? '—'}</span> },
                {
                  key: 'err',
                  header: 'Error',
                  render: (a) => <span style={{ overflowWrap: 'anywhere' }}>{a.error ?? '—'}</span>,
                },
              ]}
            />
          ) : (
            <JsonView value={d.attempts} label="Attempts" />
          )}
        </Panel>
        <Panel title="Input">
          <JsonView value={d.input} label="Run input" />
        </Panel>
      </div>
      <ConfirmDialog
        open={confirmPurge}
        title="Purge this dead letter?"
        confirmLabel="Purge"
        danger
        busy={purge.isPending}
        error={purge.error}
        onConfirm={() => purge.mutate()}
        onClose={() => {
          purge.reset();
          setConfirmPurge(false);
        }}
      >
        <p>The failure record is deleted for good. The run stays dead.</p>
      </ConfirmDialog>
    </>
  );
}
