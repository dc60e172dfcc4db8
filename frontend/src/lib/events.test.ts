import { describe, expect, it } from 'vitest';
import type { RunEvent } from '../api/types';
import { eventTone, summarizeEvent } from './events';

const event = (kind: string, data: RunEvent['data'], stepId: string | null = null): RunEvent => ({
  id: 1,
  at: '2026-12-03T18:00:00Z',
  kind,
  stepId,
  data,
});

describe('event lines', () => {
  it('say what terminating, admission and rate limits did', () => {
    expect(summarizeEvent(event('run_terminate_requested', { by: 'ops@example.com' }))).toBe(
      'Termination requested by ops@example.com: running steps stop at once',
    );
    expect(summarizeEvent(event('step_terminated', { attempt: 2 }, 'fetch'))).toBe(
      'Step fetch terminated (attempt 2): an operator stopped the run',
    );
    expect(summarizeEvent(event('run_admitted', { concurrencyKey: 'p7' }))).toBe(
      'Admitted to a concurrency slot of key p7',
    );
    expect(summarizeEvent(event('step_rate_limited', { rateLimit: 'openai' }, 'ask'))).toBe(
      'Step ask waits its turn under rate limit openai',
    );
    expect(summarizeEvent(event('step_waiting_for_slot', { concurrencyKey: 'crawler' }, 'fetch'))).toBe(
      'Step fetch waits in line for a slot of concurrency key crawler',
    );
  });

  it('say what a waiting step waits for: a callback, a child run or its items', () => {
    expect(summarizeEvent(event('step_waiting', { attempt: 1 }, 'hook'))).toBe('Step hook waits for a callback');
    expect(summarizeEvent(event('step_waiting', { attempt: 1, childRunId: 'R1' }, 'child'))).toBe(
      'Step child waits for child run R1',
    );
    expect(summarizeEvent(event('step_waiting', { attempt: 1, items: 40 }, 'squares'))).toBe(
      'Step squares runs its 40 items',
    );
  });

  it('colours stopped and held-back steps as warnings', () => {
    expect(eventTone('step_terminated')).toBe('warning');
    expect(eventTone('step_rate_limited')).toBe('warning');
    expect(eventTone('step_waiting_for_slot')).toBe('warning');
  });
});
