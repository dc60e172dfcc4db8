import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { apiError, json, mockApi, renderPage } from '../../test/utils';
import { RunsPage } from '../pages/RunsPage';
import type { BulkResult } from '../api/types';
import { BulkActionDialog } from './BulkActionDialog';

function renderDialog(perform: (dryRun: boolean) => Promise<BulkResult>, onClose = vi.fn(), onDone = vi.fn()) {
  renderPage(
    <BulkActionDialog open verb="Retry" noun="runs" scope="dead runs of workflow “hello”" perform={perform} onClose={onClose} onDone={onDone} />,
  );
  return { onClose, onDone };
}

describe('BulkActionDialog', () => {
  it('counts with a dry run first, and acts only after the user confirms the count', async () => {
    const perform = vi.fn(async (dryRun: boolean) =>
      dryRun ? { matched: 3, ids: ['r1', 'r2', 'r3'], processed: 0 } : { matched: 3, ids: ['r1', 'r2', 'r3'], processed: 3 },
    );
    const { onDone } = renderDialog(perform);
    expect(screen.getByRole('alertdialog', { name: 'Retry runs' })).toBeInTheDocument();
    const status = await screen.findByText(/match: dead runs of workflow “hello”/);
    expect(status).toHaveTextContent('3 runs match: dead runs of workflow “hello”.');
    expect(screen.getByText('Which ones')).toBeInTheDocument();
    expect(perform).toHaveBeenCalledTimes(1);
    expect(perform).toHaveBeenLastCalledWith(true);

    await userEvent.click(screen.getByRole('button', { name: 'Retry 3 runs' }));
    expect(await screen.findByText(/Retry done: 3 of 3 runs processed/)).toBeInTheDocument();
    expect(perform).toHaveBeenCalledTimes(2);
    expect(perform).toHaveBeenLastCalledWith(false);
    expect(onDone).toHaveBeenCalledWith({ matched: 3, ids: ['r1', 'r2', 'r3'], processed: 3 });
  });

  it('names only the first ids when there are more than it lists', async () => {
    const perform = vi.fn(async () => ({ matched: 250, ids: Array.from({ length: 100 }, (_, i) => `r${i}`), processed: 0 }));
    renderDialog(perform);
    expect(await screen.findByText('The first 100 runs')).toBeInTheDocument();
  });

  it('backs out without acting', async () => {
    const perform = vi.fn(async () => ({ matched: 2, ids: ['a', 'b'], processed: 0 }));
    const { onClose } = renderDialog(perform);
    await userEvent.click(await screen.findByRole('button', { name: 'Keep them' }));
    expect(onClose).toHaveBeenCalled();
    expect(perform).toHaveBeenCalledTimes(1);
    expect(perform).toHaveBeenCalledWith(true);
  });

  it('offers nothing to confirm when the filter matches nothing', async () => {
    const perform = vi.fn(async () => ({ matched: 0, ids: [], processed: 0 }));
    renderDialog(perform);
    expect(await screen.findByText('No runs match: nothing to retry.')).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /^Retry \d/ })).not.toBeInTheDocument();
  });

  it('shows a failed count and lets the user count again', async () => {
    let calls = 0;
    const perform = vi.fn(async () => {
      calls += 1;
      if (calls === 1) throw new Error('the database is busy');
      return { matched: 1, ids: ['x'], processed: 0 };
    });
    renderDialog(perform);
    expect(await screen.findByRole('alert')).toHaveTextContent('the database is busy');
    await userEvent.click(screen.getByRole('button', { name: 'Count again' }));
    expect(await screen.findByRole('button', { name: 'Retry 1 run' })).toBeInTheDocument();
  });

  it('closes on Escape', async () => {
    const perform = vi.fn(async () => ({ matched: 1, ids: ['x'], processed: 0 }));
    const { onClose } = renderDialog(perform);
    await screen.findByRole('button', { name: 'Retry 1 run' });
    await userEvent.keyboard('{Escape}');
    expect(onClose).toHaveBeenCalled();
  });
});

describe('bulk retry from the Runs page', () => {
  it('sends the filtered set (dry run, then for real) with the filter from the URL', async () => {
    const { requests } = mockApi([
      ['GET', '/api/workflows', () => json({ items: [{ name: 'hello', hash: 'h', steps: 3 }] })],
      ['GET', '/api/tasks', () => json({ items: [], nextCursor: null })],
      [
        'POST',
        '/api/tasks/bulk/retry',
        (req) => json({ matched: 4, ids: ['a', 'b', 'c', 'd'], processed: (req.body as { dryRun: boolean }).dryRun ? 0 : 4 }),
      ],
    ]);
    renderPage(<RunsPage />, { route: '/runs?status=dead&workflow=hello&since=1h', path: '/runs' });
    await userEvent.click(screen.getByRole('button', { name: 'Retry filtered…' }));
    await userEvent.click(await screen.findByRole('button', { name: 'Retry 4 runs' }));
    await screen.findByText(/Retry done: 4 of 4 runs processed/);
    const bulk = requests.filter((r) => r.path === '/api/tasks/bulk/retry').map((r) => r.body);
    expect(bulk).toEqual([
      { filter: { status: 'dead', workflow: 'hello', since: '1h' }, dryRun: true },
      { filter: { status: 'dead', workflow: 'hello', since: '1h' }, dryRun: false },
    ]);
  });

  it('does not offer bulk actions while a text search is applied (the API cannot filter by it)', async () => {
    mockApi([
      ['GET', '/api/workflows', () => json({ items: [] })],
      ['GET', '/api/tasks', () => json({ items: [], nextCursor: null })],
    ]);
    renderPage(<RunsPage />, { route: '/runs?status=dead&q=boom', path: '/runs' });
    expect(screen.getByRole('button', { name: 'Retry filtered…' })).toBeDisabled();
    expect(screen.getByRole('button', { name: 'Cancel filtered…' })).toBeDisabled();
    expect(screen.getByText(/Clear the search to act on the filtered runs/)).toBeInTheDocument();
  });

  it('shows the API error when the real request is refused', async () => {
    mockApi([
      ['GET', '/api/workflows', () => json({ items: [] })],
      ['GET', '/api/tasks', () => json({ items: [], nextCursor: null })],
      [
        'POST',
        '/api/tasks/bulk/cancel',
        (req) =>
          (req.body as { dryRun: boolean }).dryRun
            ? json({ matched: 1, ids: ['a'], processed: 0 })
            : apiError(409, 'conflict', 'a run changed state'),
      ],
    ]);
    renderPage(<RunsPage />, { route: '/runs?status=running', path: '/runs' });
    await userEvent.click(screen.getByRole('button', { name: 'Cancel filtered…' }));
    await userEvent.click(await screen.findByRole('button', { name: 'Cancel 1 run' }));
    await waitFor(() => expect(screen.getByRole('alert')).toHaveTextContent('a run changed state'));
    expect(screen.getByRole('alert')).toHaveTextContent('conflict');
  });
});
