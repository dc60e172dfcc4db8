import { act, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { MapProgress, TaskDetail } from '../api/types';
import { deadRun, mapItem, mapRun } from '../../test/fixtures';
import { apiError, json, mockApi, renderPage, user, type FakeRequest } from '../../test/utils';
import { defaultStep, MAP_POLL_MS, RunPage, runRefetchInterval } from '../pages/RunPage';

function api() {
  return mockApi([
    ['GET', '/api/tasks/01JDEAD000000000000000000B', () => json(deadRun())],
    ['POST', '/api/tasks/01JDEAD000000000000000000B/replay', () => json({ taskId: '01JNEW', status: 'queued', replayOf: '01JDEAD000000000000000000B' }, 201)],
    ['POST', '/api/tasks/01JDEAD000000000000000000B/retry', () => json({ taskId: '01JDEAD000000000000000000B', status: 'queued' })],
  ]);
}

const route = { route: '/runs/01JDEAD000000000000000000B', path: '/runs/:id', me: user('operator') };

describe('Run detail', () => {
  it('draws the DAG with every step coloured and labelled by status', async () => {
    api();
    renderPage(<RunPage />, route);
    const dag = await screen.findByRole('group', { name: /Steps of run/ });
    const greet = within(dag).getByRole('button', { name: 'greet sql · succeeded' });
    const confirm = within(dag).getByRole('button', { name: 'confirm sql · failed, needs greet, pause' });
    expect(greet).toHaveClass('tone-success');
    expect(confirm).toHaveClass('tone-danger');
    expect(dag.querySelectorAll('[data-edge]')).toHaveLength(3);
  });

  it('opens on the failed step, with its attempts, error and inputs', async () => {
    api();
    renderPage(<RunPage />, route);
    const panel = (await screen.findByRole('heading', { name: 'Step confirm' })).closest('section')!;
    expect(within(panel).getByLabelText('Error of step confirm')).toHaveTextContent('connection refused again');
    const attempts = within(panel).getByRole('table', { name: 'Attempts of step confirm' });
    expect(within(attempts).getAllByRole('row')).toHaveLength(3); // header + 2 attempts
    expect(attempts).toHaveTextContent('worker-2');
    expect(within(panel).getByLabelText('Inputs of step confirm')).toHaveTextContent('hello, Ada');
    expect(screen.getByRole('link', { name: 'Inspect the dead letter' })).toHaveAttribute('href', '/dead-letters/77');
  });

  it('selects another step from the DAG with the keyboard', async () => {
    api();
    renderPage(<RunPage />, route);
    const greet = await screen.findByRole('button', { name: 'greet sql · succeeded' });
    greet.focus();
    await userEvent.keyboard('{Enter}');
    expect(greet).toHaveAttribute('aria-pressed', 'true');
    const panel = screen.getByRole('heading', { name: 'Step greet' }).closest('section')!;
    expect(within(panel).getByLabelText('Output of step greet')).toHaveTextContent('"greeting": "hello, Ada"');
  });

  it('shows the timeline of attempts and the event history', async () => {
    api();
    renderPage(<RunPage />, route);
    const timeline = await screen.findByRole('list', { name: 'Attempts in time order' });
    expect(within(timeline).getAllByRole('listitem').map((li) => li.getAttribute('data-attempt'))).toEqual([
      'greet#1',
      'pause#1',
      'confirm#1',
      'confirm#2',
    ]);
    expect(timeline).toHaveTextContent(/confirm attempt 2: failed, .*took 100 ms, error: connection refused again/);
    const events = screen.getByRole('list', { name: 'Event history, newest first' });
    const items = within(events).getAllByRole('listitem');
    expect(items[0]).toHaveTextContent('Run died: connection refused again');
    expect(items[1]).toHaveTextContent('Run submitted');
  });

  it('replays from the chosen step with edited input', async () => {
    const { requests } = api();
    renderPage(<RunPage />, route);
    await userEvent.click(await screen.findByRole('button', { name: 'Replay…' }));
    const dialog = screen.getByRole('dialog', { name: 'Replay run' });
    expect(within(dialog).getByLabelText('Start from step')).toHaveValue('confirm');
    await userEvent.selectOptions(within(dialog).getByLabelText('Start from step'), 'pause');
    const input = within(dialog).getByLabelText('Input (JSON)');
    await userEvent.clear(input);
    await userEvent.type(input, '{{"name": "Grace"}');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Replay' }));
    expect(await screen.findByText('Replay started as run 01JNEW.')).toBeInTheDocument();
    // the page moved to the new run
    await waitFor(() => expect(requests.some((r) => r.method === 'GET' && r.path === '/api/tasks/01JNEW')).toBe(true));
    expect(requests.find((r) => r.path.endsWith('/replay'))!.body).toEqual({ fromStep: 'pause', input: { name: 'Grace' } });
  });

  it('refuses input that is not JSON without calling the API', async () => {
    const { requests } = api();
    renderPage(<RunPage />, route);
    await userEvent.click(await screen.findByRole('button', { name: 'Replay…' }));
    const dialog = screen.getByRole('dialog', { name: 'Replay run' });
    const input = within(dialog).getByLabelText(/Input \(JSON\)/);
    await userEvent.clear(input);
    await userEvent.type(input, 'not json');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Replay' }));
    expect(within(dialog).getByText(/Not valid JSON/)).toBeInTheDocument();
    expect(input).toHaveAttribute('aria-invalid', 'true');
    expect(requests.some((r) => r.path.endsWith('/replay'))).toBe(false);
  });

  it('retries a dead run only after confirmation, then moves focus to the outcome', async () => {
    const { requests } = api();
    renderPage(<RunPage />, route);
    await userEvent.click(await screen.findByRole('button', { name: 'Retry…' }));
    const confirm = screen.getByRole('alertdialog', { name: 'Retry this run?' });
    expect(confirm).toHaveTextContent('resumes at the step that failed (confirm)');
    await userEvent.click(within(confirm).getByRole('button', { name: 'Leave it' }));
    expect(requests.some((r) => r.method === 'POST')).toBe(false);
    await userEvent.click(screen.getByRole('button', { name: 'Retry…' }));
    await userEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Retry run' }));
    const outcome = await screen.findByText('Retried: run is now queued.', { selector: 'p' });
    await waitFor(() => expect(outcome).toHaveFocus());
    expect(requests.filter((r) => r.method === 'POST').map((r) => r.path)).toEqual(['/api/tasks/01JDEAD000000000000000000B/retry']);
  });

  it('shows a not-found error with a way back', async () => {
    mockApi([['GET', /^\/api\/tasks\//, () => apiError(404, 'not_found', 'no task with id `nope`')]]);
    renderPage(<RunPage />, { ...route, route: '/runs/nope' });
    const alert = await screen.findByRole('alert');
    expect(alert).toHaveTextContent('Not found');
    expect(alert).toHaveTextContent('no task with id `nope`');
    expect(alert).toHaveTextContent('404 not_found');
    expect(screen.getByRole('link', { name: 'Runs' })).toHaveAttribute('href', '/runs');
  });

  it('picks the failed, then the active, then the first step to show', () => {
    const steps = deadRun().steps;
    expect(defaultStep(steps)).toBe('confirm');
    expect(defaultStep(steps.map((s) => ({ ...s, status: s.id === 'pause' ? 'running' : 'succeeded' })))).toBe('pause');
    expect(defaultStep(steps.map((s) => ({ ...s, status: 'succeeded' })))).toBe('greet');
    expect(defaultStep([])).toBeNull();
  });
});

const MAP_RUN = '01JMAP00000000000000000000';
const mapRoute = { route: `/runs/${MAP_RUN}`, path: '/runs/:id', me: user('viewer') };

/** `GET …/steps/fanout/items` over `total` items, paged by `after` and `limit` as the API does. */
function itemsPage(req: FakeRequest, total: number) {
  const after = Number(req.url.searchParams.get('after') ?? -1);
  const limit = Number(req.url.searchParams.get('limit') ?? 100);
  const items = Array.from({ length: total }, (_, i) => mapItem(i)).filter((i) => i.index > after).slice(0, limit);
  const last = items.at(-1);
  return json({ items, next: last && last.index < total - 1 ? last.index : null });
}

function mapApi(run: () => TaskDetail = () => mapRun()) {
  return mockApi([
    ['GET', `/api/tasks/${MAP_RUN}`, () => json(run())],
    ['GET', `/api/tasks/${MAP_RUN}/steps/fanout/items`, (req) => itemsPage(req, 150)],
  ]);
}

/** An EventSource that connects when told, so the page believes it is live. */
class FakeEventSource {
  static CLOSED = 2;
  static last: FakeEventSource | null = null;
  readyState = 0;
  onopen: (() => void) | null = null;
  onerror: (() => void) | null = null;
  constructor(public url: string) {
    FakeEventSource.last = this;
  }
  addEventListener() {}
  removeEventListener() {}
  close() {
    this.readyState = 2;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
}

describe('Run detail: map steps', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('shows a map step\'s progress in its DAG node, in words and as a bar', async () => {
    mapApi();
    renderPage(<RunPage />, mapRoute);
    const dag = await screen.findByRole('group', { name: /Steps of run/ });
    const node = within(dag).getByRole('button', { name: 'fanout map · waiting 37/150 · 5 running · 1 failed, needs split' });
    expect(within(node).getByText('37/150 · 5 running · 1 failed')).toBeInTheDocument();
    // done and failed shares of the track: 37 and 1 of 150
    const width = (el: Element | null) => Number(el?.getAttribute('d')?.match(/h(-?[\d.]+)/)?.[1]);
    const track = width(node.querySelector('.dag__bar-track'));
    expect(width(node.querySelector('.dag__bar-done')) / track).toBeCloseTo(37 / 150, 2);
    expect(width(node.querySelector('.dag__bar-failed')) / track).toBeCloseTo(1 / 150, 2);
    // the other nodes keep their plain label
    expect(within(dag).getByRole('button', { name: 'split sql · succeeded' })).toBeInTheDocument();
    expect(dag.querySelectorAll('.dag__bar')).toHaveLength(1);
  });

  it('lists a map step\'s items with links to their child runs, and loads the next page', async () => {
    const { requests } = mapApi();
    renderPage(<RunPage />, mapRoute);
    // the waiting map step is shown first
    const panel = (await screen.findByRole('heading', { name: 'Step fanout' })).closest('section')!;
    expect(within(panel).getByText('37/150 · 5 running · 1 failed')).toBeInTheDocument();
    const table = await within(panel).findByRole('table', { name: 'Items of step fanout' });
    expect(within(table).getAllByRole('row')).toHaveLength(101); // header + the first 100
    expect(within(table).getByRole('link', { name: '01JITEM000' })).toHaveAttribute('href', '/runs/01JITEM000');
    const failed = within(table).getByRole('link', { name: '01JITEM037' }).closest('tr')!;
    expect(failed).toHaveTextContent('failed');
    expect(failed).toHaveTextContent('child run died: no such user');
    const pending = within(table).getAllByRole('row')[44]!; // item 43
    expect(pending).toHaveTextContent('pending');
    expect(within(pending).queryByRole('link')).not.toBeInTheDocument();
    expect(within(panel).getByText('Showing 100 of 150 items')).toBeInTheDocument();
    const first = requests.filter((r) => r.path.endsWith('/items'));
    expect(first.map((r) => r.url.search)).toEqual(['?limit=100']);

    await userEvent.click(within(panel).getByRole('button', { name: 'Load more' }));
    expect(await within(panel).findByText('Showing 150 of 150 items')).toBeInTheDocument();
    expect(within(table).getAllByRole('row')).toHaveLength(151);
    expect(within(table).getAllByRole('row')[150]).toHaveTextContent('149');
    expect(requests.filter((r) => r.path.endsWith('/items')).map((r) => r.url.search)).toEqual(['?limit=100', '?after=99&limit=100']);
    // the last page says there is no next one
    expect(within(panel).queryByRole('button', { name: 'Load more' })).not.toBeInTheDocument();
  });

  it('links a workflow step to its child run', async () => {
    mapApi();
    renderPage(<RunPage />, mapRoute);
    await userEvent.click(await screen.findByRole('button', { name: /^announce workflow · succeeded/ }));
    const panel = screen.getByRole('heading', { name: 'Step announce' }).closest('section')!;
    expect(within(panel).getByRole('link', { name: '01JCHILDANNOUNCE0000000000' })).toHaveAttribute('href', '/runs/01JCHILDANNOUNCE0000000000');
    expect(within(panel).queryByRole('heading', { name: 'Items' })).not.toBeInTheDocument();
  });

  it('polls the run while a map step waits for its items, and stops when it is done', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    vi.stubGlobal('EventSource', FakeEventSource);
    let progress: MapProgress = { total: 150, done: 37, failed: 1, running: 5 };
    let status: 'waiting' | 'succeeded' = 'waiting';
    const { requests } = mapApi(() => mapRun(progress, status));
    const runGets = () => requests.filter((r) => r.method === 'GET' && r.path === `/api/tasks/${MAP_RUN}`).length;
    const itemGets = () => requests.filter((r) => r.path.endsWith('/items')).length;
    renderPage(<RunPage />, mapRoute);
    await screen.findByRole('table', { name: 'Items of step fanout' });
    // live: without the map, nothing would make the page reload the run by itself
    act(() => FakeEventSource.last!.open());
    expect(screen.getByText('Live')).toBeInTheDocument();
    expect(runGets()).toBe(1);

    progress = { total: 150, done: 60, failed: 1, running: 5 };
    await act(() => vi.advanceTimersByTimeAsync(MAP_POLL_MS));
    await waitFor(() => expect(runGets()).toBe(2));
    expect(await screen.findByRole('button', { name: /^fanout map · waiting 60\/150 · 5 running · 1 failed/ })).toBeInTheDocument();
    // the items shown follow the progress
    await waitFor(() => expect(itemGets()).toBe(2));

    progress = { total: 150, done: 149, failed: 1, running: 0 };
    status = 'succeeded';
    await act(() => vi.advanceTimersByTimeAsync(MAP_POLL_MS));
    expect(await screen.findByRole('button', { name: /^fanout map · succeeded 149\/150 · 1 failed/ })).toBeInTheDocument();
    const seen = runGets();
    await act(() => vi.advanceTimersByTimeAsync(10 * MAP_POLL_MS));
    expect(runGets()).toBe(seen);
  });

  it('picks when to reload the run', () => {
    const waiting = mapRun();
    const done = mapRun({ total: 150, done: 150, failed: 0, running: 0 }, 'succeeded');
    expect(runRefetchInterval(waiting, 'open')).toBe(MAP_POLL_MS);
    expect(runRefetchInterval(waiting, 'closed')).toBe(MAP_POLL_MS);
    expect(runRefetchInterval(done, 'open')).toBe(false);
    expect(runRefetchInterval(done, 'closed')).toBe(3000);
    expect(runRefetchInterval({ ...waiting, status: 'cancelled' }, 'closed')).toBe(false);
    expect(runRefetchInterval(deadRun(), 'closed')).toBe(false);
    expect(runRefetchInterval(undefined, 'open')).toBe(false);
  });
});
