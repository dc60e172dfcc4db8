import type { ReactNode } from 'react';
import { isActive, statusLabel, statusTone, type Tone } from '../lib/status';

/** A run's or step's status as a coloured pill that always prints its name. */
export function StatusPill({ status, className }: { status: string | null | undefined; className?: string }) {
  const tone = statusTone(status);
  const active = isActive(status);
  return (
    <span
      className={['pill', `tone-${tone}`, active ? 'pill--active' : '', className ?? ''].filter(Boolean).join(' ')}
      data-status={status ?? 'unknown'}
    >
      <span className="pill__dot" aria-hidden="true" />
      {statusLabel(status)}
    </span>
  );
}

/** A small label in one of the status tones. */
export function Badge({ tone = 'neutral', children }: { tone?: Tone; children: ReactNode }) {
  return <span className={`pill tone-${tone}`}>{children}</span>;
}
