// Subscribes a component to `/api/events` while it is mounted.
import { useEffect, useRef, useState } from 'react';
import { subscribeEvents, type EventFilter, type LiveState } from '../api/events';
import type { LiveEvent } from '../api/types';

/**
 * Calls `onEvent` for each live run event matching `filter`, and reports whether the
 * stream is open. Pages fall back to polling while it is not.
 */
export function useLiveEvents(
  filter: EventFilter,
  onEvent: (event: LiveEvent) => void,
  enabled = true,
): LiveState {
  const [state, setState] = useState<LiveState>('connecting');
  const handler = useRef(onEvent);
  useEffect(() => {
    handler.current = onEvent;
  });
  const { runId, workflow } = filter;
  useEffect(() => {
    if (!enabled) {
      setState('closed');
      return;
    }
    const sub = subscribeEvents({ runId, workflow }, (e) => handler.current(e), setState);
    return () => sub.close();
  }, [runId, workflow, enabled]);
  return state;
}

/** Calls `fn` at most once per `ms`, trailing calls included. */
export function throttle(fn: () => void, ms: number): { call: () => void; cancel: () => void } {
  let timer: ReturnType<typeof setTimeout> | null = null;
  let last = 0;
  return {
    call() {
      const now = Date.now();
      const wait = last + ms - now;
      if (wait <= 0 && !timer) {
        last = now;
        fn();
        return;
      }
      if (!timer) {
        timer = setTimeout(() => {
          timer = null;
          last = Date.now();
          fn();
        }, Math.max(0, wait));
      }
    },
    cancel() {
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}
