// Live run events: `GET /api/events?runId=&workflow=` as Server-Sent Events.
//
// The browser's EventSource reconnects by itself and sends `Last-Event-ID`, so the API
// replays what was missed; this module only parses `run-event` messages and reports the
// connection state so pages can say whether they are live.
import { queryString } from './client';
import type { LiveEvent } from './types';

export interface EventFilter {
  runId?: string;
  workflow?: string;
}

export type LiveState = 'connecting' | 'open' | 'closed';

export interface Subscription {
  close(): void;
}

export function eventsUrl(filter: EventFilter): string {
  return `/api/events${queryString({ runId: filter.runId, workflow: filter.workflow })}`;
}

/** Parses one `run-event` message's data; `null` for anything that is not an event. */
export function parseLiveEvent(data: string): LiveEvent | null {
  try {
    const value = JSON.parse(data) as Partial<LiveEvent>;
    if (!value || typeof value !== 'object' || typeof value.runId !== 'string' || typeof value.kind !== 'string') {
      return null;
    }
    return value as LiveEvent;
  } catch {
    return null;
  }
}

export function subscribeEvents(
  filter: EventFilter,
  onEvent: (event: LiveEvent) => void,
  onState?: (state: LiveState) => void,
): Subscription {
  if (typeof EventSource === 'undefined') {
    onState?.('closed');
    return { close() {} };
  }
  const source = new EventSource(eventsUrl(filter), { withCredentials: true });
  onState?.('connecting');
  source.onopen = () => onState?.('open');
  source.onerror = () => {
    // CONNECTING means the browser is retrying; CLOSED means it gave up (a 401, say).
    onState?.(source.readyState === EventSource.CLOSED ? 'closed' : 'connecting');
  };
  const listener = (message: MessageEvent<string>) => {
    const event = parseLiveEvent(message.data);
    if (event) onEvent(event);
  };
  source.addEventListener('run-event', listener as EventListener);
  return {
    close() {
      source.removeEventListener('run-event', listener as EventListener);
      source.close();
      onState?.('closed');
    },
  };
}
