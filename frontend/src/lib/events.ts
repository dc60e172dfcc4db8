// A run's event history in words: one humane line per event, and a tone for its dot.
// The raw JSON stays available on demand; this is what a person reads first.
import type { Json, RunEvent } from '../api/types';
import { formatDuration, formatTime } from './format';
import type { Tone } from './status';

type Data = { [key: string]: Json };

function data(e: RunEvent): Data {
  return e.data && typeof e.data === 'object' && !Array.isArray(e.data) ? (e.data as Data) : {};
}

function str(v: Json | undefined): string | null {
  return typeof v === 'string' && v.trim() ? v : typeof v === 'number' ? String(v) : null;
}

/** One line of an error: its first line, cut at `max` characters. */
export function firstLine(text: string, max = 160): string {
  const line = text.split('\n', 1)[0]!.trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

function attemptOf(d: Data): string {
  const n = d.attempt;
  return typeof n === 'number' ? ` (attempt ${n})` : '';
}

function list(v: Json | undefined): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** What happened, in one sentence a person reads. */
export function summarizeEvent(e: RunEvent): string {
  const d = data(e);
  const step = e.stepId ? `Step ${e.stepId}` : 'A step';
  switch (e.kind) {
    case 'run_queued':
      return str(d.replayOf) ? `Queued as a replay of run ${str(d.replayOf)}` : 'Queued';
    case 'run_running': {
      const worker = str(d.worker);
      return worker ? `Picked up by worker ${worker}` : 'Picked up by a worker';
    }
    case 'step_started': {
      const worker = str(d.worker);
      return `${step} started${attemptOf(d)}${worker ? ` on ${worker}` : ''}`;
    }
    case 'step_succeeded':
      return `${step} succeeded${attemptOf(d)}`;
    case 'step_failed': {
      const error = str(d.error);
      return `${step} failed${attemptOf(d)}${error ? `: ${firstLine(error)}` : ''}`;
    }
    case 'step_retry_scheduled': {
      const error = str(d.error);
      const delay = typeof d.delayMs === 'number' ? ` retry in ${formatDuration(d.delayMs)}` : ' retry scheduled';
      return `${step} failed${attemptOf(d)},${delay}${error ? `: ${firstLine(error)}` : ''}`;
    }
    case 'step_waiting': {
      if (str(d.wakeAt)) return `${step} sleeps until ${formatTime(str(d.wakeAt))}`;
      const timeout = str(d.timeoutAt) ? ` (times out at ${formatTime(str(d.timeoutAt))})` : '';
      if (str(d.childRunId)) return `${step} waits for child run ${str(d.childRunId)}${timeout}`;
      if (typeof d.items === 'number') return `${step} runs its ${d.items} items${timeout}`;
      return `${step} waits for a callback${timeout}`;
    }
    case 'step_skipped':
      return `${step} skipped: its condition was false`;
    case 'step_abandoned':
      return `${step} abandoned${attemptOf(d)}: its worker stopped before it finished`;
    case 'run_succeeded':
      return 'Run succeeded';
    case 'run_dead': {
      const error = str(d.error);
      return `Run died${error ? `: ${firstLine(error)}` : ''}`;
    }
    case 'run_retried': {
      const by = str(d.by);
      const steps = list(d.steps);
      return `Retried${by ? ` by ${by}` : ''}${steps.length ? `; steps reset: ${steps.join(', ')}` : ''}`;
    }
    case 'run_replay_of': {
      const from = str(d.fromStep);
      const copied = list(d.copied);
      return `Replays run ${str(d.replayOf) ?? '?'}${from ? ` from step ${from}` : ''}${
        copied.length ? `; copied ${copied.join(', ')}` : ''
      }`;
    }
    case 'run_released': {
      const worker = str(d.worker);
      const reason = str(d.reason);
      return `Released${worker ? ` by worker ${worker}` : ''}${reason ? ` (${reason})` : ''}`;
    }
    case 'lease_expired': {
      const worker = str(d.previousWorker);
      return `The lease${worker ? ` of worker ${worker}` : ''} expired; the run is queued again`;
    }
    case 'run_cancel_requested': {
      const by = str(d.by);
      return `Cancellation requested${by ? ` by ${by}` : ''}`;
    }
    case 'run_cancelled': {
      const by = str(d.by);
      return `Cancelled${by ? ` by ${by}` : ''}`;
    }
    case 'run_terminate_requested': {
      const by = str(d.by);
      return `Termination requested${by ? ` by ${by}` : ''}: running steps stop at once`;
    }
    case 'step_terminated':
      return `${step} terminated${attemptOf(d)}: an operator stopped the run`;
    case 'run_admitted': {
      const key = str(d.concurrencyKey);
      return `Admitted to a concurrency slot${key !== null ? ` of key ${key}` : ''}`;
    }
    case 'step_rate_limited': {
      const key = str(d.rateLimit);
      const until = str(d.until);
      return `${step} waits its turn${key ? ` under rate limit ${key}` : ''}${until ? ` until ${formatTime(until)}` : ''}`;
    }
    case 'step_waiting_for_slot': {
      const key = str(d.concurrencyKey);
      return `${step} waits in line for a slot${key ? ` of concurrency key ${key}` : ''}`;
    }
    default: {
      const words = e.kind.replace(/_/g, ' ');
      return `${words.charAt(0).toUpperCase()}${words.slice(1)}${e.stepId ? ` (step ${e.stepId})` : ''}`;
    }
  }
}

/** The colour family of an event's dot (never the only signal: the line says it). */
export function eventTone(kind: string): Tone {
  if (/succeeded$/.test(kind)) return 'success';
  if (/(failed|dead)$/.test(kind)) return 'danger';
  if (/(retry_scheduled|abandoned|terminated|rate_limited|waiting_for_slot|lease_expired|released)$/.test(kind)) return 'warning';
  if (/waiting$/.test(kind)) return 'waiting';
  if (/(cancelled|cancel_requested|skipped)$/.test(kind)) return 'muted';
  if (/(started|running)$/.test(kind)) return 'info';
  return 'neutral';
}

/** The steps a replay copied from its source run (the `run_replay_of` event), if any. */
export function copiedSteps(events: RunEvent[]): Set<string> {
  const e = events.find((x) => x.kind === 'run_replay_of');
  return new Set(e ? list(data(e).copied) : []);
}
