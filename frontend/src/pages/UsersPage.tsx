// Users & tokens (admin): who has an account, with what role, whether it may sign in,
// and how many working tokens each holds. Admins create accounts, change a role or a
// name, set a new password, disable or delete an account. Tokens themselves (every
// user's and the service tokens) are listed and revoked on the Tokens page.
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { Link } from 'react-router';
import { createUser, deleteUser, listAllTokens, listUsers, updateUser } from '../api/endpoints';
import type { Role, TokenView, UserAccount, UserChange } from '../api/types';
import { RequireRole, useUser } from '../auth/auth';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { useTitle } from '../lib/useTitle';
import {
  Badge,
  Button,
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
import { tokenStatus } from './TokensPage';

export const USERS_KEY = ['users'] as const;

const ROLES: { value: Role; label: string }[] = [
  { value: 'viewer', label: 'viewer: read' },
  { value: 'operator', label: 'operator: submit and fix runs' },
  { value: 'admin', label: 'admin: users and tokens too' },
];

/** Active tokens per user id (service tokens under `service`). */
export function tokensPerUser(tokens: TokenView[], now: number = Date.now()): Map<string, number> {
  const counts = new Map<string, number>();
  for (const t of tokens) {
    if (tokenStatus(t, now) !== 'active') continue;
    const key = t.userId === null ? 'service' : String(t.userId);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

function UserDialog({ editing, onClose, onDone }: { editing: UserAccount | null; onClose: () => void; onDone: (text: string) => void }) {
  const queryClient = useQueryClient();
  const [email, setEmail] = useState('');
  const [name, setName] = useState(editing?.name ?? '');
  const [role, setRole] = useState<Role>(editing?.role ?? 'viewer');
  const [password, setPassword] = useState('');
  const [disabled, setDisabled] = useState(editing?.disabled ?? false);
  const [passwordError, setPasswordError] = useState<string | null>(null);
  const passwordRef = useRef<HTMLInputElement>(null);
  const save = useMutation({
    mutationFn: () => {
      if (!editing) return createUser({ email: email.trim(), name: name.trim(), password, role });
      const change: UserChange = {};
      if (name.trim() !== editing.name) change.name = name.trim();
      if (role !== editing.role) change.role = role;
      if (disabled !== editing.disabled) change.disabled = disabled;
      if (password) change.password = password;
      return updateUser(editing.id, change);
    },
    onSuccess: (u) => {
      void queryClient.invalidateQueries({ queryKey: USERS_KEY });
      const who = u?.email ?? editing?.email ?? email.trim();
      onDone(editing ? `${who} updated.` : `${who} can now sign in as ${role}.`);
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if ((!editing || password) && password.length < 8) {
      setPasswordError('At least 8 characters.');
      passwordRef.current?.focus();
      return;
    }
    setPasswordError(null);
    save.mutate();
  };
  const title = editing ? `Edit ${editing.email}` : 'New user';
  return (
    <Dialog open title={title} onClose={save.isPending ? () => {} : onClose}>
      <form className="stack" onSubmit={submit} aria-label={title} noValidate>
        {!editing && (
          <Field label="Email">
            {(p) => (
              <input {...p} className="input" type="email" autoComplete="off" required value={email} onChange={(e) => setEmail(e.target.value)} data-autofocus />
            )}
          </Field>
        )}
        <Field label="Name">
          {(p) => <input {...p} className="input" value={name} onChange={(e) => setName(e.target.value)} data-autofocus={editing ? true : undefined} />}
        </Field>
        <Field label="Role">
          {(p) => (
            <select {...p} className="select" value={role} onChange={(e) => setRole(e.target.value as Role)}>
              {ROLES.map((r) => (
                <option key={r.value} value={r.value}>
                  {r.label}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field
          label={editing ? 'New password' : 'Password'}
          hint={editing ? 'Leave empty to keep the current one. A new one signs the user out everywhere.' : 'At least 8 characters; tell it to the user.'}
          error={passwordError}
        >
          {(p) => (
            <input
              {...p}
              ref={passwordRef}
              className="input"
              type="password"
              autoComplete="new-password"
              required={!editing}
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          )}
        </Field>
        {editing && (
          <label className="checkbox">
            <input type="checkbox" checked={disabled} onChange={(e) => setDisabled(e.target.checked)} />
            Disabled: cannot sign in, and their sessions and tokens stop working
          </label>
        )}
        {save.isError && <InlineError error={save.error} />}
        <div className="row row--end">
          <Button onClick={onClose} disabled={save.isPending}>
            Cancel
          </Button>
          <Button type="submit" variant="primary" busy={save.isPending} disabled={!editing && !email.trim()}>
            {editing ? 'Save changes' : 'Create user'}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

function UsersPanel() {
  const me = useUser();
  const queryClient = useQueryClient();
  const now = useNow(60_000);
  const [dialog, setDialog] = useState<{ editing: UserAccount | null } | null>(null);
  const [deleting, setDeleting] = useState<UserAccount | null>(null);
  const [notice, setNotice] = useState<{ text: string; seq: number } | null>(null);
  const noticeRef = useRef<HTMLParagraphElement>(null);
  useEffect(() => {
    if (notice) noticeRef.current?.focus();
  }, [notice]);
  const say = (text: string) => setNotice((n) => ({ text, seq: (n?.seq ?? 0) + 1 }));
  const users = useQuery({ queryKey: USERS_KEY, queryFn: ({ signal }) => listUsers(signal) });
  const tokens = useQuery({ queryKey: ['tokens', 'all'], queryFn: ({ signal }) => listAllTokens(signal) });
  const remove = useMutation({
    mutationFn: (u: UserAccount) => deleteUser(u.id),
    onSuccess: (_r, u) => {
      setDeleting(null);
      say(`${u.email} deleted, with their sessions and tokens.`);
      void queryClient.invalidateQueries({ queryKey: USERS_KEY });
      void queryClient.invalidateQueries({ queryKey: ['tokens'] });
    },
  });
  const counts = tokensPerUser(tokens.data?.items ?? [], now);
  const isMe = (u: UserAccount) => me?.id !== null && me?.id !== undefined && String(me.id) === String(u.id);

  const columns: Column<UserAccount>[] = [
    {
      key: 'who',
      header: 'User',
      render: (u) => (
        <span className="cell-clip" title={`${u.name ? `${u.name} · ` : ''}${u.email}`}>
          <strong>{u.name || u.email}</strong>
          {u.name && <span className="muted"> · {u.email}</span>}
          {isMe(u) && <span className="muted"> (you)</span>}
        </span>
      ),
    },
    { key: 'role', header: 'Role', render: (u) => <Badge tone="neutral">{u.role}</Badge> },
    {
      key: 'status',
      header: 'Status',
      render: (u) => (u.disabled ? <Badge tone="muted">disabled</Badge> : <Badge tone="success">active</Badge>),
    },
    {
      key: 'tokens',
      header: 'Active tokens',
      className: 'num',
      render: (u) => (tokens.isSuccess ? counts.get(String(u.id)) ?? 0 : '—'),
    },
    { key: 'created', header: 'Created', render: (u) => <RelativeTime iso={u.createdAt} now={now} /> },
    {
      key: 'actions',
      header: <span className="sr-only">Actions</span>,
      render: (u) => (
        <div className="row" style={{ flexWrap: 'nowrap' }}>
          <Button size="small" onClick={() => setDialog({ editing: u })} aria-label={`Edit… ${u.email}`}>
            Edit…
          </Button>
          <Button
            size="small"
            variant="ghost"
            onClick={() => setDeleting(u)}
            disabled={isMe(u)}
            title={isMe(u) ? 'You cannot delete your own account here' : undefined}
            aria-label={`Delete… ${u.email}`}
          >
            Delete…
          </Button>
        </div>
      ),
    },
  ];

  return (
    <Panel
      flush
      title="Users"
      actions={
        <Button variant="primary" onClick={() => setDialog({ editing: null })}>
          New user
        </Button>
      }
    >
      <div role="status">
        {notice && (
          <p ref={noticeRef} tabIndex={-1} className="callout tone-success" style={{ margin: 12 }}>
            {notice.text}
          </p>
        )}
      </div>
      {users.isPending ? (
        <Loading label="Loading users…" />
      ) : users.isError ? (
        <ErrorState error={users.error} onRetry={() => void users.refetch()} />
      ) : (
        <Table
          caption="Users"
          columns={columns}
          rows={users.data.items}
          rowKey={(u) => String(u.id)}
          empty={<EmptyState title="No users yet." />}
        />
      )}
      {tokens.isSuccess && (
        <p className="muted" style={{ margin: 0, padding: '8px 16px 12px' }}>
          {counts.get('service') ?? 0} active service token{counts.get('service') === 1 ? '' : 's'} (no user). Every token, with
          who owns it, is on the <Link to="/tokens">Tokens</Link> page, where you can revoke it.
        </p>
      )}
      {dialog && (
        <UserDialog
          editing={dialog.editing}
          onClose={() => setDialog(null)}
          onDone={(text) => {
            setDialog(null);
            say(text);
          }}
        />
      )}
      <ConfirmDialog
        open={deleting !== null}
        title={`Delete ${deleting?.email ?? ''}?`}
        confirmLabel="Delete user"
        danger
        busy={remove.isPending}
        error={remove.error}
        onConfirm={() => deleting && remove.mutate(deleting)}
        onClose={() => {
          remove.reset();
          setDeleting(null);
        }}
      >
        <p>
          Their sessions end and their tokens stop working at once. Runs they started stay. To keep the account but stop
          its access, disable it instead (Edit…).
        </p>
      </ConfirmDialog>
    </Panel>
  );
}

export function UsersPage() {
  useTitle('Users & tokens');
  return (
    <>
      <PageHeader title="Users & tokens">
        <p className="muted" style={{ margin: 0 }}>
          Who may sign in, and with what role: viewers read, operators also submit and fix runs, admins also manage users
          and tokens.
        </p>
      </PageHeader>
      <RequireRole min="admin" fallback={<ErrorState title="Only admins manage users" error={new Error('Ask an admin to add or change accounts.')} />}>
        <UsersPanel />
      </RequireRole>
    </>
  );
}
