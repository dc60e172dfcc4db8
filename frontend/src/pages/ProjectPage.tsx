import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo, useRef, useState } from 'react';
import { Link, useParams } from 'react-router';
import { getProject, getTask, startAgent, type AgentKind } from '../api/endpoints';
import type { Analysis, Json } from '../api/types';
import { RequireRole } from '../auth/auth';
import { isTerminalRun } from '../lib/status';
import { throttle, useLiveEvents } from '../lib/useLiveEvents';
import { useTitle } from '../lib/useTitle';
import {
  Button,
  EmptyState,
  ErrorState,
  InlineError,
  JsonView,
  LiveIndicator,
  Loading,
  PageHeader,
  Panel,
  RelativeTime,
  StatusPill,
  useNow,
} from '../ui';
import { ownerLabel } from './ProjectsPage';

/** The readable text of an agent's result, when it has one (`text`, `summary`, `analysis`). */
export function resultText(result: Json | null | undefined): string | null {
  if (typeof result === 'string') return result;
  if (result && typeof result === 'object' && !Array.isArray(result)) {
    for (const key of ['text', 'summary', 'analysis', 'content']) {
      const v = result[key];
      if (typeof v === 'string' && v.trim()) return v;
    }
  }
  return null;
}

/** The run started from this page, followed live until it finishes. */
function LiveRun({ taskId, projectId }: { taskId: string; projectId: string }) {
  const queryClient = useQueryClient();
  const now = useNow(1000);
  const refresh = useMemo(
    () => throttle(() => void queryClient.invalidateQueries({ queryKey: ['task', taskId] }), 500),
    [queryClient, taskId],
  );
  useEffect(() => () => refresh.cancel(), [refresh]);
  // Polls as a safety net: slowly while the live stream is open, quickly when it is not.
  const liveOpen = useRef(false);
  const task = useQuery({
    queryKey: ['task', taskId],
    queryFn: ({ signal }) => getTask(taskId, signal),
    refetchInterval: (q) => (isTerminalRun(q.state.data?.status) ? false : liveOpen.current ? 10_000 : 2000),
  });
  const terminal = isTerminalRun(task.data?.status);
  const live = useLiveEvents({ runId: taskId }, () => refresh.call(), !terminal);
  useEffect(() => {
    liveOpen.current = live === 'open';
  }, [live]);

  // When the run finishes, the project's analyses hold its result.
  const finished = useRef(false);
  useEffect(() => {
    if (terminal && !finished.current) {
      finished.current = true;
      void queryClient.invalidateQueries({ queryKey: ['project', projectId] });
    }
  }, [terminal, queryClient, projectId]);

  if (task.isPending) return <Loading label="Loading the run…" />;
  if (task.isError) return <ErrorState error={task.error} onRetry={() => void task.refetch()} />;
  const t = task.data;
  const done = t.steps.filter((s) => s.status === 'succeeded' || s.status === 'skipped').length;
  return (
    <div className="stack" aria-live="polite">
      <div className="row">
        <StatusPill status={t.status} />
        <span>
          {t.workflow}: {done} of {t.steps.length} steps done
        </span>
        <span className="grow" />
        {!terminal && <LiveIndicator state={live} />}
      </div>
      <p className="muted" style={{ margin: 0 }}>
        Run{' '}
        <Link className="mono" to={`/runs/${encodeURIComponent(t.id)}`}>
          {t.id}
        </Link>{' '}
        started <RelativeTime iso={t.createdAt} now={now} />.
      </p>
      {t.error && (
        <div className="callout tone-danger" role="alert">
          {t.error}
        </div>
      )}
    </div>
  );
}

/** What an analysis found: its findings (a list), success rate (0–1) and narrated summary. */
export interface Findings {
  findings: string[];
  successRate: number | null;
  /** A model's narration, when one wrote it (the built-in summary only repeats the findings). */
  narration: string | null;
}

export function analysisFindings(result: Json | null | undefined): Findings | null {
  if (!result || typeof result !== 'object' || Array.isArray(result)) return null;
  const list = result.findings;
  if (!Array.isArray(list)) return null;
  const findings = list.filter((f): f is string => typeof f === 'string' && !!f.trim());
  const rate = typeof result.successRate === 'number' && Number.isFinite(result.successRate) ? result.successRate : null;
  const by = typeof result.narratedBy === 'string' ? result.narratedBy : null;
  const summary = typeof result.summary === 'string' && result.summary.trim() ? result.summary : null;
  const narration = summary && by && by !== 'built-in analyze' ? summary : null;
  return { findings, successRate: rate === null ? null : Math.min(1, Math.max(0, rate)), narration };
}

/** The share of finished runs that succeeded, as a bar and in words. */
export function SuccessRate({ rate }: { rate: number }) {
  const pct = Math.round(rate * 100);
  return (
    <div className="stack" style={{ gap: 4 }}>
      <div className="row" style={{ justifyContent: 'space-between' }}>
        <strong>Success rate</strong>
        <span>
          <strong>{pct}%</strong> <span className="muted">of finished runs succeeded</span>
        </span>
      </div>
      <div className="meter" aria-hidden="true">
        <span className="meter__part--success" style={{ width: `${pct}%` }} />
        <span className="meter__part--danger" style={{ width: `${100 - pct}%` }} />
      </div>
    </div>
  );
}

function AnalysisCard({ a, now }: { a: Analysis; now: number }) {
  const text = resultText(a.result);
  const found = a.status === 'succeeded' ? analysisFindings(a.result) : null;
  const failed = a.status === 'dead' || a.status === 'cancelled';
  return (
    <article className="panel">
      <div className="panel__header">
        <h3>
          {a.workflow} <span className="muted">· <RelativeTime iso={a.createdAt} now={now} /></span>
        </h3>
        <div className="row">
          <StatusPill status={a.status} />
          <Link to={`/runs/${encodeURIComponent(a.taskId)}`} aria-label={`Run ${a.taskId} of this ${a.workflow}`}>
            Run
          </Link>
        </div>
      </div>
      <div className="panel__body">
        {failed ? (
          <div className="callout tone-danger" style={{ overflowWrap: 'anywhere' }}>
            <strong>{a.status === 'dead' ? 'The run died' : 'The run was cancelled'}</strong>
            {a.error ? (
              <>
                : <span className="analysis__error">{a.error}</span>
              </>
            ) : (
              <> without an error message.</>
            )}{' '}
            <Link to={`/runs/${encodeURIComponent(a.taskId)}`}>Open the run</Link> to see which step failed.
          </div>
        ) : found ? (
          <div className="stack">
            {found.narration && <p style={{ whiteSpace: 'pre-wrap', margin: 0 }}>{found.narration}</p>}
            {found.successRate !== null ? (
              <SuccessRate rate={found.successRate} />
            ) : (
              <p className="muted" style={{ margin: 0 }}>
                No success rate yet: none of the project's runs had finished.
              </p>
            )}
            {found.findings.length > 0 && (
              <div>
                <h4 style={{ margin: '0 0 4px' }}>Findings</h4>
                <ul className="findings">
                  {found.findings.map((f, i) => (
                    <li key={i}>{f}</li>
                  ))}
                </ul>
              </div>
            )}
          </div>
        ) : text ? (
          <p style={{ whiteSpace: 'pre-wrap', margin: 0 }}>{text}</p>
        ) : a.result !== null && a.result !== undefined ? (
          <JsonView value={a.result} label={`Result of ${a.workflow}`} />
        ) : (
          <p className="muted" style={{ margin: 0 }}>
            {isTerminalRun(a.status) ? 'The run succeeded without a result.' : 'The result appears here when the run succeeds.'}
          </p>
        )}
      </div>
    </article>
  );
}

export function ProjectPage() {
  const { id = '' } = useParams();
  const queryClient = useQueryClient();
  const now = useNow(10_000);
  const [started, setStarted] = useState<{ taskId: string; kind: AgentKind } | null>(null);
  const project = useQuery({ queryKey: ['project', id], queryFn: ({ signal }) => getProject(id, signal) });
  useTitle(project.data?.name ?? 'Project');
  const start = useMutation({
    mutationFn: (kind: AgentKind) => startAgent(kind, project.data?.id ?? id),
    onSuccess: (res, kind) => {
      setStarted({ taskId: res.taskId, kind });
      void queryClient.invalidateQueries({ queryKey: ['project', id] });
    },
  });

  const breadcrumb = <Link to="/projects">Projects</Link>;
  if (project.isPending) return <Loading label="Loading project…" />;
  if (project.isError)
    return (
      <>
        <PageHeader title="Project" breadcrumb={breadcrumb} />
        <ErrorState error={project.error} onRetry={() => void project.refetch()} />
      </>
    );
  const p = project.data;
  const analyses = [...(p.analyses ?? [])].sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
  const tracked = started?.taskId ?? analyses.find((a) => !isTerminalRun(a.status))?.taskId ?? analyses[0]?.taskId ?? null;

  return (
    <>
      <PageHeader
        title={p.name}
        breadcrumb={breadcrumb}
        actions={
          <RequireRole min="operator">
            <Button variant="primary" busy={start.isPending && start.variables === 'analyze'} disabled={start.isPending} onClick={() => start.mutate('analyze')}>
              Analyze
            </Button>
            <Button busy={start.isPending && start.variables === 'summarize'} disabled={start.isPending} onClick={() => start.mutate('summarize')}>
              Summarize
            </Button>
          </RequireRole>
        }
      >
        {p.description && <p style={{ margin: 0 }}>{p.description}</p>}
        <span className="muted">
          Owner {ownerLabel(p.owner)} · created <RelativeTime iso={p.createdAt} now={now} />
        </span>
      </PageHeader>
      {start.isError && <InlineError error={start.error} />}
      <div className="stack">
        <Panel title={started ? `${started.kind === 'analyze' ? 'Analysis' : 'Summary'} you started` : 'Latest run'}>
          {tracked ? (
            <LiveRun key={tracked} taskId={tracked} projectId={id} />
          ) : (
            <EmptyState title="No agent has run on this project yet.">
              <RequireRole min="operator" fallback="An operator can start an analysis.">
                Press Analyze or Summarize to start one.
              </RequireRole>
            </EmptyState>
          )}
        </Panel>
        <section aria-labelledby="results-title" className="stack">
          <h2 id="results-title">Results</h2>
          {analyses.length === 0 ? (
            <div className="panel">
              <EmptyState title="No results yet." />
            </div>
          ) : (
            analyses.slice(0, 10).map((a) => <AnalysisCard key={a.taskId} a={a} now={now} />)
          )}
        </section>
      </div>
    </>
  );
}
