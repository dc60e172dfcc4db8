import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { deadLetter, taskSummary } from '../../test/fixtures';
import { apiError, json, mockApi, renderPage, user } from '../../test/utils';
import type { Analysis, RunStatus } from '../api/types';
import { DeadLetterPage } from '../pages/DeadLetterPage';
import { DeadLettersPage } from '../pages/DeadLettersPage';
import { OverviewPage } from '../pages/OverviewPage';
import { ProjectPage, resultText } from '../pages/ProjectPage';
import { ProjectsPage } from '../pages/ProjectsPage';
import { RunsPage } from '../pages/RunsPage';
import { SchedulesPage } from '../pages/SchedulesPage';
import { WorkflowPage } from '../pages/WorkflowPage';

describe('Runs page', () => {
  it('loads the runs the URL filters ask for, and refetches when a filter changes', async () => {
    const { requests } = mockApi([
      ['GET', '/api/workflows', () => json({ items: [{ name: 'hello', hash: 'h', steps: 3 }] })],
      [
        'GET',
        '/api/tasks',
        (req) =>
          json({
            items: [taskSummary({ status: (req.url.searchParams.get('status') as RunStatus) ?? 'succeeded' })],
            nextCursor: null,
          }),
      ],
    ]);
    renderPage(<RunsPage />, { route: '/runs?workflow=hello&since=1h', path: '/runs' });
    expect(await screen.findByRole('link', { name: '01JRUN0000000000000000000A' })).toHaveAttribute('href', '/runs/01JRUN0000000000000000000A');
    expect(requests.filter((r) => r.path === '/api/tasks').map((r) => r.url.search)).toEqual(['?limit=50&workflow=hello&since=1h']);

    await userEvent.selectOptions(screen.getByLabelText('Status'), 'dead');
    await waitFor(() =>
      expect(requests.filter((r) => r.path === '/api/tasks').map((r) => r.url.search)).toContain('?limit=50&status=dead&workflow=hello&since=1h'),
    );
    expect(await screen.findByText('dead', { selector: '.pill' })).toBeInTheDocument();
    expect(screen.getByLabelText('Workflow')).toHaveValue('hello');
    expect(screen.getByLabelText('Created')).toHaveValue('1h');
  });

  it('searches text on Enter and pages with Load more', async () => {
    const { requests } = mockApi([
      ['GET', '/api/workflows', () => json({ items: [] })],
      [
        'GET',
        '/api/tasks',
        (req) =>
          req.url.searchParams.get('cursor')
            ? json({ items: [taskSummary({ id: 'SECOND' })], nextCursor: null })
            : json({ items: [taskSummary({ id: 'FIRST' })], nextCursor: 'next-1' }),
      ],
    ]);
    renderPage(<RunsPage />, { route: '/runs', path: '/runs' });
    await screen.findByRole('link', { name: 'FIRST' });
    await userEvent.click(screen.getByRole('button', { name: 'Load more' }));
    expect(await screen.findByRole('link', { name: 'SECOND' })).toBeInTheDocument();
    expect(requests.at(-1)!.url.searchParams.get('cursor')).toBe('next-1');

    await userEvent.type(screen.getByLabelText('Search'), 'refused{Enter}');
    await waitFor(() => expect(requests.some((r) => r.url.searchParams.get('q') === 'refused')).toBe(true));
  });

  it('sends no text search while the box is empty, and says so when the server cannot search', async () => {
    const { requests } = mockApi([
      ['GET', '/api/workflows', () => json({ items: [] })],
      [
        'GET',
        '/api/tasks',
        // What a server without `q` answers: axum's query rejection, in plain text.
        (req) =>
          req.url.searchParams.has('q')
            ? { status: 400, text: 'Failed to deserialize query string: q: unknown field `q`' }
            : json({ items: [taskSummary({ id: 'ONLY' })], nextCursor: null }),
      ],
    ]);
    renderPage(<RunsPage />, { route: '/runs?q=', path: '/runs' });
    await screen.findByRole('link', { name: 'ONLY' });
    expect(requests.filter((r) => r.path === '/api/tasks').every((r) => !r.url.searchParams.has('q'))).toBe(true);

    await userEvent.type(screen.getByLabelText('Search'), 'refused{Enter}');
    expect(await screen.findByText('This Cairn server cannot search runs by text.')).toBeInTheDocument();
    await userEvent.click(screen.getByRole('button', { name: 'Clear search' }));
    expect(await screen.findByRole('link', { name: 'ONLY' })).toBeInTheDocument();
    expect(screen.getByLabelText('Search')).toHaveValue('');
  });

  it('has an empty state that depends on the filters, and an error state with retry', async () => {
    let fail = true;
    mockApi([
      ['GET', '/api/workflows', () => json({ items: [] })],
      ['GET', '/api/tasks', () => (fail ? apiError(503, 'unavailable', 'database unreachable') : json({ items: [], nextCursor: null }))],
    ]);
    renderPage(<RunsPage />, { route: '/runs?status=dead', path: '/runs' });
    expect(await screen.findByRole('alert')).toHaveTextContent('database unreachable');
    fail = false;
    await userEvent.click(screen.getByRole('button', { name: 'Try again' }));
    expect(await screen.findByText('No runs match these filters.')).toBeInTheDocument();
  });
});

describe('Projects', () => {
  it('lists projects and creates one', async () => {
    const { requests } = mockApi([
      ['GET', '/api/projects', () => json({ items: [] })],
      ['POST', '/api/projects', (req) => json({ id: 9, ...(req.body as object), owner: 'me', createdAt: '2026-01-01T00:00:00Z', analyses: [] }, 201)],
    ]);
    renderPage(<ProjectsPage />, { route: '/projects', path: '/projects', me: user('operator') });
    expect(await screen.findByText('No projects yet.')).toBeInTheDocument();
    await userEvent.click(screen.getByRole('button', { name: 'New project' }));
    const dialog = screen.getByRole('dialog', { name: 'New project' });
    expect(within(dialog).getByLabelText('Name')).toHaveFocus();
    await userEvent.type(within(dialog).getByLabelText('Name'), 'Atlas');
    await userEvent.type(within(dialog).getByLabelText('Description'), 'Maps');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Create project' }));
    expect(await screen.findByText('elsewhere')).toBeInTheDocument(); // navigated to /projects/9
    expect(requests.find((r) => r.method === 'POST')!.body).toEqual({ name: 'Atlas', description: 'Maps' });
  });

  it('starts an analysis and follows its run live until the result shows', async () => {
    let runStatus: RunStatus = 'queued';
    const analyses: Analysis[] = [];
    const { requests } = mockApi([
      [
        'GET',
        '/api/projects/3',
        () => json({ id: 3, name: 'Atlas', description: null, owner: { name: 'Ada' }, createdAt: '2026-01-01T00:00:00Z', analyses }),
      ],
      [
        'POST',
        '/api/agents/analyze',
        () => {
          analyses.push({ taskId: 'T1', workflow: 'analyze', status: 'queued', result: null, createdAt: '2026-01-01T00:01:00Z' });
          return json({ taskId: 'T1', status: 'queued' }, 201);
        },
      ],
      [
        'GET',
        '/api/tasks/T1',
        () => json({ ...taskSummary({ id: 'T1', workflow: 'analyze', status: runStatus }), definitionHash: 'h', input: {}, output: null, steps: [], events: [], deadLetter: null }),
      ],
    ]);
    renderPage(<ProjectPage />, { route: '/projects/3', path: '/projects/:id', me: user('operator') });
    expect(await screen.findByText('No agent has run on this project yet.')).toBeInTheDocument();
    expect(screen.getByText(/Owner Ada/)).toBeInTheDocument();
    await userEvent.click(screen.getByRole('button', { name: 'Analyze' }));
    expect(requests.find((r) => r.path === '/api/agents/analyze')!.body).toEqual({ projectId: 3 });
    const live = await screen.findByRole('heading', { name: 'Analysis you started' });
    const panel = live.closest('section')!;
    expect(await within(panel).findByText('queued')).toBeInTheDocument();

    // the run finishes; the page polls (no EventSource in tests) and then shows the result
    runStatus = 'succeeded';
    analyses[0] = { ...analyses[0]!, status: 'succeeded', result: { text: 'Atlas is healthy.' } };
    expect(await within(panel).findByText('succeeded', {}, { timeout: 4000 })).toBeInTheDocument();
    expect(await screen.findByText('Atlas is healthy.', {}, { timeout: 4000 })).toBeInTheDocument();
  });

  it('reads the text out of agent results', () => {
    expect(resultText('plain')).toBe('plain');
    expect(resultText({ summary: 'short' })).toBe('short');
    expect(resultText({ score: 3 })).toBeNull();
    expect(resultText(null)).toBeNull();
  });
});

describe('Dead letters', () => {
  it('redrives from the list', async () => {
    const { requests } = mockApi([
      ['GET', '/api/workflows', () => json({ items: [] })],
      ['GET', '/api/dead-letters', () => json({ items: [deadLetter()], nextCursor: null })],
      ['POST', '/api/dead-letters/77/redrive', () => json({ taskId: '01JDEAD000000000000000000B', status: 'queued' })],
    ]);
    renderPage(<DeadLettersPage />, { route: '/dead-letters', path: '/dead-letters', me: user('operator') });
    await userEvent.click(await screen.findByRole('button', { name: 'Redrive dead letter 77' }));
    expect(await screen.findByText(/Redriven: run/)).toHaveTextContent('Redriven: run 01JDEAD000000000000000000B is queued.');
    expect(requests.some((r) => r.method === 'POST' && r.path === '/api/dead-letters/77/redrive')).toBe(true);
  });

  it('purges only after confirmation', async () => {
    const { requests } = mockApi([
      ['GET', '/api/workflows', () => json({ items: [] })],
      ['GET', '/api/dead-letters', () => json({ items: [deadLetter()], nextCursor: null })],
      ['POST', '/api/dead-letters/77/purge', () => ({ status: 204 })],
    ]);
    renderPage(<DeadLettersPage />, { route: '/dead-letters', path: '/dead-letters', me: user('operator') });
    await userEvent.click(await screen.findByRole('button', { name: 'Purge dead letter 77' }));
    const dialog = screen.getByRole('alertdialog', { name: 'Purge this dead letter?' });
    await userEvent.click(within(dialog).getByRole('button', { name: 'Cancel' }));
    expect(requests.some((r) => r.method === 'POST')).toBe(false);
    await userEvent.click(screen.getByRole('button', { name: 'Purge dead letter 77' }));
    await userEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Purge' }));
    expect(await screen.findByText('Dead letter purged.')).toBeInTheDocument();
    expect(requests.filter((r) => r.method === 'POST').map((r) => r.path)).toEqual(['/api/dead-letters/77/purge']);
  });

  it('inspects one failure: error, every attempt and the input', async () => {
    mockApi([['GET', '/api/dead-letters/77', () => json(deadLetter())]]);
    renderPage(<DeadLetterPage />, { route: '/dead-letters/77', path: '/dead-letters/:id', me: user('viewer') });
    expect(await screen.findByLabelText('Error')).toHaveTextContent('connection refused again');
    const attempts = screen.getByRole('table', { name: 'Every attempt of the failed step' });
    expect(within(attempts).getAllByRole('row')).toHaveLength(3);
    expect(screen.getByLabelText('Run input')).toHaveTextContent('"name": "Ada"');
    expect(screen.queryByRole('button', { name: 'Redrive' })).not.toBeInTheDocument();
  });
});

describe('Schedules', () => {
  it('lists next fire times and creates a schedule', async () => {
    const items: unknown[] = [];
    const { requests } = mockApi([
      ['GET', '/api/schedules', () => json({ items })],
      ['GET', '/api/workflows', () => json({ items: [{ name: 'run_report', hash: 'h', steps: 3 }] })],
      [
        'POST',
        '/api/schedules',
        (req) => {
          const s = { id: 1, ...(req.body as object), nextFireTimes: ['2026-01-02T06:00:00Z', '2026-01-03T06:00:00Z', '2026-01-04T06:00:00Z'], lastFiredAt: null };
          items.push(s);
          return json(s, 201);
        },
      ],
    ]);
    renderPage(<SchedulesPage />, { route: '/schedules', path: '/schedules', me: user('operator') });
    expect(await screen.findByText('No schedules yet.')).toBeInTheDocument();
    await userEvent.click(screen.getByRole('button', { name: 'New schedule' }));
    const dialog = screen.getByRole('dialog', { name: 'New schedule' });
    await userEvent.type(within(dialog).getByLabelText('Name'), 'morning report');
    await within(dialog).findByRole('option', { name: 'run_report' });
    await userEvent.selectOptions(within(dialog).getByLabelText('Workflow'), 'run_report');
    const cron = within(dialog).getByLabelText('Cron expression');
    await userEvent.clear(cron);
    await userEvent.type(cron, '0 6 * * *');
    const tz = within(dialog).getByLabelText('Time zone');
    await userEvent.clear(tz);
    await userEvent.type(tz, 'UTC');
    const input = within(dialog).getByLabelText('Input (JSON)');
    await userEvent.clear(input);
    await userEvent.type(input, '{{"hours": 24}');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Create schedule' }));
    const table = await screen.findByRole('table', { name: 'Schedules' });
    expect(within(table).getByText('morning report')).toBeInTheDocument();
    expect(within(table).getAllByRole('listitem')).toHaveLength(3);
    expect(requests.find((r) => r.method === 'POST')!.body).toMatchObject({
      name: 'morning report',
      workflow: 'run_report',
      cron: '0 6 * * *',
      timezone: 'UTC',
      input: { hours: 24 },
      enabled: true,
    });
  });
});

describe('Overview', () => {
  it('shows totals, the throughput chart with its data table, and queue depth', async () => {
    mockApi([
      [
        'GET',
        '/api/overview',
        () =>
          json({
            runsByStatus: [
              { status: 'succeeded', count: 40 },
              { status: 'dead', count: 2 },
              { status: 'queued', count: 3 },
            ],
            queue: [{ workflow: 'hello', depth: 3, oldestQueuedAgeMs: 65_000 }],
            deadLetters: 2,
            workersAlive: 1,
            throughput: [
              { at: '2026-01-01T10:00:00Z', succeeded: 10, dead: 1 },
              { at: '2026-01-01T11:00:00Z', succeeded: 30, dead: 1 },
            ],
          }),
      ],
    ]);
    const { container } = renderPage(<OverviewPage />);
    expect(await screen.findByRole('link', { name: /2\s*Dead letters/ })).toHaveAttribute('href', '/dead-letters');
    expect(screen.getByRole('link', { name: /40\s*succeeded runs/ })).toHaveAttribute('href', '/runs?status=succeeded&since=24h');
    expect(container.querySelectorAll('rect.chart__bar--succeeded')).toHaveLength(2);
    expect(container.querySelectorAll('rect.chart__bar--dead')).toHaveLength(2);
    const data = screen.getByRole('table', { name: 'Finished runs per interval' });
    expect(within(data).getAllByRole('row')).toHaveLength(3);
    const queue = screen.getByRole('table', { name: 'Queued runs per workflow' });
    expect(queue).toHaveTextContent('1m 5s');
  });
});

describe('Overview chart', () => {
  it('draws a lone bucket as one narrow bar, starting the chart just before it', async () => {
    const at = new Date(Math.floor(Date.now() / 1_800_000) * 1_800_000).toISOString();
    mockApi([
      [
        'GET',
        '/api/overview',
        () => json({ runsByStatus: { succeeded: 2 }, queue: [], deadLetters: 0, workersAlive: 1, bucketSeconds: 1800, throughput: [{ at, succeeded: 2, dead: 0 }] }),
      ],
    ]);
    const { container } = renderPage(<OverviewPage />, { route: '/?window=24h' });
    await screen.findByText('Succeeded (2)');
    const bars = container.querySelectorAll('rect.chart__bar--succeeded');
    expect(bars).toHaveLength(1);
    // 12 slots of 30 minutes at least, in a 670-unit-wide plot: not one bar across it.
    expect(Number(bars[0]!.getAttribute('width'))).toBeLessThan(60);
    expect(screen.getByText(/No run finished earlier in the last 24 hours; the chart starts just before the first one/)).toBeInTheDocument();
    expect(within(screen.getByRole('table', { name: 'Finished runs per interval' })).getAllByRole('row')).toHaveLength(2);
  });

  it('shows the last hour on its own when everything of the day finished within it', async () => {
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    const { requests } = mockApi([
      [
        'GET',
        '/api/overview',
        (req) => {
          const hour = req.url.searchParams.get('window') === '1h';
          const size = hour ? 60_000 : 1_800_000;
          const at = new Date(Math.floor((minute - 2 * 60_000) / size) * size).toISOString();
          return json({ runsByStatus: { succeeded: 3 }, queue: [], deadLetters: 0, workersAlive: 1, bucketSeconds: size / 1000, throughput: [{ at, succeeded: 3, dead: 0 }] });
        },
      ],
    ]);
    renderPage(<OverviewPage />);
    expect(await screen.findByText(/Every run of the last 24 hours finished in the last few minutes: the chart starts just before the first one/)).toBeInTheDocument();
    expect(screen.getByLabelText('Window')).toHaveValue('1h');
    expect(requests.filter((r) => r.path === '/api/overview').map((r) => r.url.searchParams.get('window'))).toEqual(['24h', '1h']);
  });

  it('says how to start on a new install instead of drawing an empty chart', async () => {
    mockApi([['GET', '/api/overview', () => json({ runsByStatus: {}, queue: [], deadLetters: 0, workersAlive: 1, bucketSeconds: 1800, throughput: [] })]]);
    renderPage(<OverviewPage />);
    expect(await screen.findByText('No runs yet.')).toBeInTheDocument();
    expect(screen.getByRole('link', { name: 'See the workflows' })).toHaveAttribute('href', '/workflows');
  });
});

describe('Workflow page', () => {
  it('shows the definition as a DAG and a table', async () => {
    mockApi([
      [
        'GET',
        '/api/workflows/hello',
        () =>
          json({
            name: 'hello',
            hash: '0123456789abcdef',
            source: 'description = "Greets"',
            definition: {
              name: 'hello',
              description: 'Greets someone',
              input: [{ name: 'name', type: 'string', default: 'world' }],
              steps: [
                { id: 'greet', kind: 'sql', needs: [], query: 'select 1', params: [], mode: 'read', timeoutMs: 10_000, retry: { maxAttempts: 3, initialDelayMs: 1000, maxDelayMs: 30_000, multiplier: 2, jitter: 0.2 } },
                { id: 'pause', kind: 'sleep', needs: ['greet'], durationMs: 1000, timeoutMs: 10_000, retry: { maxAttempts: 3, initialDelayMs: 1000, maxDelayMs: 30_000, multiplier: 2, jitter: 0.2 } },
              ],
            },
          }),
      ],
    ]);
    renderPage(<WorkflowPage />, { route: '/workflows/hello', path: '/workflows/:name' });
    const dag = await screen.findByRole('group', { name: 'Steps of workflow hello' });
    expect(within(dag).getAllByRole('img')).toHaveLength(2);
    expect(within(dag).getByRole('img', { name: 'pause sleep, needs greet' })).toBeInTheDocument();
    expect(screen.getByRole('table', { name: 'Step definitions of hello' })).toHaveTextContent('3 attempts, 1.0 s → 30 s');
    expect(screen.getByLabelText('Source of hello')).toHaveTextContent('description = "Greets"');
  });
});
