// API tokens: every signed-in user lists, creates and revokes their own; admins also see
// and manage everyone's (service tokens included). A new token's secret is shown once, in
// the dialog that created it. The password form sits here too: it is the other credential
// a user manages themselves.
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { ApiError } from '../api/client';
import {
  changePassword,
  createMyToken,
  createServiceToken,
  listAllTokens,
  listMyTokens,
  revokeMyToken,
  revokeToken,
} from '../api/endpoints';
import type { CreatedToken, Role, TokenView, User } from '../api/types';
import { ME_KEY, RequireRole, useUser } from '../auth/auth';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { formatDateTime } from '../lib/format';
import { useTitle } from '../lib/useTitle';
import {
  Badge,
  Button,
  DateTime,
  Dialog,
  EmptyState,
  ErrorState,
  Field,
  InlineError,
  Loading,
  PageHeader,
  Panel,
  RelativeTime,
  Table,
  useNow,
  type Column,
} from '../ui';

/** Whose tokens a list, a new token or a revocation is about: the caller's, or everyone's (admin). */
type Scope = 'mine' | 'all';

export const TOKENS_KEY = ['tokens'] as const;
const tokensKey = (scope: Scope) => [...TOKENS_KEY, scope] as const;

/** What the server does when a new token names no lifetime. */
export const DEFAULT_EXPIRY_DAYS = 90;
export const MAX_EXPIRY_DAYS = 365;

export type TokenStatus = 'active' | 'revoked' | 'expired';

/** A revoked token stays revoked; otherwise it is expired once its expiry has passed. */
export function tokenStatus(t: Pick<TokenView, 'revoked' | 'expiresAt'>, now: number = Date.now()): TokenStatus {
  if (t.revoked) return 'revoked';
  if (t.expiresAt) {
    const at = Date.parse(t.expiresAt);
    if (!Number.isNaN(at) && at <= now) return 'expired';
  }
  return 'active';
}

const STATUS_TONE = { active: 'success', revoked: 'muted', expired: 'warning' } as const;

/** A status message that takes focus when it appears, so keyboard and screen-reader users land on it. */
function FocusedStatus({ message }: { message: { text: string; seq: number } | null }) {
  const ref = useRef<HTMLParagraphElement>(null);
  useEffect(() => {
    if (message) ref.current?.focus();
  }, [message]);
  return (
    <div role="status">
      {message && (
        <p ref={ref} tabIndex={-1} className="callout tone-success" style={{ margin: 0 }}>
          {message.text}
        </p>
      )}
    </div>
  );
}

function Expires({ iso, now }: { iso: string | null; now: number }) {
  if (!iso) return <span className="muted">never</span>;
  const at = Date.parse(iso);
  if (!Number.isNaN(at) && at <= now) {
    return (
      <time dateTime={iso} title={formatDateTime(iso)}>
        expired
      </time>
    );
  }
  return <RelativeTime iso={iso} now={now} />;
}

/** Who a token belongs to, in the admin list (the API gives only the user's id). */
function owner(t: TokenView, myId: User['id']): string {
  if (t.userId === null) return 'service';
  if (myId !== null && String(t.userId) === String(myId)) return 'you';
  return `user ${t.userId}`;
}

function TokenTable({
  caption,
  tokens,
  now,
  showOwner,
  myId,
  onRevoke,
  empty,
}: {
  caption: string;
  tokens: TokenView[];
  now: number;
  showOwner: boolean;
  myId: User['id'];
  onRevoke: (t: TokenView) => void;
  empty: string;
}) {
  const columns: Column<TokenView>[] = [
    {
      key: 'name',
      header: 'Name',
      render: (t) => (
        <span className="cell-clip" title={t.name}>
          <strong>{t.name}</strong>
        </span>
      ),
    },
  ];
  if (showOwner) columns.push({ key: 'owner', header: 'Owner', render: (t) => <span className="nowrap">{owner(t, myId)}</span> });
  columns.push(
    {
      key: 'role',
      header: 'Role',
      render: (t) => <Badge tone="neutral">{t.role}</Badge>,
    },
    { key: 'created', header: 'Created', render: (t) => <RelativeTime iso={t.createdAt} now={now} /> },
    {
      key: 'used',
      header: 'Last used',
      render: (t) => (t.lastUsedAt ? <RelativeTime iso={t.lastUsedAt} now={now} /> : <span className="muted">never</span>),
    },
    { key: 'expires', header: 'Expires', render: (t) => <Expires iso={t.expiresAt} now={now} /> },
    {
      key: 'status',
      header: 'Status',
      render: (t) => {
        const s = tokenStatus(t, now);
        return <Badge tone={STATUS_TONE[s]}>{s}</Badge>;
      },
    },
    {
      key: 'actions',
      header: <span className="sr-only">Actions</span>,
      render: (t) =>
        tokenStatus(t, now) === 'active' ? (
          <Button size="small" variant="ghost" onClick={() => onRevoke(t)} aria-label={`Revoke token ${t.name}`}>
            Revoke
          </Button>
        ) : null,
    },
  );
  return (
    <Table
      caption={caption}
      columns={columns}
      rows={tokens}
      rowKey={(t) => String(t.id)}
      empty={
        <EmptyState title={empty}>
          Create one here; <code>ctl login</code> makes one too.
        </EmptyState>
      }
    />
  );
}

function parseDays(text: string): number | null {
  if (!/^\d+$/.test(text.trim())) return null;
  const n = Number(text.trim());
  return n >= 1 && n <= MAX_EXPIRY_DAYS ? n : null;
}

/** The secret of a token just created, with a copy button: the only time it is shown. */
function CreatedTokenView({ created }: { created: CreatedToken }) {
  const ref = useRef<HTMLInputElement>(null);
  const [copy, setCopy] = useState<'idle' | 'copied' | 'failed'>('idle');
  useEffect(() => {
    ref.current?.focus();
    ref.current?.select();
  }, []);
  const onCopy = async () => {
    try {
      if (navigator.clipboard?.writeText) {
        await navigator.clipboard.writeText(created.token);
      } else {
        // Plain-HTTP origins have no Clipboard API: copy the selected field instead.
        ref.current?.select();
        if (!document.execCommand('copy')) throw new Error('copy refused');
      }
      setCopy('copied');
    } catch {
      ref.current?.select();
      setCopy('failed');
    }
  };
  return (
    <>
      <div className="callout tone-warning">
        <strong>This token is shown once.</strong> Copy it now: Cairn keeps only a hash of it and cannot show it again.
        If you lose it, revoke it and create another.
      </div>
      <Field label="Your new token">
        {(p) => (
          <div className="row" style={{ flexWrap: 'nowrap' }}>
            <input {...p} ref={ref} className="input mono" readOnly value={created.token} spellCheck={false} autoComplete="off" />
            <Button onClick={() => void onCopy()}>Copy</Button>
          </div>
        )}
      </Field>
      <p role="status" className="muted" style={{ margin: 0 }}>
        {copy === 'copied' ? 'Copied to the clipboard.' : copy === 'failed' ? 'Could not copy: the token is selected, copy it yourself.' : ''}
      </p>
      <dl className="props">
        <dt>Role</dt>
        <dd>{created.role}</dd>
        <dt>Expires</dt>
        <dd>{created.expiresAt ? <DateTime iso={created.expiresAt} /> : 'never'}</dd>
      </dl>
    </>
  );
}

function CreateTokenDialog({ scope, onClose }: { scope: Scope; onClose: () => void }) {
  const queryClient = useQueryClient();
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [days, setDays] = useState(String(DEFAULT_EXPIRY_DAYS));
  const [daysError, setDaysError] = useState<string | null>(null);
  const daysRef = useRef<HTMLInputElement>(null);
  const create = useMutation({
    mutationFn: (body: { name: string; role: Role; expiresInDays: number }) =>
      scope === 'all' ? createServiceToken(body) : createMyToken({ name: body.name, expiresInDays: body.expiresInDays }),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: TOKENS_KEY }),
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const expiresInDays = parseDays(days);
    if (expiresInDays === null) {
      setDaysError(`A whole number of days from 1 to ${MAX_EXPIRY_DAYS}.`);
      daysRef.current?.focus();
      return;
    }
    setDaysError(null);
    create.mutate({ name: name.trim(), role, expiresInDays });
  };
  const title = scope === 'all' ? 'New service token' : 'New token';
  const close = create.isPending ? () => {} : onClose;

  if (create.isSuccess) {
    return (
      <Dialog
        open
        title={title}
        onClose={close}
        footer={
          <Button variant="primary" onClick={onClose}>
            Done
          </Button>
        }
      >
        <CreatedTokenView created={create.data} />
      </Dialog>
    );
  }
  return (
    <Dialog open title={title} onClose={close}>
      <form className="stack" onSubmit={submit} aria-label={title} noValidate>
        <Field label="Name" hint="What uses it, e.g. “ci deploys” or “laptop”.">
          {(p) => <input {...p} className="input" required maxLength={200} value={name} onChange={(e) => setName(e.target.value)} data-autofocus />}
        </Field>
        {scope === 'all' ? (
          <Field label="Role">
            {(p) => (
              <select {...p} className="select" value={role} onChange={(e) => setRole(e.target.value as Role)}>
                <option value="viewer">viewer: read</option>
                <option value="operator">operator: submit and fix runs</option>
                <option value="admin">admin: users and tokens too</option>
              </select>
            )}
          </Field>
        ) : (
          <p className="muted" style={{ margin: 0 }}>
            It acts with your role, and never with more than your account has.
          </p>
        )}
        <Field label="Expires after (days)" hint={`1 to ${MAX_EXPIRY_DAYS} days.`} error={daysError}>
          {(p) => (
            <input
              {...p}
              ref={daysRef}
              className="input"
              type="number"
              inputMode="numeric"
              min={1}
              max={MAX_EXPIRY_DAYS}
              step={1}
              required
              value={days}
              onChange={(e) => setDays(e.target.value)}
              style={{ maxWidth: 120 }}
            />
          )}
        </Field>
        {create.isError && <InlineError error={create.error} />}
        <div className="row row--end">
          <Button onClick={onClose} disabled={create.isPending}>
            Cancel
          </Button>
          <Button type="submit" variant="primary" busy={create.isPending} disabled={!name.trim()}>
            Create token
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

function TokenSection({
  scope,
  now,
  myId,
  notice,
  onCreate,
  onRevoke,
}: {
  scope: Scope;
  now: number;
  myId: User['id'];
  notice: { text: string; seq: number } | null;
  onCreate: () => void;
  onRevoke: (t: TokenView) => void;
}) {
  const tokens = useQuery({
    queryKey: tokensKey(scope),
    queryFn: ({ signal }) => (scope === 'all' ? listAllTokens(signal) : listMyTokens(signal)),
  });
  const mine = scope === 'mine';
  return (
    <Panel
      flush
      title={mine ? 'Your tokens' : 'All tokens'}
      actions={
        <Button variant={mine ? 'primary' : 'secondary'} onClick={onCreate}>
          {mine ? 'New token' : 'New service token'}
        </Button>
      }
    >
      {notice && (
        <div style={{ padding: 12 }}>
          <FocusedStatus message={notice} />
        </div>
      )}
      {tokens.isPending ? (
        <Loading label="Loading tokens…" />
      ) : tokens.isError ? (
        <ErrorState error={tokens.error} onRetry={() => void tokens.refetch()} />
      ) : (
        <TokenTable
          caption={mine ? 'Your tokens' : 'Every token, of every user and service'}
          tokens={tokens.data.items}
          now={now}
          showOwner={!mine}
          myId={myId}
          onRevoke={onRevoke}
          empty={mine ? 'You have no tokens.' : 'There are no tokens.'}
        />
      )}
    </Panel>
  );
}

function PasswordForm() {
  const queryClient = useQueryClient();
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [repeat, setRepeat] = useState('');
  const [mismatch, setMismatch] = useState(false);
  const [done, setDone] = useState<{ text: string; seq: number } | null>(null);
  const currentRef = useRef<HTMLInputElement>(null);
  const nextRef = useRef<HTMLInputElement>(null);
  const repeatRef = useRef<HTMLInputElement>(null);
  const change = useMutation({
    mutationFn: () => changePassword({ currentPassword: current, newPassword: next }),
    onSuccess: () => {
      setCurrent('');
      setNext('');
      setRepeat('');
      setDone((d) => ({ text: 'Password changed. Your other sessions were signed out.', seq: (d?.seq ?? 0) + 1 }));
    },
    onError: (e) => {
      if (!(e instanceof ApiError)) return;
      if (e.status === 401) {
        currentRef.current?.focus();
        // Usually a wrong current password; if the session itself ended, this sends the user to Sign in.
        void queryClient.invalidateQueries({ queryKey: ME_KEY });
      } else if (e.status === 422) {
        nextRef.current?.focus();
      }
    },
  });
  const error = change.error;
  const status = error instanceof ApiError ? error.status : null;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setDone(null);
    if (next !== repeat) {
      setMismatch(true);
      repeatRef.current?.focus();
      return;
    }
    setMismatch(false);
    change.mutate();
  };
  return (
    <Panel title="Change password">
      <form className="stack" onSubmit={submit} aria-label="Change password" noValidate style={{ maxWidth: 420 }}>
        <Field label="Current password" error={status === 401 ? error?.message : undefined}>
          {(p) => (
            <input
              {...p}
              ref={currentRef}
              className="input"
              type="password"
              name="current-password"
              autoComplete="current-password"
              required
              value={current}
              onChange={(e) => setCurrent(e.target.value)}
            />
          )}
        </Field>
        <Field label="New password" hint="At least 8 characters." error={status === 422 ? error?.message : undefined}>
          {(p) => (
            <input
              {...p}
              ref={nextRef}
              className="input"
              type="password"
              name="new-password"
              autoComplete="new-password"
              required
              value={next}
              onChange={(e) => setNext(e.target.value)}
            />
          )}
        </Field>
        <Field label="Repeat the new password" error={mismatch ? 'The two new passwords differ.' : undefined}>
          {(p) => (
            <input
              {...p}
              ref={repeatRef}
              className="input"
              type="password"
              name="repeat-password"
              autoComplete="new-password"
              required
              value={repeat}
              onChange={(e) => setRepeat(e.target.value)}
            />
          )}
        </Field>
        {error && status !== 401 && status !== 422 ? <InlineError error={error} /> : null}
        <p className="muted" style={{ margin: 0 }}>
          Your other signed-in sessions end; this one stays.
        </p>
        <div className="row">
          <Button type="submit" variant="primary" busy={change.isPending} disabled={!current || !next || !repeat}>
            Change password
          </Button>
        </div>
        <FocusedStatus message={done} />
      </form>
    </Panel>
  );
}

export function TokensPage() {
  useTitle('Tokens');
  const user = useUser();
  const queryClient = useQueryClient();
  const now = useNow(30_000);
  const [creating, setCreating] = useState<Scope | null>(null);
  const [revoking, setRevoking] = useState<{ token: TokenView; scope: Scope } | null>(null);
  const [notice, setNotice] = useState<{ scope: Scope; text: string; seq: number } | null>(null);
  const revoke = useMutation({
    mutationFn: ({ token, scope }: { token: TokenView; scope: Scope }) =>
      scope === 'all' ? revokeToken(token.id) : revokeMyToken(token.id),
    onSuccess: (_r, { token, scope }) => {
      setRevoking(null);
      setNotice((n) => ({ scope, text: `Token “${token.name}” revoked. Anything still using it is refused.`, seq: (n?.seq ?? 0) + 1 }));
      void queryClient.invalidateQueries({ queryKey: TOKENS_KEY });
    },
  });
  const myId = user?.id ?? null;
  const section = (scope: Scope) => (
    <TokenSection
      scope={scope}
      now={now}
      myId={myId}
      notice={notice?.scope === scope ? notice : null}
      onCreate={() => setCreating(scope)}
      onRevoke={(token) => setRevoking({ token, scope })}
    />
  );

  return (
    <>
      <PageHeader title="Tokens">
        <p className="muted" style={{ margin: 0 }}>
          Tokens let <code>ctl</code> and scripts call the Cairn API as you. Revoke one you no longer use or may have leaked.
        </p>
      </PageHeader>
      <div className="stack">
        {section('mine')}
        <RequireRole min="admin">{section('all')}</RequireRole>
        {/* A service token has no account, hence no password. */}
        {user && user.id !== null && <PasswordForm />}
      </div>

      {creating && <CreateTokenDialog scope={creating} onClose={() => setCreating(null)} />}
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke token “${revoking?.token.name ?? ''}”?`}
        confirmLabel="Revoke token"
        danger
        busy={revoke.isPending}
        error={revoke.error}
        onConfirm={() => revoking && revoke.mutate(revoking)}
        onClose={() => {
          revoke.reset();
          setRevoking(null);
        }}
      >
        <p>
          Anything using it — <code>ctl</code>, a script, a service — is refused from now on. This cannot be undone.
          {revoking?.scope === 'all' && revoking.token.userId === null ? ' It is a service token: check what runs with it first.' : ''}
        </p>
      </ConfirmDialog>
    </>
  );
}
