// The one way the dashboard talks to Cairn: `fetch` against its own origin, JSON in and
// out, with every failure turned into an `ApiError` that carries the API's
// `{ error: { code, message, details } }`. A 401 also tells the registered handler (the
// app sends the user to Sign in).

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** Errors that repeating the same request will not fix. */
  get isClientError(): boolean {
    return this.status >= 400 && this.status < 500;
  }
}

/** Codes the API uses, by status, for answers whose body is not the usual shape. */
const CODE_BY_STATUS: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  422: 'invalid_input',
  503: 'unavailable',
  500: 'internal',
};

type UnauthorizedHandler = (error: ApiError) => void;
let onUnauthorized: UnauthorizedHandler | null = null;

/** Registers what happens when any request answers 401; returns the unregister function. */
export function setUnauthorizedHandler(handler: UnauthorizedHandler | null): () => void {
  onUnauthorized = handler;
  return () => {
    if (onUnauthorized === handler) onUnauthorized = null;
  };
}

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Do not call the 401 handler (the sign-in form and the "who am I" probe). */
  quiet401?: boolean;
}

/** Turns a failed response into an `ApiError`, reading the API's error body when there is one. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  let code = CODE_BY_STATUS[res.status] ?? (res.status >= 500 ? 'internal' : 'error');
  let message = res.statusText || `request failed with status ${res.status}`;
  let details: unknown;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
      if (body && typeof body === 'object' && body.error && typeof body.error === 'object') {
        if (typeof body.error.code === 'string') code = body.error.code;
        if (typeof body.error.message === 'string') message = body.error.message;
        details = body.error.details;
      }
    } catch {
      // Not JSON (a proxy's error page, say): keep the status text.
    }
  }
  if (res.status === 404 && !text) message = 'not found';
  return new ApiError(res.status, code, message, details);
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json', ...options.headers };
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  let res: Response;
  try {
    res = await fetch(path, {
      method: options.method ?? 'GET',
      headers,
      body,
      credentials: 'same-origin',
      signal: options.signal,
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Cannot reach the Cairn API. Check your connection and try again.');
  }
  if (!res.ok) {
    const error = await errorFromResponse(res);
    if (error.status === 401 && !options.quiet401) onUnauthorized?.(error);
    throw error;
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  if (!text) return undefined as T;
  const type = res.headers.get('Content-Type') ?? '';
  if (type.includes('text/html')) {
    // The server answered an API path with a web page: the dashboard's index, served for
    // paths it does not know. The endpoint does not exist on this server (yet).
    throw new ApiError(404, 'not_found', `This Cairn server has no ${options.method ?? 'GET'} ${path.split('?')[0]} endpoint.`);
  }
  if (!type.includes('json')) return text as T;
  return JSON.parse(text) as T;
}

/** Builds `?a=1&b=2` from the defined, non-empty values (or '' when there are none). */
export function queryString(params: Record<string, string | number | boolean | null | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    search.set(key, String(value));
  }
  const s = search.toString();
  return s ? `?${s}` : '';
}

/** A human sentence for any error a query or mutation may throw. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return 'Something went wrong.';
}
