import { useState } from 'react';
import type { RunEvent } from '../api/types';
import { eventTone, summarizeEvent } from '../lib/events';
import { formatDateTime, formatJson } from '../lib/format';
import { Button, RelativeTime } from '../ui';

/** How many events show before "Show all". */
const FIRST = 30;

function hasData(e: RunEvent): boolean {
  if (e.data == null) return false;
  if (typeof e.data === 'object' && !Array.isArray(e.data)) return Object.keys(e.data).length > 0;
  return true;
}

/**
 * A run's events as a compact timeline, newest first: when (relative, exact on hover),
 * what happened in one sentence, and the raw JSON on demand.
 */
export function EventTimeline({ events, now }: { events: RunEvent[]; now: number }) {
  const [all, setAll] = useState(false);
  if (events.length === 0) return <p className="muted">No events yet.</p>;
  const rows = [...events].reverse();
  const shown = all ? rows : rows.slice(0, FIRST);
  return (
    <div>
      <ol className="events" aria-label="Event history, newest first">
        {shown.map((e) => (
          <li key={String(e.id)} className="events__item" data-kind={e.kind}>
            <span className={`events__dot tone-${eventTone(e.kind)}`} aria-hidden="true" />
            <span className="events__time">
              <RelativeTime iso={e.at} now={now} />
            </span>
            <div className="events__body">
              <span className="events__summary" title={summarizeEvent(e)}>
                {summarizeEvent(e)}
              </span>
              {hasData(e) && (
                <details className="events__details">
                  <summary>
                    JSON<span className="sr-only"> of the {e.kind} event at {formatDateTime(e.at)}</span>
                  </summary>
                  <pre className="code code--wrap">{formatJson({ kind: e.kind, stepId: e.stepId, data: e.data })}</pre>
                </details>
              )}
            </div>
          </li>
        ))}
      </ol>
      {rows.length > FIRST && (
        <div className="row" style={{ paddingTop: 8 }}>
          <Button size="small" onClick={() => setAll((a) => !a)}>
            {all ? `Show the latest ${FIRST}` : `Show all ${rows.length} events`}
          </Button>
        </div>
      )}
    </div>
  );
}
