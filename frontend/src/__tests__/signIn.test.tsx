import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter } from 'react-router';
import { describe, expect, it } from 'vitest';
import { apiError, json, mockApi, testQueryClient, user } from '../../test/utils';
import { AppProviders, AppRoutes } from '../App';
import { safeNext } from '../pages/SignInPage';

function renderApp(route: string) {
  return render(
    <AppProviders client={testQueryClient()}>
      <MemoryRouter initialEntries={[route]}>
        <AppRoutes />
      </MemoryRouter>
    </AppProviders>,
  );
}

describe('signing in', () => {
  it('sends a signed-out user to Sign in, then back to the page they asked for', async () => {
    let signedIn = false;
    const { requests } = mockApi([
      ['GET', '/api/auth/me', () => (signedIn ? json({ user: user('operator') }) : apiError(401, 'unauthorized', 'sign in'))],
      [
        'POST',
        '/api/auth/login',
        (req) => {
          const { email, password } = req.body as { email: string; password: string };
          if (email === 'op@example.com' && password === 'secret') {
            signedIn = true;
            return json({ user: user('operator') });
          }
          return apiError(401, 'unauthorized', 'bad credentials');
        },
      ],
      ['GET', '/api/workers', () => json({ items: [], stuck: [] })],
    ]);
    renderApp('/workers');
    expect(await screen.findByRole('heading', { name: 'Sign in to Cairn' })).toBeInTheDocument();

    await userEvent.type(screen.getByLabelText('Email'), 'op@example.com');
    await userEvent.type(screen.getByLabelText('Password'), 'wrong');
    await userEvent.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('That email and password do not match an account.');

    await userEvent.clear(screen.getByLabelText('Password'));
    await userEvent.type(screen.getByLabelText('Password'), 'secret');
    await userEvent.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByRole('heading', { name: 'Workers' })).toBeInTheDocument();
    expect(await screen.findByText('No workers are running.')).toBeInTheDocument();
    expect(screen.getByText('operator')).toBeInTheDocument();
    expect(requests.filter((r) => r.path === '/api/auth/login').map((r) => r.body)).toEqual([
      { email: 'op@example.com', password: 'wrong' },
      { email: 'op@example.com', password: 'secret' },
    ]);
  });

  it('returns to Sign in when the session ends mid-use (any 401)', async () => {
    let sessionAlive = true;
    mockApi([
      ['GET', '/api/auth/me', () => (sessionAlive ? json({ user: user('viewer') }) : apiError(401, 'unauthorized', 'sign in'))],
      ['GET', '/api/workflows', () => json({ items: [{ name: 'hello', hash: 'abc', steps: 3, description: 'Greets' }] })],
      ['GET', '/api/workers', () => apiError(401, 'unauthorized', 'session expired')],
    ]);
    renderApp('/workflows');
    expect(await screen.findByRole('link', { name: 'hello' })).toBeInTheDocument();
    sessionAlive = false;
    await userEvent.click(screen.getByRole('link', { name: 'Workers' }));
    expect(await screen.findByRole('heading', { name: 'Sign in to Cairn' })).toBeInTheDocument();
  });

  it('signs out', async () => {
    let signedIn = true;
    mockApi([
      ['GET', '/api/auth/me', () => (signedIn ? json({ user: user('admin') }) : apiError(401, 'unauthorized', 'sign in'))],
      [
        'POST',
        '/api/auth/logout',
        () => {
          signedIn = false;
          return { status: 204 };
        },
      ],
      ['GET', '/api/workflows', () => json({ items: [] })],
    ]);
    renderApp('/workflows');
    await userEvent.click(await screen.findByRole('button', { name: 'Sign out' }));
    await waitFor(() => expect(screen.getByRole('heading', { name: 'Sign in to Cairn' })).toBeInTheDocument());
  });

  it('follows only same-app paths after signing in', () => {
    expect(safeNext('/runs?status=dead')).toBe('/runs?status=dead');
    expect(safeNext('https://evil.example')).toBe('/');
    expect(safeNext('//evil.example')).toBe('/');
    expect(safeNext('/signin')).toBe('/');
    expect(safeNext(null)).toBe('/');
  });
});
