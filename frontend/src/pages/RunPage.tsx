import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo, useRef, useState } from 'react';
import { Link, useNavigate, useParams } from 'react-router';
import { cancelTask, getTask, retryTask } from '../api/endpoints';
import type { LiveState } from '../api/events';
import type { TaskDetail, TaskStep } from '../api/types';
import { RequireRole } from '../auth/auth';
import { AttemptTimeline } from '../components/AttemptTimeline';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { DagView } from '../components/DagView';
import { EventTimeline } from '../components/EventTimeline';
import { MapItems } from '../components/MapItems';
import { ReplayDialog } from '../components/ReplayDialog';
import { copiedSteps } from '../lib/events';
import { elapsedMs, formatDuration } from '../lib/format';
import { isMapInProgress } from '../lib/mapStep';
import { attemptLabel, isTerminalRun } from '../lib/status';
import { throttle, useLiveEvents } from '../lib/useLiveEvents';
import { useTitle } from '../lib/useTitle';
import {
  Button,
  DateTime,
  ErrorState,
  JsonView,
  LiveIndicator,
  Loading,
  PageHeader,
  Panel,
  RelativeTime,
  StatusPill,
  Table,
  useNow,
  useToast,
} from '../ui';

/** How much of a long run error shows before "Show the whole error". */
const ERROR_PREVIEW = 300;

/** Steps whose wake time is a deadline (a callback, a child run, a map's items), not an alarm. */
const DEADLINE_KINDS = new Set(['wait', 'workflow', 'map']);

/** The label and time of a step's `wakeAt`: when a sleep ends, or when a wait times out. */
export function wakeLabel(step: Pick<TaskStep, 'kind'>): { term: string; verb: string } {
  return DEADLINE_KINDS.has(step.kind ?? '') ? { term: 'Times out', verb: 'times out' } : { term: 'Wakes', verb: 'wakes' };
}

/**
 * Whether a step of a replay was copied from the source run instead of run again: the
 * replay's event names the copied steps; a finished step with no attempt is one too.
 */
export function isCopiedStep(run: Pick<TaskDetail, 'replayOf' | 'events'>, step: TaskStep): boolean {
  if (!run.replayOf) return false;
  if (copiedSteps(run.events).has(step.id)) return true;
  return step.attemptCount === 0 && (step.status === 'succeeded' || step.status === 'skipped');
}

/** The step to show first: the one that failed, else one in progress, else the first. */
export function defaultStep(steps: TaskStep[]): string | null {
  const pick =
    steps.find((s) => s.status === 'failed') ??
    steps.find((s) => s.status === 'retry_scheduled') ??
    steps.find((s) => s.status === 'running' || s.status === 'waiting') ??
    steps[0];
  return pick?.id ?? null;
}

/** How often a map step's progress is reloaded while its items run. */
export const MAP_POLL_MS = 2000;
/** How often the run is reloaded while the live stream is down. */
export const FALLBACK_POLL_MS = 3000;

/**
 * When to reload the run by itself. Live events cover most changes, but a map step's
 * items are child runs: the parent records next to nothing while they run, so its
 * progress is polled, and only then.
 */
export function runRefetchInterval(run: Pick<TaskDetail, 'status' | 'steps'> | undefined, live: LiveState): number | false {
  if (isTerminalRun(run?.status)) return false;
  if (run?.steps.some(isMapInProgress)) return MAP_POLL_MS;
  return live !== 'open' ? FALLBACK_POLL_MS : false;
}

function StepPanel({ run, step, now }: { run: TaskDetail; step: TaskStep; now: number }) {
  const upstream = Object.fromEntries(
    step.needs.map((n) => [n, run.steps.find((s) => s.id === n)?.output ?? null]),
  );
  const copied = isCopiedStep(run, step);
  const source = run.replayOf ? (
    <Link className="mono" to={`/runs/${encodeURIComponent(run.replayOf)}`}>
      {run.replayOf}
    </Link>
  ) : null;
  const wake = wakeLabel(step);
  return (
    <Panel title={`Step ${step.id}`} actions={<StatusPill status={step.status} />}>
      <div className="stack">
        {copied && (
          <p className="callout tone-neutral" style={{ margin: 0 }}>
            Copied from run {source}: this replay did not run it again; its output is the one that run checkpointed.
          </p>
        )}
        <dl className="props">
          <dt>Kind</dt>
          <dd>{step.kind ?? '—'}</dd>
          <dt>Needs</dt>
          <dd>{step.needs.length ? step.needs.join(', ') : 'nothing (a first step)'}</dd>
          {step.childRunId && (
            <>
              <dt>Child run</dt>
              <dd>
                <Link className="mono" to={`/runs/${encodeURIComponent(step.childRunId)}`}>
                  {step.childRunId}
                </Link>
              </dd>
            </>
          )}
          <dt>Attempts</dt>
          <dd>{copied ? <>none in this run (copied from run {source})</> : step.attemptCount}</dd>
          <dt>{copied ? 'Started (source run)' : 'Started'}</dt>
          <dd>
            <DateTime iso={step.startedAt} />
          </dd>
          <dt>{copied ? 'Finished (source run)' : 'Finished'}</dt>
          <dd>
            <DateTime iso={step.finishedAt} />
          </dd>
          <dt>{copied ? 'Took (source run)' : 'Duration'}</dt>
          <dd>{step.startedAt ? formatDuration(elapsedMs(step.startedAt, step.finishedAt, now)) : '—'}</dd>
          {step.nextAttemptAt && (
            <>
              <dt>Next attempt</dt>
              <dd>
                <RelativeTime iso={step.nextAttemptAt} now={now} />
              </dd>
            </>
          )}
          {step.wakeAt && (
            <>
              <dt>{wake.term}</dt>
              <dd>
                <RelativeTime iso={step.wakeAt} now={now} />
              </dd>
            </>
          )}
        </dl>
        {step.error && (
          <div>
            <h3>Error</h3>
            <JsonView value={step.error} label={`Error of step ${step.id}`} wrap />
          </div>
        )}
        {(step.kind === 'map' || step.map) && <MapItems key={step.id} runId={run.id} step={step} />}
        <div>
          <h3>Inputs</h3>
          <p className="muted">The run input, and the outputs of the steps it needs.</p>
          <JsonView
            value={step.needs.length ? { input: run.input, steps: upstream } : { input: run.input }}
            label={`Inputs of step ${step.id}`}
          />
        </div>
        <div>
          <h3>Output</h3>
          <JsonView value={step.output} label={`Output of step ${step.id}`} />
        </div>
        <div>
          <h3>Attempts</h3>
          <Table
            caption={`Attempts of step ${step.id}`}
            rows={step.attempts}
            rowKey={(a) => String(a.attempt)}
            empty={
              <p className="muted">{copied ? <>None: the step was copied from run {source}.</> : 'No attempts yet.'}</p>
            }
            columns={[
              { key: 'n', header: '#', className: 'num', render: (a) => a.attempt },
              { key: 'status', header: 'Status', render: (a) => <StatusPill status={attemptLabel(step, a)} /> },
              { key: 'start', header: 'Started', render: (a) => <DateTime iso={a.startedAt} /> },
              {
                key: 'dur',
                header: 'Duration',
                className: 'num',
                render: (a) =>
                  a.status === 'running' && step.status === 'waiting' && step.wakeAt ? (
                    <>
                      {formatDuration(elapsedMs(a.startedAt, null, now))}{' '}
                      <span className="muted">
                        ({wake.verb} <RelativeTime iso={step.wakeAt} now={now} />)
                      </span>
                    </>
                  ) : (
                    formatDuration(a.durationMs ?? elapsedMs(a.startedAt, a.finishedAt, now))
                  ),
              },
              { key: 'worker', header: 'Worker', render: (a) => <span className="mono">{a.worker ?? '—'}</span> },
              {
                key: 'err',
                header: 'Error',
                render: (a) =>
                  a.error ? (
                    <span className="error-cell" title={a.error}>
                      {a.error}
                    </span>
                  ) : null,
              },
              {
                key: 'delay',
                header: 'Retry after',
                className: 'num',
                render: (a) => (a.retryDelayMs != null ? formatDuration(a.retryDelayMs) : '—'),
              },
            ]}
          />
        </div>
      </div>
    </Panel>
  );
}

/** Keyed by id, so moving to another run (after a replay) starts with fresh state. */
export function RunPage() {
  const { id = '' } = useParams();
  return <RunView key={id} id={id} />;
}

function RunView({ id }: { id: string }) {
  useTitle(`Run ${id}`);
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const toast = useToast();
  const now = useNow(1000);
  const [selected, setSelected] = useState<string | null>(null);
  const [dialog, setDialog] = useState<'replay' | 'cancel' | 'retry' | null>(null);
  // The outcome of the last action, which takes focus so keyboard and screen-reader users land on it.
  const [outcome, setOutcome] = useState<{ text: string; seq: number } | null>(null);
  const outcomeRef = useRef<HTMLParagraphElement>(null);
  useEffect(() => {
    if (outcome) outcomeRef.current?.focus();
  }, [outcome]);

  const invalidate = useMemo(
    () => throttle(() => void queryClient.invalidateQueries({ queryKey: ['task', id] }), 500),
    [queryClient, id],
  );
  useEffect(() => () => invalidate.cancel(), [invalidate]);
  const live = useLiveEvents({ runId: id }, () => invalidate.call(), !!id);

  const run = useQuery({
    queryKey: ['task', id],
    queryFn: ({ signal }) => getTask(id, signal),
    refetchInterval: (q) => runRefetchInterval(q.state.data, live),
  });

  const afterAction = (verb: string) => (res: { taskId: string; status: string }) => {
    const text = `${verb}: run is now ${res.status.replace(/_/g, ' ')}.`;
    toast.notify(text);
    setOutcome((o) => ({ text, seq: (o?.seq ?? 0) + 1 }));
    void queryClient.invalidateQueries({ queryKey: ['task', id] });
    void queryClient.invalidateQueries({ queryKey: ['tasks'] });
  };
  const retry = useMutation({
    mutationFn: () => retryTask(id),
    onSuccess: (res) => {
      setDialog(null);
      afterAction('Retried')(res);
    },
  });
  const cancel = useMutation({
    mutationFn: () => cancelTask(id),
    onSuccess: (res) => {
      setDialog(null);
      afterAction('Cancelled')(res);
    },
  });

  if (run.isPending) return <Loading label="Loading run…" />;
  if (run.isError)
    return (
      <>
        <PageHeader title={`Run ${id}`} breadcrumb={<Link to="/runs">Runs</Link>} />
        <ErrorState error={run.error} onRetry={() => void run.refetch()} />
      </>
    );

  const r = run.data;
  const stepId = selected && r.steps.some((s) => s.id === selected) ? selected : defaultStep(r.steps);
  const step = r.steps.find((s) => s.id === stepId) ?? null;
  const terminal = isTerminalRun(r.status);

  return (
    <>
      <PageHeader
        title={<span className="mono" style={{ fontSize: 20 }}>{r.id}</span>}
        breadcrumb={
          <>
            <Link to="/runs">Runs</Link> / <Link to={`/runs?workflow=${encodeURIComponent(r.workflow)}`}>{r.workflow}</Link>
          </>
        }
        actions={
          <>
            {!terminal && <LiveIndicator state={live} />}
            <RequireRole min="operator">
              <Button
                onClick={() => setDialog('retry')}
                busy={retry.isPending}
                disabled={r.status !== 'dead' && r.status !== 'cancelled'}
                title={r.status === 'dead' || r.status === 'cancelled' ? 'Resume at the failed step' : 'Only dead or cancelled runs can be retried'}
              >
                Retry…
              </Button>
              <Button onClick={() => setDialog('replay')}>Replay…</Button>
              <Button variant="danger" onClick={() => setDialog('cancel')} disabled={terminal}>
                Cancel run
              </Button>
            </RequireRole>
          </>
        }
      >
        <div className="row">
          <StatusPill status={r.status} />
          <span className="muted">
            {r.workflow} · created <RelativeTime iso={r.createdAt} now={now} />
          </span>
        </div>
      </PageHeader>
      <div role="status">
        {outcome && (
          <p ref={outcomeRef} tabIndex={-1} className="callout tone-success" style={{ margin: '0 0 16px' }}>
            {outcome.text}
          </p>
        )}
      </div>

      <div className="stack">
        {r.error && (
          <div className="callout tone-danger" role="note">
            <strong>Error: </strong>
            {r.error.length > ERROR_PREVIEW ? (
              <>
                {r.error.slice(0, ERROR_PREVIEW)}…
                <details>
                  <summary>Show the whole error ({r.error.length.toLocaleString()} characters)</summary>
                  <pre className="code code--wrap">{r.error}</pre>
                </details>
              </>
            ) : (
              r.error
            )}
          </div>
        )}
        {r.deadLetter && (
          <div className="callout tone-danger">
            Parked as a dead letter after step <strong>{r.deadLetter.stepId}</strong> failed.{' '}
            <Link to={`/dead-letters/${encodeURIComponent(String(r.deadLetter.id))}`}>Inspect the dead letter</Link>
          </div>
        )}

        <Panel title="Steps" actions={<span className="muted">Select a step to see its details</span>}>
          <DagView
            steps={r.steps}
            label={`Steps of run ${r.id}, coloured by status`}
            selected={stepId}
            onSelect={setSelected}
          />
        </Panel>

        {step && <StepPanel run={r} step={step} now={now} />}

        <Panel title="Timeline of attempts">
          <AttemptTimeline steps={r.steps} now={now} />
        </Panel>

        <div className="grid grid--2">
          <Panel title="Run">
            <dl className="props">
              <dt>Workflow</dt>
              <dd>
                <Link to={`/workflows/${encodeURIComponent(r.workflow)}`}>{r.workflow}</Link>
              </dd>
              <dt>Created</dt>
              <dd>
                <DateTime iso={r.createdAt} />
              </dd>
              <dt>Started</dt>
              <dd>
                <DateTime iso={r.startedAt} />
              </dd>
              <dt>Finished</dt>
              <dd>
                <DateTime iso={r.finishedAt} />
              </dd>
              <dt>Duration</dt>
              <dd>{r.startedAt ? formatDuration(elapsedMs(r.startedAt, r.finishedAt, now)) : '—'}</dd>
              <dt>Worker</dt>
              <dd className="mono">{r.worker ?? '—'}</dd>
              {r.idempotencyKey && (
                <>
                  <dt>Idempotency key</dt>
                  <dd className="mono">{r.idempotencyKey}</dd>
                </>
              )}
              {r.replayOf && (
                <>
                  <dt>Replay of</dt>
                  <dd>
                    <Link className="mono" to={`/runs/${encodeURIComponent(r.replayOf)}`}>
                      {r.replayOf}
                    </Link>
                  </dd>
                </>
              )}
              <dt>Definition</dt>
              <dd className="mono" title={r.definitionHash}>
                {r.definitionHash.slice(0, 12)}
              </dd>
            </dl>
          </Panel>
          <Panel title="Input and output">
            <div className="stack">
              <div>
                <h3>Input</h3>
                <JsonView value={r.input} label="Run input" />
              </div>
              <div>
                <h3>Output</h3>
                <JsonView value={r.output} label="Run output" />
              </div>
            </div>
          </Panel>
        </div>

        <Panel title="Event history">
          <EventTimeline events={r.events} now={now} />
        </Panel>
      </div>

      <ReplayDialog
        open={dialog === 'replay'}
        run={r}
        initialStep={r.status === 'dead' ? stepId : null}
        onClose={() => setDialog(null)}
        onReplayed={(res) => {
          setDialog(null);
          toast.notify(`Replay started as run ${res.taskId}.`);
          void queryClient.invalidateQueries({ queryKey: ['tasks'] });
          navigate(`/runs/${encodeURIComponent(res.taskId)}`);
        }}
      />
      <ConfirmDialog
        open={dialog === 'retry'}
        title="Retry this run?"
        confirmLabel="Retry run"
        cancelLabel="Leave it"
        busy={retry.isPending}
        error={retry.error}
        onConfirm={() => retry.mutate()}
        onClose={() => {
          retry.reset();
          setDialog(null);
        }}
      >
        <p>
          Run <span className="mono">{r.id}</span> resumes at the step that failed
          {r.deadLetter ? (
            <>
              {' '}
              (<strong>{r.deadLetter.stepId}</strong>)
            </>
          ) : null}
          ; the steps that succeeded keep their outputs and do not run again.
        </p>
      </ConfirmDialog>
      <ConfirmDialog
        open={dialog === 'cancel'}
        title="Cancel this run?"
        confirmLabel="Cancel run"
        cancelLabel="Keep it running"
        danger
        busy={cancel.isPending}
        error={cancel.error}
        onConfirm={() => cancel.mutate()}
        onClose={() => {
          cancel.reset();
          setDialog(null);
        }}
      >
        <p>
          Run <span className="mono">{r.id}</span> stops after its current step; steps not started yet are cancelled.
        </p>
      </ConfirmDialog>
    </>
  );
}
