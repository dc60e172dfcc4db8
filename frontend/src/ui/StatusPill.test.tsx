import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { RUN_STATUSES, STEP_STATUSES } from '../api/types';
import { statusTone } from '../lib/status';
import { StatusPill } from './StatusPill';

describe('StatusPill', () => {
  it('prints the status as text, so colour is never the only signal', () => {
    render(<StatusPill status="retry_scheduled" />);
    const pill = screen.getByText('retry scheduled');
    expect(pill).toHaveAttribute('data-status', 'retry_scheduled');
    expect(pill).toHaveClass('pill', 'tone-warning');
  });

  it.each([
    ['succeeded', 'tone-success'],
    ['dead', 'tone-danger'],
    ['failed', 'tone-danger'],
    ['running', 'tone-info'],
    ['queued', 'tone-neutral'],
    ['sleeping', 'tone-waiting'],
    ['waiting', 'tone-waiting'],
    ['cancelled', 'tone-muted'],
    ['skipped', 'tone-muted'],
  ])('colours %s with %s', (status, tone) => {
    render(<StatusPill status={status} />);
    expect(screen.getByText(status)).toHaveClass(tone);
  });

  it('animates only statuses that are in progress', () => {
    const { rerender } = render(<StatusPill status="running" />);
    expect(screen.getByText('running')).toHaveClass('pill--active');
    rerender(<StatusPill status="succeeded" />);
    expect(screen.getByText('succeeded')).not.toHaveClass('pill--active');
  });

  it('shows an unknown or missing status neutrally instead of failing', () => {
    const { rerender } = render(<StatusPill status="exploded" />);
    expect(screen.getByText('exploded')).toHaveClass('tone-neutral');
    rerender(<StatusPill status={null} />);
    expect(screen.getByText('unknown')).toHaveClass('tone-muted');
  });

  it('has a tone for every run and step status of the API', () => {
    for (const s of [...RUN_STATUSES, ...STEP_STATUSES]) {
      expect(statusTone(s), s).toMatch(/^(neutral|info|waiting|warning|success|danger|muted)$/);
    }
    expect(statusTone('dead')).not.toBe(statusTone('succeeded'));
  });
});
