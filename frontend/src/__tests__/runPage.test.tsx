import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { deadRun } from '../../test/fixtures';
import { apiError, json, mockApi, renderPage, user } from '../../test/utils';
import { defaultStep, RunPage } from '../pages/RunPage';

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
