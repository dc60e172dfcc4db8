import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter } from 'react-router';
import { describe, expect, it } from 'vitest';
import { deadRun, taskSummary, tokenView } from '../../test/fixtures';
import { apiError, json, mockApi, renderPage, testQueryClient, user } from '../../test/utils';
import type { Schedule, TaskDetail, UserAccount } from '../api/types';
import { AppProviders, AppRoutes } from '../App';
import { copiedSteps, summarizeEvent } from '../lib/events';
import { attemptLabel } from '../lib/status';
import { analysisFindings, ProjectPage } from '../pages/ProjectPage';
import { RunPage } from '../pages/RunPage';
import { backfillRunIds, fromLocalInput, SchedulesPage, scheduleChanges, toLocalInput } from '../pages/SchedulesPage';
import { formatCost, UsagePage } from '../pages/UsagePage';
import { tokensPerUser, UsersPage } from '../pages/UsersPage';

const ev = (kind: string, data: unknown = {}, stepId: string | null = null) => ({ id: 1, at: '2026-01-01T12:00:00Z', kind, stepId, data: data as never });

describe('event summaries', () => {
  it('says what happened in one line', () => {
    expect(summarizeEvent(ev('run_queued', { workflow: 'hello' }))).toBe('Queued');
    expect(summarizeEvent(ev('run_queued', { replayOf: '01JOLD' }))).toBe('Queued as a replay of run 01JOLD');
    expect(summarizeEvent(ev('step_started', { attempt: 2, worker: 'w-1' }, 'greet'))).toBe('Step greet started (attempt 2) on w-1');
    expect(summarizeEvent(ev('step_retry_scheduled', { attempt: 1, delayMs: 2000, error: 'refused\nmore' }, 'call'))).toBe(
      'Step call failed (attempt 1), retry in 2.0 s: refused',
    );
    expect(summarizeEvent(ev('step_waiting', { attempt: 1, timeoutAt: '2026-01-01T14:00:00Z' }, 'approve'))).toMatch(
      /^Step approve waits for a callback \(times out at /,
    );
    expect(summarizeEvent(ev('run_replay_of', { replayOf: '01JOLD', fromStep: 'b', copied: ['a'] }))).toBe(
      'Replays run 01JOLD from step b; copied a',
    );
    expect(summarizeEvent(ev('something_new', null, 'x'))).toBe('Something new (step x)');
  });

  it('cuts a long error to one line', () => {
    const line = summarizeEvent(ev('run_dead', { error: 'x'.repeat(2000) }));
    expect(line.length).toBeLessThan(200);
    expect(line.endsWith('…')).toBe(true);
  });

  it('knows which steps a replay copied', () => {
    expect([...copiedSteps([ev('run_replay_of', { copied: ['greet', 'pause'] })])]).toEqual(['greet', 'pause']);
    expect(copiedSteps([]).size).toBe(0);
  });
});

describe('step labels', () => {
  it('says waiting (or sleeping) for the open attempt of a waiting step', () => {
    const open = { status: 'running', finishedAt: null };
    expect(attemptLabel({ status: 'waiting', kind: 'wait' }, open)).toBe('waiting');
    expect(attemptLabel({ status: 'waiting', kind: 'sleep' }, open)).toBe('sleeping');
    expect(attemptLabel({ status: 'running', kind: 'http' }, open)).toBe('running');
  });

  function replay(): TaskDetail {
    const run = deadRun();
    return {
      ...run,
      id: '01JREPLAY',
      status: 'running',
      error: null,
      replayOf: '01JDEAD000000000000000000B',
      deadLetter: null,
      steps: [
        { ...run.steps[0]!, attemptCount: 0, attempts: [] },
        {
          ...run.steps[2]!,
          id: 'approve',
          kind: 'wait',
          status: 'waiting',
          error: null,
          finishedAt: null,
          wakeAt: new Date(Date.now() + 2 * 3_600_000).toISOString(),
          attemptCount: 1,
          attempts: [{ attempt: 1, status: 'running', worker: 'w', startedAt: new Date().toISOString(), finishedAt: null, durationMs: null, error: null, retryDelayMs: null }],
        },
      ],
      events: [ev('run_replay_of', { replayOf: '01JDEAD000000000000000000B', copied: ['greet'] })],
    };
  }

  it('shows a copied step as copied from the source run, and a waiting step as waiting with its timeout', async () => {
    mockApi([['GET', '/api/tasks/01JREPLAY', () => json(replay())]]);
    renderPage(<RunPage />, { route: '/runs/01JREPLAY', path: '/runs/:id', me: user('viewer') });
    // the waiting step is shown first
    const waiting = (await screen.findByRole('heading', { name: 'Step approve' })).closest('section')!;
    expect(waiting).toHaveTextContent('Times out');
    expect(waiting).not.toHaveTextContent('Wakes');
    const attempts = within(waiting).getByRole('table', { name: 'Attempts of step approve' });
    expect(within(attempts).getByText('waiting')).toBeInTheDocument();
    expect(attempts).toHaveTextContent(/times out in 2h/);
    expect(within(attempts).queryByText('running')).not.toBeInTheDocument();

    await userEvent.click(screen.getByRole('button', { name: /^greet / }));
    const copied = screen.getByRole('heading', { name: 'Step greet' }).closest('section')!;
    expect(copied).toHaveTextContent('Copied from run 01JDEAD000000000000000000B');
    expect(copied).toHaveTextContent('none in this run (copied from run 01JDEAD000000000000000000B)');
    expect(copied).not.toHaveTextContent(/Attempts\s*0/);
  });
});

describe('a long run error', () => {
  it('shows its start, and the whole of it on demand', async () => {
    const error = `step confirm failed: ${'y'.repeat(2000)}`;
    mockApi([['GET', '/api/tasks/01JDEAD000000000000000000B', () => json({ ...deadRun(), error })]]);
    renderPage(<RunPage />, { route: '/runs/01JDEAD000000000000000000B', path: '/runs/:id', me: user('viewer') });
    const note = await screen.findByRole('note');
    const whole = note.querySelector('details pre')!.textContent!;
    expect(note.textContent!.replace(whole, '').length).toBeLessThan(400);
    expect(within(note).getByText(/^Show the whole error \(2,021 characters\)$/)).toBeInTheDocument();
    expect(note.querySelector('details pre')).toHaveTextContent(error);
  });
});

describe('project analysis', () => {
  const result = {
    projectId: 3,
    summary: 'Billing: 75% of 4 finished runs succeeded (3 succeeded, 1 dead). Reliability is below 80%.',
    findings: ['75% of 4 finished runs succeeded (3 succeeded, 1 dead).', 'Reliability is below 80%: look at the dead letters.'],
    successRate: 0.75,
    narratedBy: 'built-in analyze',
  };

  it('reads findings, the success rate and only a model’s narration', () => {
    expect(analysisFindings(result)).toEqual({ findings: result.findings, successRate: 0.75, narration: null });
    expect(analysisFindings({ ...result, narratedBy: 'gpt-4o-mini' })?.narration).toBe(result.summary);
    expect(analysisFindings({ text: 'x' })).toBeNull();
  });

  it('lists the findings with a success-rate bar, and shows a dead analysis’ error instead of “No result.”', async () => {
    mockApi([
      [
        'GET',
        '/api/projects/3',
        () =>
          json({
            id: 3,
            name: 'Billing',
            description: 'd',
            owner: 'a@b.c',
            createdAt: '2026-01-01T00:00:00Z',
            analyses: [
              { taskId: '01JA', workflow: 'analyze_project', status: 'succeeded', result, error: null, createdAt: '2026-01-02T00:00:00Z' },
              { taskId: '01JB', workflow: 'analyze_project', status: 'dead', result: null, error: 'step facts failed: there is no project 3', createdAt: '2026-01-01T00:00:00Z' },
            ],
          }),
      ],
      ['GET', /^\/api\/tasks\//, () => json({ ...deadRun(), id: '01JA', status: 'succeeded', error: null, deadLetter: null })],
    ]);
    renderPage(<ProjectPage />, { route: '/projects/3', path: '/projects/:id', me: user('viewer') });
    const results = (await screen.findByRole('heading', { name: 'Results' })).closest('section')!;
    await within(results).findByText('75%');
    const findings = within(results).getAllByRole('list')[0]!;
    expect(within(findings).getAllByRole('listitem').map((li) => li.textContent)).toEqual(result.findings);
    expect(results).toHaveTextContent('of finished runs succeeded');
    expect(results).toHaveTextContent('The run died: step facts failed: there is no project 3');
    expect(results).not.toHaveTextContent('No result.');
  });
});

describe('Users & tokens', () => {
  const people = (): UserAccount[] => [
    { id: 1, email: 'admin@example.com', name: 'Admin Person', role: 'admin', createdAt: '2026-01-01T00:00:00Z', disabled: false },
    { id: 2, email: 'ada@example.com', name: 'Ada', role: 'viewer', createdAt: '2026-01-02T00:00:00Z', disabled: false },
  ];

  it('counts active tokens per user and service', () => {
    const counts = tokensPerUser([
      tokenView({ id: 1, userId: 2 }),
      tokenView({ id: 2, userId: 2, revoked: true }),
      tokenView({ id: 3, userId: null }),
    ]);
    expect(counts.get('2')).toBe(1);
    expect(counts.get('service')).toBe(1);
  });

  it('lists users, creates one, changes a role and deletes after confirmation', async () => {
    const items = people();
    const { requests } = mockApi([
      ['GET', '/api/users', () => json({ items })],
      ['GET', '/api/tokens', () => json({ items: [tokenView({ id: 7, userId: 2 })] })],
      [
        'POST',
        '/api/users',
        (req) => {
          const b = req.body as { email: string; name: string; role: 'operator' };
          items.push({ id: 3, email: b.email, name: b.name, role: b.role, createdAt: new Date().toISOString(), disabled: false });
          return json(items[2], 201);
        },
      ],
      ['PATCH', '/api/users/2', (req) => json({ ...items[1], ...(req.body as object) })],
      ['DELETE', '/api/users/2', () => ({ status: 204 })],
    ]);
    renderPage(<UsersPage />, { route: '/users', path: '/users', me: user('admin') });
    const table = await screen.findByRole('table', { name: 'Users' });
    const ada = within(table).getByText('Ada').closest('tr')!;
    await waitFor(() => expect(ada.querySelector('td.num')).toHaveTextContent('1'));
    expect(within(table).getByText('(you)')).toBeInTheDocument();
    expect(within(table).getByRole('button', { name: 'Delete… admin@example.com' })).toBeDisabled();

    await userEvent.click(screen.getByRole('button', { name: 'New user' }));
    let dialog = screen.getByRole('dialog', { name: 'New user' });
    await userEvent.type(within(dialog).getByLabelText('Email'), 'grace@example.com');
    await userEvent.type(within(dialog).getByLabelText('Name'), 'Grace');
    await userEvent.selectOptions(within(dialog).getByLabelText('Role'), 'operator');
    await userEvent.type(within(dialog).getByLabelText('Password'), 'short');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Create user' }));
    expect(within(dialog).getByText('At least 8 characters.')).toBeInTheDocument();
    await userEvent.type(within(dialog).getByLabelText('Password'), '-and-long');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Create user' }));
    const created = await screen.findByText('grace@example.com can now sign in as operator.');
    await waitFor(() => expect(created).toHaveFocus());

    await userEvent.click(within(table).getByRole('button', { name: 'Edit… ada@example.com' }));
    dialog = screen.getByRole('dialog', { name: 'Edit ada@example.com' });
    await userEvent.selectOptions(within(dialog).getByLabelText('Role'), 'operator');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Save changes' }));
    await screen.findByText('ada@example.com updated.');

    await userEvent.click(within(table).getByRole('button', { name: 'Delete… ada@example.com' }));
    await userEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Delete user' }));
    await screen.findByText('ada@example.com deleted, with their sessions and tokens.');
    expect(requests.filter((r) => r.method !== 'GET').map((r) => [r.method, r.path, r.body])).toEqual([
      ['POST', '/api/users', { email: 'grace@example.com', name: 'Grace', password: 'short-and-long', role: 'operator' }],
      ['PATCH', '/api/users/2', { role: 'operator' }],
      ['DELETE', '/api/users/2', undefined],
    ]);
  });

  it('is in the navigation for admins only', async () => {
    for (const role of ['admin', 'operator'] as const) {
      mockApi([
        ['GET', '/api/auth/me', () => json({ user: user(role) })],
        ['GET', '/api/workers', () => json({ items: [], stuck: [] })],
      ]);
      const { unmount } = render(
        <AppProviders client={testQueryClient()}>
          <MemoryRouter initialEntries={['/workers']}>
            <AppRoutes />
          </MemoryRouter>
        </AppProviders>,
      );
      const nav = await screen.findByRole('navigation', { name: 'Main' });
      expect(within(nav).queryByRole('link', { name: 'Users & tokens' }) !== null).toBe(role === 'admin');
      expect(within(nav).getByRole('link', { name: 'Usage & cost' })).toHaveAttribute('href', '/usage');
      unmount();
    }
  });
});

describe('Usage & cost', () => {
  it('formats costs', () => {
    expect(formatCost(0)).toBe('$0.00');
    expect(formatCost(0.0042)).toBe('$0.0042');
    expect(formatCost(12.5)).toBe('$12.50');
  });

  it('shows totals, a line per workflow, project and user, and names unpriced models', async () => {
    const line = {
      userId: 1,
      user: 'admin@example.com',
      projectId: 3,
      project: 'Billing',
      workflow: 'analyze_project',
      runs: 4,
      steps: 9,
      promptTokens: 1200,
      completionTokens: 300,
      estimatedCost: 0.45,
      unpricedModels: ['local-llm'],
    };
    const { requests } = mockApi([
      [
        'GET',
        '/api/billing/usage',
        () => json({ from: '2026-01-01T00:00:00Z', to: '2026-01-31T00:00:00Z', items: [line], totals: { ...line, workflow: '*', user: null, userId: null, project: null, projectId: null } }),
      ],
    ]);
    renderPage(<UsagePage />, { route: '/usage', path: '/usage', me: user('viewer') });
    const totals = await screen.findByRole('region', { name: 'Totals' });
    expect(totals).toHaveTextContent('$0.45');
    expect(totals).toHaveTextContent('1,500');
    expect(screen.getByText(/No price for local-llm/)).toBeInTheDocument();
    const table = screen.getByRole('table', { name: /^Usage from/ });
    expect(within(table).getByRole('link', { name: 'Billing' })).toHaveAttribute('href', '/projects/3');
    await userEvent.selectOptions(screen.getByLabelText('Period'), '7d');
    await waitFor(() => expect(requests.at(-1)!.url.searchParams.get('since')).toBe('7d'));
    expect(requests[0]!.url.searchParams.get('since')).toBe('30d');
  });
});

describe('schedule editing', () => {
  const nightly = (): Schedule => ({
    id: 's1',
    name: 'nightly',
    workflow: 'run_report',
    cron: '0 6 * * *',
    timezone: 'UTC',
    input: { hours: 24 },
    enabled: true,
    misfirePolicy: 'fire_once',
    overlapPolicy: 'allow',
    nextFireTimes: ['2026-01-02T06:00:00Z'],
    lastFiredAt: null,
    source: 'api',
  });

  it('sends only what changed', () => {
    const s = nightly();
    const form = { name: 'nightly', workflow: 'run_report', cron: '0 7 * * *', timezone: 'UTC', input: '', misfirePolicy: 'fire_once', overlapPolicy: 'skip', enabled: true };
    expect(scheduleChanges(s, form, { hours: 24 })).toEqual({ cron: '0 7 * * *', overlapPolicy: 'skip' });
    expect(scheduleChanges(s, { ...form, cron: s.cron, overlapPolicy: 'allow' }, { hours: 48 })).toEqual({ input: { hours: 48 } });
  });

  it('converts local times for a backfill and reads its runs', () => {
    const ms = Date.parse('2026-01-02T06:30:00Z');
    expect(fromLocalInput(toLocalInput(ms))).toBe('2026-01-02T06:30:00.000Z');
    expect(fromLocalInput('yesterday')).toBeNull();
    expect(backfillRunIds({ runs: ['a', { taskId: 'b' }, { id: 'c' }] })).toEqual(['a', 'b', 'c']);
    expect(backfillRunIds({})).toEqual([]);
  });

  function api(patch = (body: unknown) => json({ ...nightly(), ...(body as object) })) {
    return mockApi([
      ['GET', '/api/schedules', () => json({ items: [nightly()] })],
      ['GET', '/api/workflows', () => json({ items: [{ name: 'run_report', hash: 'h', steps: 3 }, { name: 'hello', hash: 'g', steps: 3 }] })],
      ['PATCH', '/api/schedules/s1', (req) => patch(req.body)],
      ['POST', '/api/schedules/s1/backfill', () => json({ runs: ['01JB1', '01JB2', '01JB3'] })],
    ]);
  }

  it('edits a schedule: everything but the name, and only the changes are sent', async () => {
    const { requests } = api();
    renderPage(<SchedulesPage />, { route: '/schedules', path: '/schedules', me: user('operator') });
    await userEvent.click(await screen.findByRole('button', { name: 'Edit… nightly' }));
    const dialog = screen.getByRole('dialog', { name: 'Edit schedule “nightly”' });
    expect(within(dialog).getByLabelText('Name')).toHaveAttribute('readonly');
    expect(within(dialog).getByLabelText('Input (JSON)')).toHaveValue('{\n  "hours": 24\n}');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Save schedule' }));
    expect(within(dialog).getByText('Nothing changed.')).toBeInTheDocument();
    const cron = within(dialog).getByLabelText('Cron expression');
    await userEvent.clear(cron);
    await userEvent.type(cron, '30 5 * * 1-5');
    await userEvent.selectOptions(within(dialog).getByLabelText('When the previous run is still going'), 'cancel_previous');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Save schedule' }));
    expect(await screen.findByText('Schedule “nightly” saved.')).toBeInTheDocument();
    expect(requests.filter((r) => r.method === 'PATCH').map((r) => r.body)).toEqual([{ cron: '30 5 * * 1-5', overlapPolicy: 'cancel_previous' }]);
  });

  it('shows the server’s refusal of an edit in the dialog', async () => {
    api(() => apiError(422, 'invalid_input', 'cron: expected 5 or 6 fields'));
    renderPage(<SchedulesPage />, { route: '/schedules', path: '/schedules', me: user('operator') });
    await userEvent.click(await screen.findByRole('button', { name: 'Edit… nightly' }));
    const dialog = screen.getByRole('dialog', { name: 'Edit schedule “nightly”' });
    await userEvent.type(within(dialog).getByLabelText('Cron expression'), ' *');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Save schedule' }));
    expect(await within(dialog).findByRole('alert')).toHaveTextContent('cron: expected 5 or 6 fields');
  });

  it('backfills a range and links the runs it started', async () => {
    const { requests } = api();
    renderPage(<SchedulesPage />, { route: '/schedules', path: '/schedules', me: user('operator') });
    await userEvent.click(await screen.findByRole('button', { name: 'Backfill… nightly' }));
    const dialog = screen.getByRole('dialog', { name: 'Backfill “nightly”' });
    const from = within(dialog).getByLabelText('From');
    const to = within(dialog).getByLabelText('To');
    await userEvent.clear(from);
    await userEvent.type(from, '2026-01-05T00:00');
    await userEvent.clear(to);
    await userEvent.type(to, '2026-01-01T00:00');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Start runs' }));
    expect(within(dialog).getByText('“From” must be before “to”.')).toBeInTheDocument();
    await userEvent.clear(to);
    await userEvent.type(to, '2026-01-08T00:00');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Start runs' }));
    const status = await within(screen.getByRole('dialog')).findByText('Started 3 runs of run_report, one per tick in the range.');
    await waitFor(() => expect(status.closest('[tabindex="-1"]')).toHaveFocus());
    expect(within(screen.getByRole('dialog')).getByRole('link', { name: '01JB2' })).toHaveAttribute('href', '/runs/01JB2');
    const body = requests.find((r) => r.path.endsWith('/backfill'))!.body as { from: string; to: string };
    expect(body).toEqual({ from: new Date('2026-01-05T00:00').toISOString(), to: new Date('2026-01-08T00:00').toISOString() });
  });
});

describe('focus on navigation', () => {
  it('moves focus to the new page’s heading', async () => {
    mockApi([
      ['GET', '/api/auth/me', () => json({ user: user('viewer') })],
      ['GET', '/api/workers', () => json({ items: [], stuck: [] })],
      ['GET', '/api/tasks', () => json({ items: [taskSummary()], nextCursor: null })],
      ['GET', '/api/workflows', () => json({ items: [] })],
    ]);
    render(
      <AppProviders client={testQueryClient()}>
        <MemoryRouter initialEntries={['/workers']}>
          <AppRoutes />
        </MemoryRouter>
      </AppProviders>,
    );
    const nav = await screen.findByRole('navigation', { name: 'Main' });
    await waitFor(() => expect(screen.getByRole('heading', { level: 1, name: 'Workers' })).toHaveFocus());
    await userEvent.click(within(nav).getByRole('link', { name: 'Runs' }));
    await waitFor(() => expect(screen.getByRole('heading', { level: 1, name: 'Runs' })).toHaveFocus());
  });
});
