import type { LiveState } from '../api/events';

const TEXT: Record<LiveState, string> = {
  open: 'Live',
  connecting: 'Connecting…',
  closed: 'Not live (refreshing periodically)',
};

/** Says whether the page receives live updates. */
export function LiveIndicator({ state }: { state: LiveState }) {
  return (
    <span className={`live live--${state}`} aria-live="polite">
      <span className="live__dot" aria-hidden="true" />
      {TEXT[state]}
    </span>
  );
}
