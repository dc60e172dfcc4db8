import { screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { deadLetter, deadRun } from '../../test/fixtures';
import { json, mockApi, renderPage, user } from '../../test/utils';
import { DeadLettersPage } from '../pages/DeadLettersPage';
import { ProjectPage } from '../pages/ProjectPage';
import { RunPage } from '../pages/RunPage';
import { RunsPage } from '../pages/RunsPage';
import { SchedulesPage } from '../pages/SchedulesPage';
import { hasRole } from './auth';

const project = {
  id: 3,
  name: 'Atlas',
  description: 'A map of everything',
  owner: 'ada@example.com',
  createdAt: '2026-01-01T00:00:00Z',
  analyses: [],
};

function api() {
  return mockApi([
    ['GET', '/api/workflows', () => json({ items: [{ name: 'hello', hash: 'h', steps: 3 }] })],
    ['GET', '/api/tasks', () => json({ items: [], nextCursor: null })],
    ['GET', /^\/api\/tasks\/[^/]+$/, () => json(deadRun())],
    ['GET', '/api/dead-letters', () => json({ items: [deadLetter()], nextCursor: null })],
    [
      'GET',
      '/api/schedules',
      () =>
        json({
          items: [
            {
              id: 1,
              name: 'nightly',
              workflow: 'hello',
              cron: '0 6 * * *',
              timezone: 'UTC',
              input: {},
              enabled: true,
              misfirePolicy: 'skip',
              overlapPolicy: 'skip',
              nextFireTimes: ['2026-01-02T06:00:00Z', '2026-01-03T06:00:00Z', '2026-01-04T06:00:00Z'],
              lastFiredAt: null,
            },
          ],
        }),
    ],
    ['GET', '/api/projects/3', () => json(project)],
  ]);
}

describe('roles', () => {
  it('are ordered viewer < operator < admin', () => {
    expect(hasRole('viewer', 'viewer')).toBe(true);
    expect(hasRole('viewer', 'operator')).toBe(false);
    expect(hasRole('operator', 'operator')).toBe(true);
    expect(hasRole('admin', 'operator')).toBe(true);
    expect(hasRole('operator', 'admin')).toBe(false);
    expect(hasRole('superuser', 'viewer')).toBe(false);
    expect(hasRole(null, 'viewer')).toBe(false);
  });
});

describe('a viewer sees no operator actions', () => {
  it('on a run', async () => {
    api();
    renderPage(<RunPage />, { route: '/runs/R', path: '/runs/:id', me: user('viewer') });
    expect(await screen.findByRole('group', { name: /Steps of run/ })).toBeInTheDocument();
    for (const name of ['Retry…', 'Replay…', 'Cancel run']) {
      expect(screen.queryByRole('button', { name })).not.toBeInTheDocument();
    }
  });

  it('on the runs list', async () => {
    api();
    renderPage(<RunsPage />, { route: '/runs', path: '/runs', me: user('viewer') });
    expect(await screen.findByText('No runs yet.')).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /filtered/ })).not.toBeInTheDocument();
  });

  it('on dead letters', async () => {
    api();
    renderPage(<DeadLettersPage />, { route: '/dead-letters', path: '/dead-letters', me: user('viewer') });
    expect(await screen.findByRole('link', { name: 'Inspect dead letter 77' })).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /Redrive/ })).not.toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /Purge/ })).not.toBeInTheDocument();
  });

  it('on schedules', async () => {
    api();
    renderPage(<SchedulesPage />, { route: '/schedules', path: '/schedules', me: user('viewer') });
    expect(await screen.findByText('nightly')).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /Pause|Trigger|Delete|New schedule/ })).not.toBeInTheDocument();
  });

  it('on a project', async () => {
    api();
    renderPage(<ProjectPage />, { route: '/projects/3', path: '/projects/:id', me: user('viewer') });
    expect(await screen.findByRole('heading', { name: 'Atlas' })).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: 'Analyze' })).not.toBeInTheDocument();
    expect(screen.queryByRole('button', { name: 'Summarize' })).not.toBeInTheDocument();
  });
});

describe('an operator sees the actions', () => {
  it('on a dead run: retry, replay and (disabled for a finished run) cancel', async () => {
    api();
    renderPage(<RunPage />, { route: '/runs/R', path: '/runs/:id', me: user('operator') });
    expect(await screen.findByRole('button', { name: 'Retry…' })).toBeEnabled();
    expect(screen.getByRole('button', { name: 'Replay…' })).toBeEnabled();
    expect(screen.getByRole('button', { name: 'Cancel run' })).toBeDisabled();
  });

  it('on dead letters, schedules and projects', async () => {
    api();
    const { unmount } = renderPage(<DeadLettersPage />, { route: '/dead-letters', path: '/dead-letters', me: user('operator') });
    expect(await screen.findByRole('button', { name: 'Redrive dead letter 77' })).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Purge dead letter 77' })).toBeInTheDocument();
    unmount();
    const s = renderPage(<SchedulesPage />, { route: '/schedules', path: '/schedules', me: user('operator') });
    expect(await screen.findByRole('button', { name: 'Pause nightly' })).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Trigger now: nightly' })).toBeInTheDocument();
    s.unmount();
    renderPage(<ProjectPage />, { route: '/projects/3', path: '/projects/:id', me: user('admin') });
    expect(await screen.findByRole('button', { name: 'Analyze' })).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Summarize' })).toBeInTheDocument();
  });
});
