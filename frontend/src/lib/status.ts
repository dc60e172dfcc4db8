// How run and step statuses look: a tone (colour family) and a label. Colour is never
// the only signal: pills and DAG nodes always print the label too.
import type { Attempt, NotificationState, RunStatus, StepStatus, TaskStep } from '../api/types';

export type Tone = 'neutral' | 'info' | 'waiting' | 'warning' | 'success' | 'danger' | 'muted';

const TONES: Record<RunStatus | StepStatus, Tone> = {
  queued: 'neutral',
  pending: 'muted',
  running: 'info',
  waiting: 'waiting',
  sleeping: 'waiting',
  retrying: 'warning',
  retry_scheduled: 'warning',
  succeeded: 'success',
  dead: 'danger',
  failed: 'danger',
  cancelled: 'muted',
  skipped: 'muted',
};

export function statusTone(status: string | null | undefined): Tone {
  if (!status) return 'muted';
  return TONES[status as RunStatus | StepStatus] ?? 'neutral';
}

export function statusLabel(status: string | null | undefined): string {
  if (!status) return 'unknown';
  return status.replace(/_/g, ' ');
}

// Not the step tones: a pending alert is still being retried (worth a look), and a
// skipped one was never meant to go anywhere.
const NOTIFICATION_TONES: Record<NotificationState, Tone> = {
  pending: 'warning',
  delivered: 'success',
  skipped: 'neutral',
  failed: 'danger',
};

export function notificationTone(state: string | null | undefined): Tone {
  return NOTIFICATION_TONES[state as NotificationState] ?? 'neutral';
}

/** Statuses whose work is under way, shown with a moving indicator. */
export function isActive(status: string | null | undefined): boolean {
  return status === 'running' || status === 'queued' || status === 'retrying' || status === 'retry_scheduled';
}

export function isTerminalRun(status: string | null | undefined): boolean {
  return status === 'succeeded' || status === 'dead' || status === 'cancelled';
}

/**
 * What a step's attempt is doing, in words. An attempt stays `running` while its step
 * waits (for a callback, a child run or a timer): say that instead.
 */
export function attemptLabel(step: Pick<TaskStep, 'status' | 'kind'>, a: Pick<Attempt, 'status' | 'finishedAt'>): string {
  if (a.status === 'running' && !a.finishedAt && step.status === 'waiting') {
    return step.kind === 'sleep' ? 'sleeping' : 'waiting';
  }
  return a.status;
}

