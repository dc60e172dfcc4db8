import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter } from 'react-router';
import { describe, expect, it } from 'vitest';
import { notification } from '../../test/fixtures';
import { apiError, json, mockApi, renderPage, testQueryClient, user } from '../../test/utils';
import { AppProviders, AppRoutes } from '../App';
import { NotificationsPage } from '../pages/NotificationsPage';
import { OverviewPage } from '../pages/OverviewPage';

type Row = HTMLTableRowElement;

const HOUR = 3_600_000;
const ago = (ms: number) => new Date(Date.now() - ms).toISOString();

const pendingAlert = notification();
const failedTick = notification({
  id: '41',
  event: 'schedule.tick_failed',
  taskId: null,
  step: null,
  scheduleId: '4',
  workflow: 'nightly_report',
  error: 'workflow nightly_report has no definition',
  state: 'failed',
  deliveries: 25,
  nextAttemptAt: null,
  lastError: 'connection refused',
  lastStatus: null,
  createdAt: ago(3 * HOUR),
  finishedAt: ago(HOUR),
});
const delivered = notification({
  id: '40',
  workflowUrl: true,
  state: 'delivered',
  deliveries: 1,
  nextAttemptAt: null,
  lastError: null,
  lastStatus: 200,
  createdAt: ago(5 * HOUR),
  deliveredAt: ago(5 * HOUR),
  finishedAt: ago(5 * HOUR),
});
const skipped = notification({ id: '39', state: 'skipped', deliveries: 0, nextAttemptAt: null, lastError: null, lastStatus: null });

const overviewBody = {
  runsByStatus: { succeeded: 4, dead: 1 },
  queue: [],
  deadLetters: 1,
  workersAlive: 1,
  bucketSeconds: 1800,
  throughput: [{ at: ago(HOUR), succeeded: 4, dead: 1 }],
};

const listRequests = (requests: { path: string; url: URL }[]) =>
  requests.filter((r) => r.path === '/api/notifications').map((r) => r.url.searchParams);

describe('Notifications page', () => {
  it('lists alerts with links to their run or schedule, state badges, POSTs and the last answer', async () => {
    const { requests } = mockApi([
      ['GET', '/api/notifications', () => json({ items: [pendingAlert, failedTick, delivered, skipped], nextCursor: null })],
    ]);
    renderPage(<NotificationsPage />, { route: '/notifications', path: '/notifications', me: user('viewer') });
    const table = await screen.findByRole('table', { name: 'Notifications, newest first' });
    const rows = within(table).getAllByRole('row').slice(1);
    expect(rows).toHaveLength(4);
    expect(listRequests(requests).map(String)).toEqual(['limit=50']);

    const [pending, failed, ok, skip] = rows as [Row, Row, Row, Row];
    expect(within(pending).getByRole('link', { name: '01JDEAD000000000000000000B' })).toHaveAttribute('href', '/runs/01JDEAD000000000000000000B');
    expect(within(pending).getByText('step confirm')).toBeInTheDocument();
    expect(within(pending).getByRole('link', { name: 'hello' })).toHaveAttribute('href', '/workflows/hello');
    expect(within(pending).getByText('run.dead')).toBeInTheDocument();
    expect(within(pending).getByText('pending', { selector: '.pill' })).toHaveClass('tone-warning');
    expect(within(pending).getByTitle('HTTP 502: the endpoint answered 502')).toHaveTextContent('HTTP 502: the endpoint answered 502');
    const due = within(pending).getAllByRole('time').find((t) => t.getAttribute('datetime') === pendingAlert.nextAttemptAt);
    expect(due?.parentElement).toHaveTextContent(/^next in \d+m$/);
    expect(pending.cells[5]).toHaveTextContent('2');

    expect(within(failed).getByRole('link', { name: 'schedule 4' })).toHaveAttribute('href', '/schedules');
    expect(within(failed).queryByRole('link', { name: /^01J/ })).not.toBeInTheDocument();
    expect(within(failed).getByText('schedule.tick_failed')).toBeInTheDocument();
    expect(within(failed).getByText('failed', { selector: '.pill' })).toHaveClass('tone-danger');
    expect(within(failed).getByTitle('connection refused')).toHaveClass('error-cell');
    expect(within(failed).getByTitle('workflow nightly_report has no definition')).toBeInTheDocument();
    expect(failed.cells[5]).toHaveTextContent('25');
    expect(within(failed).queryByText(/^(next|due)/)).not.toBeInTheDocument();

    expect(within(ok).getByText('delivered', { selector: '.pill' })).toHaveClass('tone-success');
    expect(within(ok).getByText('to the workflow’s URL')).toBeInTheDocument();
    expect(within(ok).getByTitle('HTTP 200')).not.toHaveClass('error-cell');
    expect(within(skip).getByText('skipped', { selector: '.pill' })).toHaveClass('tone-neutral');
    expect(within(pending).queryByText('to the workflow’s URL')).not.toBeInTheDocument();
  });

  it('filters by state through the URL', async () => {
    const { requests } = mockApi([
      [
        'GET',
        '/api/notifications',
        (req) => {
          const state = req.url.searchParams.get('state');
          return json({ items: [state === 'failed' ? failedTick : delivered], nextCursor: null });
        },
      ],
    ]);
    renderPage(<NotificationsPage />, { route: '/notifications?state=delivered', path: '/notifications' });
    await screen.findByText('delivered', { selector: '.pill' });
    expect(screen.getByLabelText('State')).toHaveValue('delivered');
    expect(listRequests(requests).map((p) => p.get('state'))).toEqual(['delivered']);

    await userEvent.selectOptions(screen.getByLabelText('State'), 'Failed');
    expect(await screen.findByText('failed', { selector: '.pill' })).toBeInTheDocument();
    expect(listRequests(requests).at(-1)!.get('state')).toBe('failed');
    expect(screen.getByRole('table', { name: 'Notifications (failed), newest first' })).toBeInTheDocument();

    await userEvent.selectOptions(screen.getByLabelText('State'), 'All');
    await waitFor(() => expect(listRequests(requests).at(-1)!.has('state')).toBe(false));
  });

  it('loads the next page with the cursor and appends it', async () => {
    const { requests } = mockApi([
      [
        'GET',
        '/api/notifications',
        (req) =>
          req.url.searchParams.get('before') === 'cursor-41'
            ? json({ items: [delivered], nextCursor: null })
            : json({ items: [pendingAlert, failedTick], nextCursor: 'cursor-41' }),
      ],
    ]);
    renderPage(<NotificationsPage />, { route: '/notifications', path: '/notifications' });
    await screen.findByRole('link', { name: 'schedule 4' });
    expect(screen.getByText('Showing 2 notifications')).toBeInTheDocument();
    await userEvent.click(screen.getByRole('button', { name: 'Load more' }));
    expect(await screen.findByText('delivered', { selector: '.pill' })).toBeInTheDocument();
    expect(listRequests(requests).at(-1)!.get('before')).toBe('cursor-41');
    const table = screen.getByRole('table', { name: 'Notifications, newest first' });
    expect(within(table).getAllByRole('row')).toHaveLength(4);
    expect(within(table).getByRole('link', { name: 'schedule 4' })).toBeInTheDocument();
    expect(screen.getByText('Showing 3 notifications')).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: 'Load more' })).not.toBeInTheDocument();
  });

  it('explains where alerts come from when there are none, and offers all when a filter empties the list', async () => {
    mockApi([['GET', '/api/notifications', () => json({ items: [], nextCursor: null })]]);
    renderPage(<NotificationsPage />, { route: '/notifications', path: '/notifications' });
    expect(await screen.findByText('No notifications yet.')).toBeInTheDocument();
    expect(screen.getByText('CAIRN_NOTIFY_URL')).toBeInTheDocument();
    expect(screen.getByText('[notify] enabled = false')).toBeInTheDocument();

    await userEvent.selectOptions(screen.getByLabelText('State'), 'Skipped');
    expect(await screen.findByText('No skipped notifications.')).toBeInTheDocument();
    await userEvent.click(screen.getByRole('button', { name: 'Show all' }));
    expect(await screen.findByText('No notifications yet.')).toBeInTheDocument();
    expect(screen.getByLabelText('State')).toHaveValue('');
  });

  it('is routed and in the main navigation for viewers', async () => {
    mockApi([
      ['GET', '/api/auth/me', () => json({ user: user('viewer') })],
      ['GET', '/api/notifications', () => json({ items: [pendingAlert], nextCursor: null })],
    ]);
    render(
      <AppProviders client={testQueryClient()}>
        <MemoryRouter initialEntries={['/notifications']}>
          <AppRoutes />
        </MemoryRouter>
      </AppProviders>,
    );
    const nav = await screen.findByRole('navigation', { name: 'Main' });
    expect(within(nav).getByRole('link', { name: 'Notifications' })).toHaveAttribute('href', '/notifications');
    expect(await screen.findByRole('heading', { level: 1, name: 'Notifications' })).toBeInTheDocument();
    expect(await screen.findByText('pending', { selector: '.pill' })).toBeInTheDocument();
  });
});

const posts = (requests: { method: string; path: string }[]) => requests.filter((r) => r.method === 'POST').map((r) => r.path);

/** The failed tick after a resend: pending again with a fresh round, resent once. */
const resentTick = {
  ...failedTick,
  state: 'pending' as const,
  resends: 1,
  nextAttemptAt: new Date(Date.now() + 60_000).toISOString(),
  finishedAt: null,
};

describe('Sending a notification again', () => {
  it('offers Send again to operators on failed and skipped alerts only, named after what it resends', async () => {
    const { requests } = mockApi([
      ['GET', '/api/notifications', () => json({ items: [pendingAlert, failedTick, delivered, skipped], nextCursor: null })],
    ]);
    renderPage(<NotificationsPage />, { route: '/notifications', path: '/notifications', me: user('operator') });
    const table = await screen.findByRole('table', { name: 'Notifications, newest first' });
    const [pending, failed, ok, skip] = within(table).getAllByRole('row').slice(1) as [Row, Row, Row, Row];
    expect(within(failed).getByRole('button', { name: 'Send again: schedule.tick_failed for schedule 4 (notification 41)' })).toHaveTextContent(
      'Send again',
    );
    expect(within(skip).getByRole('button', { name: 'Send again: run.dead for run 01JDEAD000000000000000000B (notification 39)' })).toBeEnabled();
    expect(within(pending).queryByRole('button', { name: /Send again/ })).not.toBeInTheDocument();
    expect(within(ok).queryByRole('button', { name: /Send again/ })).not.toBeInTheDocument();
    expect(screen.getAllByRole('button', { name: /Send again/ })).toHaveLength(2);
    expect(posts(requests)).toEqual([]);
  });

  it('shows viewers no Send again button', async () => {
    mockApi([['GET', '/api/notifications', () => json({ items: [failedTick, skipped], nextCursor: null })]]);
    renderPage(<NotificationsPage />, { route: '/notifications', path: '/notifications', me: user('viewer') });
    const table = await screen.findByRole('table', { name: 'Notifications, newest first' });
    expect(within(table).getAllByRole('row')).toHaveLength(3);
    expect(within(table).getByText('failed', { selector: '.pill' })).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /Send again/ })).not.toBeInTheDocument();
    expect(screen.queryByText('Send again')).not.toBeInTheDocument();
  });

  it('POSTs the resend and then shows the row pending, resent once', async () => {
    let resent = false;
    const { requests } = mockApi([
      ['GET', '/api/notifications', () => json({ items: [resent ? resentTick : failedTick], nextCursor: null })],
      [
        'POST',
        '/api/notifications/41/resend',
        () => {
          resent = true;
          return json(resentTick);
        },
      ],
    ]);
    renderPage(<NotificationsPage />, { route: '/notifications', path: '/notifications', me: user('operator') });
    const table = await screen.findByRole('table', { name: 'Notifications, newest first' });
    expect(within(table).queryByText(/resent/)).not.toBeInTheDocument();
    await userEvent.click(within(table).getByRole('button', { name: /^Send again: schedule\.tick_failed for schedule 4/ }));

    expect(await screen.findByText('Sending schedule.tick_failed for schedule 4 again.')).toBeInTheDocument();
    expect(posts(requests)).toEqual(['/api/notifications/41/resend']);
    const row = within(table).getAllByRole('row')[1] as Row;
    expect(await within(row).findByText('pending', { selector: '.pill' })).toHaveClass('tone-warning');
    expect(within(row).queryByText('failed', { selector: '.pill' })).not.toBeInTheDocument();
    expect(row.cells[5]).toHaveTextContent('25resent 1×');
    expect(within(row.cells[5]!).getByText('resent 1×')).toHaveClass('muted');
    expect(within(row).queryByRole('button', { name: /Send again/ })).not.toBeInTheDocument();
    // The list was fetched again after the resend, not patched by hand.
    expect(listRequests(requests)).toHaveLength(2);
  });

  it('shows the API’s message when the resend answers 409, and refreshes the row', async () => {
    let answered = false;
    const { requests } = mockApi([
      ['GET', '/api/notifications', () => json({ items: [answered ? resentTick : failedTick], nextCursor: null })],
      [
        'POST',
        '/api/notifications/41/resend',
        () => {
          answered = true;
          return apiError(409, 'conflict', 'notification 41 is pending, not failed or skipped');
        },
      ],
    ]);
    renderPage(<NotificationsPage />, { route: '/notifications', path: '/notifications', me: user('operator') });
    await userEvent.click(await screen.findByRole('button', { name: /^Send again: schedule\.tick_failed for schedule 4/ }));

    const message = await screen.findByText(/^Could not send/);
    expect(message).toHaveTextContent(
      'Could not send schedule.tick_failed for schedule 4 again: notification 41 is pending, not failed or skipped',
    );
    expect(message.closest('.toast')).toHaveClass('tone-danger');
    expect(screen.queryByText(/^Sending .* again\.$/)).not.toBeInTheDocument();
    expect(posts(requests)).toEqual(['/api/notifications/41/resend']);
    // Someone else resent it: the row catches up with where it stands.
    expect(await screen.findByText('pending', { selector: '.pill' })).toBeInTheDocument();
    expect(screen.getByText('resent 1×')).toBeInTheDocument();
  });
});

describe('Overview notice of failed alerts', () => {
  it('links to the failed notifications when there is one', async () => {
    const { requests } = mockApi([
      ['GET', '/api/overview', () => json(overviewBody)],
      ['GET', '/api/notifications', () => json({ items: [failedTick], nextCursor: 'more' })],
    ]);
    renderPage(<OverviewPage />, { me: user('viewer') });
    const link = await screen.findByRole('link', { name: 'See failed notifications' });
    expect(link).toHaveAttribute('href', '/notifications?state=failed');
    expect(link.closest('p')).toHaveTextContent('the latest gave up 1h ago');
    expect(listRequests(requests).map(String)).toEqual(['state=failed&limit=1']);
  });

  it('stays away when no alert failed', async () => {
    const { requests } = mockApi([
      ['GET', '/api/overview', () => json(overviewBody)],
      ['GET', '/api/notifications', () => json({ items: [], nextCursor: null })],
    ]);
    const { client } = renderPage(<OverviewPage />, { me: user('viewer') });
    await screen.findByRole('link', { name: /1\s*Dead letters/ });
    await waitFor(() => expect(client.getQueryState(['notifications', 'latest-failed'])?.status).toBe('success'));
    expect(listRequests(requests).map(String)).toEqual(['state=failed&limit=1']);
    expect(screen.queryByRole('link', { name: 'See failed notifications' })).not.toBeInTheDocument();
    expect(screen.queryByText(/could not be delivered/)).not.toBeInTheDocument();
  });
});
