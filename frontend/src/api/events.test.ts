import { describe, expect, it, vi } from 'vitest';
import { eventsUrl, parseLiveEvent, subscribeEvents, type LiveState } from './events';

class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static last: FakeEventSource | null = null;
  readyState = 0;
  onopen: (() => void) | null = null;
  onerror: (() => void) | null = null;
  listeners = new Map<string, Set<(e: MessageEvent) => void>>();
  closed = false;
  constructor(
    public url: string,
    public init?: EventSourceInit,
  ) {
    FakeEventSource.last = this;
  }
  addEventListener(type: string, fn: (e: MessageEvent) => void) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(fn);
  }
  removeEventListener(type: string, fn: (e: MessageEvent) => void) {
    this.listeners.get(type)?.delete(fn);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  emit(type: string, data: string) {
    for (const fn of this.listeners.get(type) ?? []) fn(new MessageEvent(type, { data }));
  }
}

describe('live events', () => {
  it('builds the /api/events URL from the filter', () => {
    expect(eventsUrl({})).toBe('/api/events');
    expect(eventsUrl({ runId: '01J', workflow: 'hello' })).toBe('/api/events?runId=01J&workflow=hello');
  });

  it('parses run events and ignores anything else', () => {
    const data = { id: 5, at: '2026-01-01T00:00:00Z', kind: 'step_succeeded', stepId: 'greet', data: null, runId: 'R', workflow: 'hello' };
    expect(parseLiveEvent(JSON.stringify(data))).toEqual(data);
    expect(parseLiveEvent('not json')).toBeNull();
    expect(parseLiveEvent('{"hello":1}')).toBeNull();
  });

  it('subscribes with EventSource, reports the connection state and closes cleanly', () => {
    vi.stubGlobal('EventSource', FakeEventSource);
    const events: unknown[] = [];
    const states: LiveState[] = [];
    const sub = subscribeEvents({ workflow: 'hello' }, (e) => events.push(e), (s) => states.push(s));
    const source = FakeEventSource.last!;
    expect(source.url).toBe('/api/events?workflow=hello');
    source.readyState = 1;
    source.onopen?.();
    source.emit('run-event', JSON.stringify({ id: 1, at: 'x', kind: 'run_started', stepId: null, data: null, runId: 'R', workflow: 'hello' }));
    source.emit('run-event', 'garbage');
    source.emit('message', JSON.stringify({ runId: 'R', kind: 'other' }));
    expect(events).toHaveLength(1);
    source.readyState = 0;
    source.onerror?.();
    sub.close();
    expect(source.closed).toBe(true);
    expect(states).toEqual(['connecting', 'open', 'connecting', 'closed']);
  });
});
