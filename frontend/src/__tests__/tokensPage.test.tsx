import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter } from 'react-router';
import { describe, expect, it } from 'vitest';
import { tokenView } from '../../test/fixtures';
import { apiError, json, mockApi, renderPage, testQueryClient, user } from '../../test/utils';
import type { TokenView } from '../api/types';
import { AppProviders, AppRoutes } from '../App';
import { ME_KEY } from '../auth/auth';
import { TokensPage, tokenStatus } from '../pages/TokensPage';

const LONG_NAME = 'deploys from the release pipeline of the billing service in the eu-west region, nightly';

function myTokens(): TokenView[] {
  return [
    tokenView({ id: 1, name: LONG_NAME }),
    tokenView({ id: 2, name: 'old laptop', lastUsedAt: null }, { createdDaysAgo: 100, expiresInDays: -10 }),
    tokenView({ id: 3, name: 'leaked', revoked: true }),
    tokenView({ id: 4, name: 'forever' }, { expiresInDays: null }),
  ];
}

function renderTokens(role: 'viewer' | 'operator' | 'admin' = 'viewer') {
  return renderPage(<TokensPage />, { route: '/tokens', path: '/tokens', me: user(role) });
}

function rowOf(table: HTMLElement, name: string): HTMLElement {
  return within(table).getByText(name).closest('tr')!;
}

describe('token status', () => {
  it('is revoked, else expired once past its expiry, else active', () => {
    const now = Date.parse('2026-03-01T00:00:00Z');
    expect(tokenStatus({ revoked: false, expiresAt: null }, now)).toBe('active');
    expect(tokenStatus({ revoked: false, expiresAt: '2026-03-02T00:00:00Z' }, now)).toBe('active');
    expect(tokenStatus({ revoked: false, expiresAt: '2026-02-28T00:00:00Z' }, now)).toBe('expired');
    expect(tokenStatus({ revoked: true, expiresAt: '2026-02-28T00:00:00Z' }, now)).toBe('revoked');
    expect(tokenStatus({ revoked: true, expiresAt: null }, now)).toBe('revoked');
  });
});

describe('Tokens page', () => {
  it('lists the caller’s tokens with their status, and offers Revoke only on active ones', async () => {
    mockApi([['GET', '/api/auth/tokens', () => json({ items: myTokens() })]]);
    renderTokens();
    const table = await screen.findByRole('table', { name: 'Your tokens' });

    const active = rowOf(table, LONG_NAME);
    expect(within(active).getByText(LONG_NAME).closest('[title]')).toHaveAttribute('title', LONG_NAME);
    expect(within(active).getByText('active')).toBeInTheDocument();
    expect(within(active).getByText('operator')).toBeInTheDocument();
    expect(within(active).getByText('10d ago')).toHaveAttribute('datetime');
    expect(within(active).getByText('2h ago')).toHaveAttribute('title');
    expect(within(active).getByText('in 80d')).toHaveAttribute('title');
    expect(within(active).getByRole('button', { name: `Revoke token ${LONG_NAME}` })).toBeInTheDocument();

    const expired = rowOf(table, 'old laptop');
    expect(within(expired).getAllByText('expired')).toHaveLength(2); // the Expires column and the status
    expect(within(expired).getAllByText('expired')[0]!.tagName).toBe('TIME');
    expect(within(expired).getByText('never')).toBeInTheDocument(); // never used
    expect(within(expired).queryByRole('button')).not.toBeInTheDocument();

    const revoked = rowOf(table, 'leaked');
    expect(within(revoked).getByText('revoked')).toBeInTheDocument();
    expect(within(revoked).queryByRole('button')).not.toBeInTheDocument();

    const forever = rowOf(table, 'forever');
    expect(within(forever).getByText('never')).toBeInTheDocument(); // never expires
    expect(within(forever).getByText('active')).toBeInTheDocument();
  });

  it('has an empty state and an error state with retry', async () => {
    let fail = true;
    mockApi([['GET', '/api/auth/tokens', () => (fail ? apiError(503, 'unavailable', 'database unreachable') : json({ items: [] }))]]);
    renderTokens();
    expect(await screen.findByRole('alert')).toHaveTextContent('database unreachable');
    fail = false;
    await userEvent.click(screen.getByRole('button', { name: 'Try again' }));
    expect(await screen.findByText('You have no tokens.')).toBeInTheDocument();
  });

  it('creates a token and shows its secret once, with a copy button', async () => {
    const u = userEvent.setup();
    const items: TokenView[] = [];
    const { requests } = mockApi([
      ['GET', '/api/auth/tokens', () => json({ items })],
      [
        'POST',
        '/api/auth/token',
        (req) => {
          const { name } = req.body as { name: string };
          items.push(tokenView({ id: 5, name, lastUsedAt: null }, { createdDaysAgo: 0, expiresInDays: 30 }));
          return json({ id: 5, token: 'crn_s3cr3t_once', role: 'viewer', expiresAt: '2026-04-01T00:00:00Z' }, 201);
        },
      ],
    ]);
    renderTokens();
    expect(await screen.findByText('You have no tokens.')).toBeInTheDocument();
    await u.click(screen.getByRole('button', { name: 'New token' }));
    const dialog = screen.getByRole('dialog', { name: 'New token' });
    expect(within(dialog).getByLabelText('Name')).toHaveFocus();
    expect(within(dialog).getByLabelText('Expires after (days)')).toHaveValue(90);
    await u.type(within(dialog).getByLabelText('Name'), 'ci');
    await u.clear(within(dialog).getByLabelText('Expires after (days)'));
    await u.type(within(dialog).getByLabelText('Expires after (days)'), '30');
    await u.click(within(dialog).getByRole('button', { name: 'Create token' }));

    const secret = await within(dialog).findByLabelText('Your new token');
    expect(secret).toHaveValue('crn_s3cr3t_once');
    expect(secret).toHaveAttribute('readonly');
    expect(secret).toHaveFocus();
    expect(dialog).toHaveTextContent('This token is shown once.');
    await u.click(within(dialog).getByRole('button', { name: 'Copy' }));
    expect(await within(dialog).findByText('Copied to the clipboard.')).toBeInTheDocument();
    expect(await navigator.clipboard.readText()).toBe('crn_s3cr3t_once');
    expect(requests.filter((r) => r.method === 'POST').map((r) => [r.path, r.body])).toEqual([['/api/auth/token', { name: 'ci', expiresInDays: 30 }]]);

    // the new token is listed; once the dialog is closed its secret is gone for good
    expect(await screen.findByRole('table', { name: 'Your tokens' })).toHaveTextContent('ci');
    await u.click(within(dialog).getByRole('button', { name: 'Done' }));
    expect(screen.queryByRole('dialog')).not.toBeInTheDocument();
    expect(screen.queryByDisplayValue('crn_s3cr3t_once')).not.toBeInTheDocument();
    expect(document.body).not.toHaveTextContent('crn_s3cr3t_once');
    expect(screen.getByRole('button', { name: 'New token' })).toHaveFocus();
  });

  it('refuses a lifetime outside 1–365 days without asking the server, and shows the server’s refusals', async () => {
    const { requests } = mockApi([
      ['GET', '/api/auth/tokens', () => json({ items: [] })],
      ['POST', '/api/auth/token', () => apiError(422, 'invalid_input', 'name is too long')],
    ]);
    renderTokens();
    await userEvent.click(await screen.findByRole('button', { name: 'New token' }));
    const dialog = screen.getByRole('dialog', { name: 'New token' });
    await userEvent.type(within(dialog).getByLabelText('Name'), 'ci');
    const days = within(dialog).getByLabelText('Expires after (days)');
    await userEvent.clear(days);
    await userEvent.type(days, '400');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Create token' }));
    expect(days).toHaveAccessibleDescription(/A whole number of days from 1 to 365\./);
    expect(days).toHaveFocus();
    expect(requests.some((r) => r.method === 'POST')).toBe(false);

    await userEvent.clear(days);
    await userEvent.type(days, '365');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Create token' }));
    expect(await within(dialog).findByRole('alert')).toHaveTextContent('name is too long');
    expect(requests.filter((r) => r.method === 'POST').map((r) => r.body)).toEqual([{ name: 'ci', expiresInDays: 365 }]);
  });

  it('revokes only after confirmation, then moves focus to a status message', async () => {
    const items = myTokens();
    const { requests } = mockApi([
      ['GET', '/api/auth/tokens', () => json({ items })],
      [
        'DELETE',
        '/api/auth/tokens/4',
        () => {
          items[3] = { ...items[3]!, revoked: true };
          return { status: 204 };
        },
      ],
    ]);
    renderTokens();
    await userEvent.click(await screen.findByRole('button', { name: 'Revoke token forever' }));
    let dialog = screen.getByRole('alertdialog', { name: 'Revoke token “forever”?' });
    expect(within(dialog).getByRole('button', { name: 'Cancel' })).toHaveFocus();
    await userEvent.click(within(dialog).getByRole('button', { name: 'Cancel' }));
    expect(requests.some((r) => r.method === 'DELETE')).toBe(false);
    expect(screen.getByRole('button', { name: 'Revoke token forever' })).toHaveFocus();

    await userEvent.click(screen.getByRole('button', { name: 'Revoke token forever' }));
    dialog = screen.getByRole('alertdialog', { name: 'Revoke token “forever”?' });
    await userEvent.click(within(dialog).getByRole('button', { name: 'Revoke token' }));
    const notice = await screen.findByText('Token “forever” revoked. Anything still using it is refused.');
    await waitFor(() => expect(notice).toHaveFocus());
    expect(notice.closest('[role="status"]')).not.toBeNull();
    expect(screen.queryByRole('alertdialog')).not.toBeInTheDocument();
    expect(requests.filter((r) => r.method === 'DELETE').map((r) => r.path)).toEqual(['/api/auth/tokens/4']);

    const table = screen.getByRole('table', { name: 'Your tokens' });
    await waitFor(() => expect(within(rowOf(table, 'forever')).getByText('revoked')).toBeInTheDocument());
    expect(screen.queryByRole('button', { name: 'Revoke token forever' })).not.toBeInTheDocument();
    expect(notice).toHaveFocus();
  });

  it('keeps the confirmation open with the server’s error when revoking fails', async () => {
    mockApi([
      ['GET', '/api/auth/tokens', () => json({ items: myTokens() })],
      ['DELETE', '/api/auth/tokens/4', () => apiError(404, 'not_found', 'no token 4')],
    ]);
    renderTokens();
    await userEvent.click(await screen.findByRole('button', { name: 'Revoke token forever' }));
    const dialog = screen.getByRole('alertdialog');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Revoke token' }));
    expect(await within(dialog).findByRole('alert')).toHaveTextContent('no token 4');
  });
});

describe('Tokens page, admin section', () => {
  const all = (): TokenView[] => [
    tokenView({ id: 1, name: 'mine', userId: 1 }),
    tokenView({ id: 7, name: 'ada laptop', userId: 2, role: 'viewer' }),
    tokenView({ id: 9, name: 'billing service', userId: null, role: 'operator' }),
  ];

  it('is hidden from viewers and operators, who never ask for every token', async () => {
    for (const role of ['viewer', 'operator'] as const) {
      const { requests } = mockApi([['GET', '/api/auth/tokens', () => json({ items: [] })]]);
      const { unmount } = renderTokens(role);
      expect(await screen.findByText('You have no tokens.')).toBeInTheDocument();
      expect(screen.queryByRole('heading', { name: 'All tokens' })).not.toBeInTheDocument();
      expect(screen.queryByRole('button', { name: 'New service token' })).not.toBeInTheDocument();
      expect(requests.some((r) => r.path.startsWith('/api/tokens'))).toBe(false);
      unmount();
    }
  });

  it('lists every token with its owner, creates service tokens and revokes any token', async () => {
    const items = all();
    const { requests } = mockApi([
      ['GET', '/api/auth/tokens', () => json({ items: [items[0]] })],
      ['GET', '/api/tokens', () => json({ items })],
      ['POST', '/api/tokens', () => json({ id: 10, token: 'crn_service_secret', role: 'operator', expiresAt: null }, 201)],
      ['DELETE', '/api/tokens/7', () => ({ status: 204 })],
    ]);
    renderTokens('admin');
    const table = await screen.findByRole('table', { name: 'Every token, of every user and service' });
    expect(within(rowOf(table, 'mine')).getByText('you')).toBeInTheDocument();
    expect(within(rowOf(table, 'ada laptop')).getByText('user 2')).toBeInTheDocument();
    expect(within(rowOf(table, 'billing service')).getByText('service')).toBeInTheDocument();

    await userEvent.click(screen.getByRole('button', { name: 'New service token' }));
    const dialog = screen.getByRole('dialog', { name: 'New service token' });
    await userEvent.type(within(dialog).getByLabelText('Name'), 'billing v2');
    await userEvent.selectOptions(within(dialog).getByLabelText('Role'), 'operator');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Create token' }));
    expect(await within(dialog).findByLabelText('Your new token')).toHaveValue('crn_service_secret');
    expect(dialog).toHaveTextContent('never');
    await userEvent.click(within(dialog).getByRole('button', { name: 'Done' }));
    expect(requests.filter((r) => r.method === 'POST').map((r) => [r.path, r.body])).toEqual([
      ['/api/tokens', { name: 'billing v2', role: 'operator', expiresInDays: 90 }],
    ]);

    await userEvent.click(within(table).getByRole('button', { name: 'Revoke token ada laptop' }));
    await userEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Revoke token' }));
    const notice = await screen.findByText('Token “ada laptop” revoked. Anything still using it is refused.');
    await waitFor(() => expect(notice).toHaveFocus());
    expect(requests.filter((r) => r.method === 'DELETE').map((r) => r.path)).toEqual(['/api/tokens/7']);
  });
});

describe('Change password', () => {
  async function fill(current: string, next: string, repeat = next) {
    await userEvent.type(screen.getByLabelText('Current password'), current);
    await userEvent.type(screen.getByLabelText('New password'), next);
    await userEvent.type(screen.getByLabelText('Repeat the new password'), repeat);
    await userEvent.click(screen.getByRole('button', { name: 'Change password' }));
  }

  it('changes the password and says the other sessions ended', async () => {
    const { requests } = mockApi([
      ['GET', '/api/auth/tokens', () => json({ items: [] })],
      ['POST', '/api/auth/password', () => ({ status: 204 })],
    ]);
    renderTokens();
    await screen.findByText('You have no tokens.');
    await fill('old-password', 'a-new-password');
    const done = await screen.findByText('Password changed. Your other sessions were signed out.');
    await waitFor(() => expect(done).toHaveFocus());
    expect(requests.filter((r) => r.method === 'POST').map((r) => r.body)).toEqual([
      { currentPassword: 'old-password', newPassword: 'a-new-password' },
    ]);
    expect(screen.getByLabelText('Current password')).toHaveValue('');
    expect(screen.getByLabelText('New password')).toHaveValue('');
  });

  it('refuses two different new passwords without asking the server', async () => {
    const { requests } = mockApi([['GET', '/api/auth/tokens', () => json({ items: [] })]]);
    renderTokens();
    await screen.findByText('You have no tokens.');
    await fill('old-password', 'a-new-password', 'a-new-passwort');
    expect(screen.getByLabelText('Repeat the new password')).toHaveAccessibleDescription('The two new passwords differ.');
    expect(screen.getByLabelText('Repeat the new password')).toHaveFocus();
    expect(requests.some((r) => r.method === 'POST')).toBe(false);
  });

  it('shows a wrong current password at its field, and stays signed in', async () => {
    const { requests } = mockApi([
      ['GET', '/api/auth/me', () => json({ user: user('viewer') })],
      ['GET', '/api/auth/tokens', () => json({ items: [] })],
      ['POST', '/api/auth/password', () => apiError(401, 'unauthorized', 'the current password is wrong')],
    ]);
    const { client } = renderTokens();
    let signedOut = false;
    client.getQueryCache().subscribe((e) => {
      if (e.query.queryKey[0] === ME_KEY[0] && e.query.state.data === null) signedOut = true;
    });
    await screen.findByText('You have no tokens.');
    await fill('not-it', 'a-new-password');
    const current = screen.getByLabelText('Current password');
    await waitFor(() => expect(current).toHaveAccessibleDescription('the current password is wrong'));
    expect(current).toHaveAttribute('aria-invalid', 'true');
    expect(current).toHaveFocus();
    // the session is checked again, and is still there
    await waitFor(() => expect(requests.some((r) => r.path === '/api/auth/me')).toBe(true));
    await waitFor(() => expect(client.getQueryState(ME_KEY)?.fetchStatus).toBe('idle'));
    expect(client.getQueryData(ME_KEY)).toEqual(user('viewer'));
    expect(signedOut).toBe(false);
    expect(screen.getByRole('heading', { name: 'Change password' })).toBeInTheDocument();
  });

  it('shows a too-short new password at its field', async () => {
    mockApi([
      ['GET', '/api/auth/tokens', () => json({ items: [] })],
      ['POST', '/api/auth/password', () => apiError(422, 'invalid_input', 'the new password needs at least 8 characters')],
    ]);
    renderTokens();
    await screen.findByText('You have no tokens.');
    await fill('old-password', 'short');
    const next = screen.getByLabelText('New password');
    await waitFor(() => expect(next).toHaveAccessibleDescription('At least 8 characters. the new password needs at least 8 characters'));
    expect(next).toHaveFocus();
  });

  it('shows any other refusal as the server words it', async () => {
    mockApi([
      ['GET', '/api/auth/tokens', () => json({ items: [] })],
      ['POST', '/api/auth/password', () => apiError(403, 'forbidden', 'sign in with a password to change it')],
    ]);
    renderTokens();
    await screen.findByText('You have no tokens.');
    await fill('old-password', 'a-new-password');
    expect(await screen.findByRole('alert')).toHaveTextContent('sign in with a password to change it');
  });

  it('is not offered to a service token, which has no account', async () => {
    mockApi([['GET', '/api/auth/tokens', () => json({ items: [] })]]);
    renderPage(<TokensPage />, { route: '/tokens', path: '/tokens', me: { id: null, email: null, name: 'ci', role: 'operator' } });
    await screen.findByText('You have no tokens.');
    expect(screen.queryByRole('heading', { name: 'Change password' })).not.toBeInTheDocument();
  });
});

describe('navigation', () => {
  it('links Tokens for every signed-in user', async () => {
    mockApi([
      ['GET', '/api/auth/me', () => json({ user: user('viewer') })],
      ['GET', '/api/workers', () => json({ items: [], stuck: [] })],
      ['GET', '/api/auth/tokens', () => json({ items: [] })],
    ]);
    render(
      <AppProviders client={testQueryClient()}>
        <MemoryRouter initialEntries={['/workers']}>
          <AppRoutes />
        </MemoryRouter>
      </AppProviders>,
    );
    const nav = await screen.findByRole('navigation', { name: 'Main' });
    await userEvent.click(within(nav).getByRole('link', { name: 'Tokens' }));
    expect(await screen.findByRole('heading', { level: 1, name: 'Tokens' })).toBeInTheDocument();
    expect(within(nav).getByRole('link', { name: 'Tokens' })).toHaveAttribute('aria-current', 'page');
    expect(await screen.findByText('You have no tokens.')).toBeInTheDocument();
  });
});
