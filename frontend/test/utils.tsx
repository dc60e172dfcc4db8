// Test helpers: a fake Cairn API behind `fetch`, and rendering with the app's providers.
import { QueryClient } from '@tanstack/react-query';
import { render } from '@testing-library/react';
import type { ReactElement } from 'react';
import { MemoryRouter, Route, Routes } from 'react-router';
import { vi } from 'vitest';
import { AppProviders } from '../src/App';
import { ToastProvider } from '../src/ui';
import { ME_KEY } from '../src/auth/auth';
import type { Role, User } from '../src/api/types';

export interface FakeRequest {
  method: string;
  path: string;
  url: URL;
  body: unknown;
  headers: Record<string, string>;
}

export type FakeAnswer = { status?: number; body?: unknown; text?: string; headers?: Record<string, string> };
type Handler = (req: FakeRequest) => FakeAnswer | Promise<FakeAnswer>;

export function json(body: unknown, status = 200): FakeAnswer {
  return { status, body };
}

export function apiError(status: number, code: string, message: string, details?: unknown): FakeAnswer {
  return { status, body: { error: { code, message, ...(details === undefined ? {} : { details }) } } };
}

/**
 * Replaces `fetch` with routes `"METHOD /path"` (exact path, query ignored, or a RegExp
 * on the path). Unmatched requests answer 404 in the API's error shape. Returns the mock
 * and the list of requests it saw.
 */
export function mockApi(routes: Array<[string, string | RegExp, Handler]>) {
  const requests: FakeRequest[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), 'http://cairn.test');
    const method = (init?.method ?? 'GET').toUpperCase();
    const body = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined;
    const headers = Object.fromEntries(Object.entries((init?.headers as Record<string, string>) ?? {}));
    const req: FakeRequest = { method, path: url.pathname, url, body, headers };
    requests.push(req);
    const route = routes.find(
      ([m, p]) => m === method && (typeof p === 'string' ? p === url.pathname : p.test(url.pathname)),
    );
    const answer = route ? await route[2](req) : apiError(404, 'not_found', `no route ${method} ${url.pathname}`);
    const status = answer.status ?? 200;
    if (status === 204) return new Response(null, { status });
    const text = answer.text ?? (answer.body === undefined ? '' : JSON.stringify(answer.body));
    return new Response(text, {
      status,
      headers: { 'Content-Type': answer.text !== undefined ? 'text/plain' : 'application/json', ...answer.headers },
    });
  });
  vi.stubGlobal('fetch', fetchMock);
  return { fetchMock, requests };
}

export function user(role: Role): User {
  return { id: 1, email: `${role}@example.com`, name: `${role[0]!.toUpperCase()}${role.slice(1)} Person`, role };
}

export function testQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: { queries: { retry: false, gcTime: Infinity }, mutations: { retry: false } },
  });
}

/**
 * Renders `element` at `route` (matching `path`) inside the app's providers, with the
 * signed-in user seeded (or `null` for signed out).
 */
export function renderPage(
  element: ReactElement,
  { route = '/', path = '/', me = user('admin') as User | null, client = testQueryClient() } = {},
) {
  client.setQueryData(ME_KEY, me);
  const result = render(
    <AppProviders client={client}>
      <MemoryRouter initialEntries={[route]}>
        <ToastProvider>
          <Routes>
            <Route path={path} element={element} />
            <Route path="*" element={<p>elsewhere</p>} />
          </Routes>
        </ToastProvider>
      </MemoryRouter>
    </AppProviders>,
  );
  return { ...result, client };
}
