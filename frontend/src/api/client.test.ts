import { afterEach, describe, expect, it, vi } from 'vitest';
import { apiError, json, mockApi } from '../../test/utils';
import { ApiError, queryString, request, setUnauthorizedHandler } from './client';
import { bulkTasks, listProjects, listTasks, me, replayTask, startAgent } from './endpoints';

describe('API client', () => {
  let unregister: (() => void) | null = null;
  afterEach(() => unregister?.());

  it('surfaces the API error shape as an ApiError with code, message and details', async () => {
    mockApi([
      ['POST', '/api/tasks', () => apiError(422, 'invalid_input', 'input does not match workflow `hello`', [{ field: 'name' }])],
    ]);
    const err = await request('/api/tasks', { method: 'POST', body: { workflow: 'hello', input: {} } }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({
      status: 422,
      code: 'invalid_input',
      message: 'input does not match workflow `hello`',
      details: [{ field: 'name' }],
    });
    expect((err as ApiError).isClientError).toBe(true);
  });

  it('keeps a sensible code and message when the body is not the API shape', async () => {
    mockApi([['GET', '/api/workers', () => ({ status: 502, text: '<html>Bad gateway</html>' })]]);
    const err = (await request('/api/workers').catch((e) => e)) as ApiError;
    expect(err.status).toBe(502);
    expect(err.code).toBe('internal');
    expect(err.isClientError).toBe(false);
  });

  it('reports an unreachable API as a network error', async () => {
    vi.stubGlobal('fetch', vi.fn().mockRejectedValue(new TypeError('Failed to fetch')));
    const err = (await request('/api/tasks').catch((e) => e)) as ApiError;
    expect(err.code).toBe('network');
    expect(err.message).toMatch(/Cannot reach/);
  });

  it('calls the 401 handler (the app sends the user to Sign in), unless told to be quiet', async () => {
    mockApi([
      ['GET', '/api/tasks', () => apiError(401, 'unauthorized', 'sign in first')],
      ['GET', '/api/auth/me', () => apiError(401, 'unauthorized', 'sign in first')],
    ]);
    const handler = vi.fn();
    unregister = setUnauthorizedHandler(handler);
    await expect(listTasks({})).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
    expect(handler).toHaveBeenCalledTimes(1);
    // `me` asks quietly and answers null for "signed out"
    await expect(me()).resolves.toBeNull();
    expect(handler).toHaveBeenCalledTimes(1);
  });

  it('does not call the 401 handler for 403: the user is signed in but not allowed', async () => {
    mockApi([['POST', '/api/tasks/bulk/retry', () => apiError(403, 'forbidden', 'operators only')]]);
    const handler = vi.fn();
    unregister = setUnauthorizedHandler(handler);
    await expect(bulkTasks('retry', {}, true)).rejects.toMatchObject({ status: 403, code: 'forbidden' });
    expect(handler).not.toHaveBeenCalled();
  });

  it('sends JSON bodies in camelCase exactly as the contract says', async () => {
    const { requests } = mockApi([
      ['POST', '/api/tasks/bulk/retry', () => json({ matched: 2, ids: ['a', 'b'], processed: 0 })],
      ['POST', /^\/api\/tasks\/[^/]+\/replay$/, () => json({ taskId: 'N', status: 'queued', replayOf: 'R 1' }, 201)],
      ['POST', '/api/agents/analyze', () => json({ taskId: 'T', status: 'queued' })],
    ]);
    await expect(bulkTasks('retry', { status: 'dead', workflow: 'hello' }, true)).resolves.toEqual({
      matched: 2,
      ids: ['a', 'b'],
      processed: 0,
    });
    await replayTask('R 1', { fromStep: 'pause', input: { name: 'Ada' }, latestDefinition: true });
    await startAgent('analyze', 7);
    expect(requests.map((r) => [r.method, r.path, r.body])).toEqual([
      ['POST', '/api/tasks/bulk/retry', { filter: { status: 'dead', workflow: 'hello' }, dryRun: true }],
      ['POST', '/api/tasks/R%201/replay', { fromStep: 'pause', input: { name: 'Ada' }, latestDefinition: true }],
      ['POST', '/api/agents/analyze', { projectId: 7 }],
    ]);
    expect(requests[0]!.headers['Content-Type']).toBe('application/json');
  });

  it('answers undefined for 204 and accepts both list shapes for projects', async () => {
    mockApi([
      ['POST', '/api/dead-letters/9/purge', () => ({ status: 204 })],
      ['GET', '/api/projects', () => json({ items: [{ id: 1, name: 'p' }] })],
    ]);
    await expect(request('/api/dead-letters/9/purge', { method: 'POST' })).resolves.toBeUndefined();
    await expect(listProjects()).resolves.toEqual([{ id: 1, name: 'p' }]);
    mockApi([['GET', '/api/projects', () => json([{ id: 2, name: 'q' }])]]);
    await expect(listProjects()).resolves.toEqual([{ id: 2, name: 'q' }]);
  });

  it('builds query strings from defined, non-empty values only', () => {
    expect(queryString({ a: 1, b: '', c: undefined, d: null, e: 'x y', f: false })).toBe('?a=1&e=x+y&f=false');
    expect(queryString({})).toBe('');
  });
});

describe('API client against a server without the endpoint', () => {
  it('treats an HTML page answered for an API path as "no such endpoint"', async () => {
    mockApi([['GET', '/api/projects', () => ({ status: 200, text: '<!doctype html><div id="root"></div>', headers: { 'Content-Type': 'text/html' } })]]);
    await expect(listProjects()).rejects.toMatchObject({ status: 404, code: 'not_found', message: 'This Cairn server has no GET /api/projects endpoint.' });
  });
});
