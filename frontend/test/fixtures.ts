// Realistic API answers, shaped like docs/API.md, for page tests.
import type { DeadLetter, MapItem, MapProgress, Notification, TaskDetail, TaskStep, TaskSummary, TokenView } from '../src/api/types';

export function taskSummary(over: Partial<TaskSummary> = {}): TaskSummary {
  return {
    id: '01JRUN0000000000000000000A',
    workflow: 'hello',
    status: 'succeeded',
    error: null,
    idempotencyKey: null,
    worker: 'worker-1',
    leaseExpiresAt: null,
    wakeAt: null,
    createdAt: '2026-01-01T12:00:00Z',
    startedAt: '2026-01-01T12:00:01Z',
    finishedAt: '2026-01-01T12:00:04Z',
    updatedAt: '2026-01-01T12:00:04Z',
    replayOf: null,
    ...over,
  };
}

export function deadRun(): TaskDetail {
  return {
    ...taskSummary({ id: '01JDEAD000000000000000000B', status: 'dead', error: 'step confirm failed: connection refused' }),
    definitionHash: 'abcdef0123456789abcdef',
    input: { name: 'Ada' },
    output: null,
    steps: [
      {
        id: 'greet',
        kind: 'sql',
        needs: [],
        status: 'succeeded',
        attemptCount: 1,
        attempts: [
          {
            attempt: 1,
            status: 'succeeded',
            worker: 'worker-1',
            startedAt: '2026-01-01T12:00:01Z',
            finishedAt: '2026-01-01T12:00:01.250Z',
            durationMs: 250,
            error: null,
            retryDelayMs: null,
          },
        ],
        output: { rows: [{ greeting: 'hello, Ada' }] },
        error: null,
        nextAttemptAt: null,
        wakeAt: null,
        startedAt: '2026-01-01T12:00:01Z',
        finishedAt: '2026-01-01T12:00:01.250Z',
        childRunId: null,
        map: null,
      },
      {
        id: 'pause',
        kind: 'sleep',
        needs: ['greet'],
        status: 'succeeded',
        attemptCount: 1,
        attempts: [
          {
            attempt: 1,
            status: 'succeeded',
            worker: 'worker-1',
            startedAt: '2026-01-01T12:00:01.300Z',
            finishedAt: '2026-01-01T12:00:02.300Z',
            durationMs: 1000,
            error: null,
            retryDelayMs: null,
          },
        ],
        output: null,
        error: null,
        nextAttemptAt: null,
        wakeAt: null,
        startedAt: '2026-01-01T12:00:01.300Z',
        finishedAt: '2026-01-01T12:00:02.300Z',
        childRunId: null,
        map: null,
      },
      {
        id: 'confirm',
        kind: 'sql',
        needs: ['greet', 'pause'],
        status: 'failed',
        attemptCount: 2,
        attempts: [
          {
            attempt: 1,
            status: 'failed',
            worker: 'worker-1',
            startedAt: '2026-01-01T12:00:02.400Z',
            finishedAt: '2026-01-01T12:00:02.500Z',
            durationMs: 100,
            error: 'connection refused',
            retryDelayMs: 1000,
          },
          {
            attempt: 2,
            status: 'failed',
            worker: 'worker-2',
            startedAt: '2026-01-01T12:00:03.500Z',
            finishedAt: '2026-01-01T12:00:03.600Z',
            durationMs: 100,
            error: 'connection refused again',
            retryDelayMs: null,
          },
        ],
        output: null,
        error: 'connection refused again',
        nextAttemptAt: null,
        wakeAt: null,
        startedAt: '2026-01-01T12:00:02.400Z',
        finishedAt: '2026-01-01T12:00:03.600Z',
        childRunId: null,
        map: null,
      },
    ],
    events: [
      { id: 1, at: '2026-01-01T12:00:00Z', kind: 'run_submitted', stepId: null, data: null },
      { id: 2, at: '2026-01-01T12:00:03.600Z', kind: 'run_dead', stepId: 'confirm', data: { error: 'connection refused again' } },
    ],
    deadLetter: { id: 77, stepId: 'confirm', error: 'connection refused again', attempts: 2, createdAt: '2026-01-01T12:00:03.600Z' },
  };
}

function step(over: Partial<TaskStep> & Pick<TaskStep, 'id'>): TaskStep {
  return {
    kind: 'sql',
    needs: [],
    status: 'succeeded',
    attemptCount: 1,
    attempts: [
      {
        attempt: 1,
        status: 'succeeded',
        worker: 'worker-1',
        startedAt: '2026-01-01T12:00:01Z',
        finishedAt: '2026-01-01T12:00:02Z',
        durationMs: 1000,
        error: null,
        retryDelayMs: null,
      },
    ],
    output: null,
    error: null,
    nextAttemptAt: null,
    wakeAt: null,
    startedAt: '2026-01-01T12:00:01Z',
    finishedAt: '2026-01-01T12:00:02Z',
    childRunId: null,
    map: null,
    ...over,
  };
}

/**
 * A run fanning out: `split` wrote a list, `fanout` (a map) runs a child per item,
 * `announce` (a workflow step) ran one child run, `collect` waits for the map.
 */
export function mapRun(map: MapProgress = { total: 150, done: 37, failed: 1, running: 5 }, fanoutStatus: TaskStep['status'] = 'waiting'): TaskDetail {
  const finished = fanoutStatus !== 'waiting';
  return {
    ...taskSummary({ id: '01JMAP00000000000000000000', workflow: 'fan', status: finished ? 'running' : 'waiting', finishedAt: null }),
    definitionHash: 'fedcba9876543210',
    input: { batch: 7 },
    output: null,
    steps: [
      step({ id: 'split', output: { items: 150 } }),
      step({ id: 'announce', kind: 'workflow', needs: ['split'], childRunId: '01JCHILDANNOUNCE0000000000' }),
      step({
        id: 'fanout',
        kind: 'map',
        needs: ['split'],
        status: fanoutStatus,
        attempts: [
          {
            attempt: 1,
            status: finished ? 'succeeded' : 'running',
            worker: 'worker-1',
            startedAt: '2026-01-01T12:00:02Z',
            finishedAt: finished ? '2026-01-01T12:05:00Z' : null,
            durationMs: null,
            error: null,
            retryDelayMs: null,
          },
        ],
        finishedAt: finished ? '2026-01-01T12:05:00Z' : null,
        map,
      }),
      step({ id: 'collect', needs: ['fanout'], status: finished ? 'running' : 'pending', attemptCount: 0, attempts: [], startedAt: null, finishedAt: null }),
    ],
    events: [{ id: 1, at: '2026-01-01T12:00:00Z', kind: 'run_submitted', stepId: null, data: null }],
    deadLetter: null,
  };
}

/** Item `index` of `mapRun`'s `fanout`: 0–36 succeeded, 37 failed, 38–42 running, the rest pending. */
export function mapItem(index: number): MapItem {
  if (index < 37) return { index, status: 'succeeded', childRunId: `01JITEM${String(index).padStart(3, '0')}`, error: null };
  if (index === 37) return { index, status: 'failed', childRunId: '01JITEM037', error: 'child run died: no such user' };
  if (index < 43) return { index, status: 'running', childRunId: `01JITEM${String(index).padStart(3, '0')}`, error: null };
  return { index, status: 'pending', childRunId: null, error: null };
}

export function deadLetter(over: Partial<DeadLetter> = {}): DeadLetter {
  return {
    id: 77,
    runId: '01JDEAD000000000000000000B',
    workflow: 'hello',
    stepId: 'confirm',
    error: 'connection refused again',
    attempts: [
      { attempt: 1, error: 'connection refused', startedAt: '2026-01-01T12:00:02.400Z', durationMs: 100 },
      { attempt: 2, error: 'connection refused again', startedAt: '2026-01-01T12:00:03.500Z', durationMs: 100 },
    ],
    input: { name: 'Ada' },
    createdAt: '2026-01-01T12:00:03.600Z',
    ...over,
  };
}

const DAY = 86_400_000;

/** A token as `GET /api/auth/tokens` lists it; times are relative to now (days ago: negative is in the future). */
export function tokenView(over: Partial<TokenView> = {}, { createdDaysAgo = 10, expiresInDays = 80 as number | null } = {}): TokenView {
  const now = Date.now();
  return {
    id: 1,
    name: 'laptop',
    role: 'operator',
    userId: 1,
    createdAt: new Date(now - createdDaysAgo * DAY).toISOString(),
    lastUsedAt: new Date(now - 2 * 3_600_000).toISOString(),
    expiresAt: expiresInDays === null ? null : new Date(now + expiresInDays * DAY).toISOString(),
    revoked: false,
    ...over,
  };
}

/** A `run.dead` alert still being retried: the endpoint answered 502 twice. */
export function notification(over: Partial<Notification> = {}): Notification {
  return {
    id: '42',
    event: 'run.dead',
    taskId: '01JDEAD000000000000000000B',
    workflow: 'hello',
    step: 'confirm',
    scheduleId: null,
    error: 'connection refused again',
    attempts: 2,
    workflowUrl: false,
    state: 'pending',
    deliveries: 2,
    resends: 0,
    nextAttemptAt: new Date(Date.now() + 5 * 60_000).toISOString(),
    lastError: 'the endpoint answered 502',
    lastStatus: 502,
    createdAt: new Date(Date.now() - 10 * 60_000).toISOString(),
    deliveredAt: null,
    finishedAt: null,
    ...over,
  };
}
