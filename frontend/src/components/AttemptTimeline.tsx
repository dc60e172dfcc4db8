import type { TaskStep } from '../api/types';
import { elapsedMs, formatDuration, formatTime } from '../lib/format';
import { attemptLabel, statusLabel, statusTone } from '../lib/status';

interface Bar {
  key: string;
  label: string;
  stepId: string;
  attempt: number;
  status: string;
  start: number;
  end: number;
  running: boolean;
  error: string | null;
}

/** Every attempt of every step on one time axis: when it started, how long, how it ended. */
export function AttemptTimeline({ steps, now = Date.now() }: { steps: TaskStep[]; now?: number }) {
  const bars: Bar[] = [];
  for (const s of steps) {
    for (const a of s.attempts) {
      const start = Date.parse(a.startedAt);
      if (Number.isNaN(start)) continue;
      const end = a.finishedAt ? Date.parse(a.finishedAt) : now;
      bars.push({
        key: `${s.id}#${a.attempt}`,
        label: s.attempts.length > 1 ? `${s.id} #${a.attempt}` : s.id,
        stepId: s.id,
        attempt: a.attempt,
        status: attemptLabel(s, a),
        start,
        end: Math.max(end, start),
        running: !a.finishedAt,
        error: a.error,
      });
    }
  }
  if (bars.length === 0) return <p className="muted">No attempts yet.</p>;
  bars.sort((a, b) => a.start - b.start);
  const t0 = Math.min(...bars.map((b) => b.start));
  const t1 = Math.max(...bars.map((b) => b.end), t0 + 1);
  const span = t1 - t0;
  return (
    <div>
      <ol className="timeline" aria-label="Attempts in time order">
        {bars.map((b) => {
          const left = ((b.start - t0) / span) * 100;
          const width = Math.max(((b.end - b.start) / span) * 100, 0.5);
          const duration = formatDuration(elapsedMs(new Date(b.start).toISOString(), b.running ? null : new Date(b.end).toISOString(), now));
          const description = `${b.stepId} attempt ${b.attempt}: ${statusLabel(b.status)}, started ${formatTime(new Date(b.start).toISOString())}, ${b.running ? `${b.status === 'running' ? 'running' : b.status} for` : 'took'} ${duration}${b.error ? `, error: ${b.error}` : ''}`;
          return (
            <li key={b.key} className="timeline__row" data-attempt={b.key}>
              <span className="timeline__label" title={b.label}>
                {b.label}
              </span>
              <span className="timeline__track" title={description}>
                <span
                  className={`timeline__bar tone-${statusTone(b.status)}`}
                  style={{ left: `${left}%`, width: `${Math.min(width, 100 - left)}%` }}
                />
                <span className="sr-only">{description}</span>
              </span>
            </li>
          );
        })}
      </ol>
      <div className="timeline__axis" aria-hidden="true">
        <span>{formatTime(new Date(t0).toISOString())}</span>
        <span>{formatDuration(span)}</span>
        <span>{formatTime(new Date(t1).toISOString())}</span>
      </div>
    </div>
  );
}
