import type { ReactNode } from 'react';
import { ApiError, errorMessage } from '../api/client';

export function Spinner({ size = 'normal', label = 'Loading' }: { size?: 'normal' | 'small'; label?: string | null }) {
  if (label === null) return <span className={`spinner${size === 'small' ? ' spinner--small' : ''}`} aria-hidden="true" />;
  return (
    <span role="status" className="row">
      <span className={`spinner${size === 'small' ? ' spinner--small' : ''}`} aria-hidden="true" />
      <span className="sr-only">{label}</span>
    </span>
  );
}

/** The whole-area loading state. */
export function Loading({ label = 'Loading…' }: { label?: string }) {
  return (
    <div className="state" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" />
      <span>{label}</span>
    </div>
  );
}

export function EmptyState({ title, children, action }: { title: string; children?: ReactNode; action?: ReactNode }) {
  return (
    <div className="state">
      <p className="state__title">{title}</p>
      {children && <div>{children}</div>}
      {action}
    </div>
  );
}

function errorTitle(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 403) return 'You do not have permission to see this';
    if (error.status === 404) return 'Not found';
    if (error.status === 0) return 'Cannot reach Cairn';
    if (error.status >= 500) return 'Cairn had a problem answering';
  }
  return 'Could not load this';
}

/** A failed load: what went wrong, the API's error code, and a way to try again. */
export function ErrorState({ error, onRetry, title }: { error: unknown; onRetry?: () => void; title?: string }) {
  const code = error instanceof ApiError ? error.code : null;
  const status = error instanceof ApiError && error.status > 0 ? error.status : null;
  return (
    <div className="state state--error" role="alert">
      <p className="state__title">{title ?? errorTitle(error)}</p>
      <p>{errorMessage(error)}</p>
      {code && (
        <p className="state__code">
          {status ? `${status} ` : ''}
          {code}
        </p>
      )}
      {onRetry && (
        <button type="button" className="button button--secondary" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

/** An error from an action, shown inline (in a dialog or beside a form). */
export function InlineError({ error }: { error: unknown }) {
  if (!error) return null;
  const code = error instanceof ApiError ? error.code : null;
  return (
    <div className="callout tone-danger" role="alert">
      {errorMessage(error)}
      {code && <span className="state__code"> ({code})</span>}
    </div>
  );
}
