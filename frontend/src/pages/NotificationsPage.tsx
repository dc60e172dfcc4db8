import { useInfiniteQuery, useMutation, useQueryClient } from '@tanstack/react-query';
import { Fragment, type ReactNode } from 'react';
import { Link, useSearchParams } from 'react-router';
import { ApiError } from '../api/client';
import { listNotifications, resendNotification } from '../api/endpoints';
import { NOTIFICATION_STATES, type Notification, type NotificationState } from '../api/types';
import { useCan } from '../auth/auth';
import { formatCount } from '../lib/format';
import { notificationTone } from '../lib/status';
import { useTitle } from '../lib/useTitle';
import {
  Badge,
  Button,
  EmptyState,
  ErrorState,
  Field,
  Loading,
  PageHeader,
  Panel,
  RelativeTime,
  Table,
  useNow,
  useToast,
  type Column,
} from '../ui';

const STATE_FILTERS: { value: NotificationState | ''; label: string }[] = [
  { value: '', label: 'All' },
  { value: 'pending', label: 'Pending' },
  { value: 'delivered', label: 'Delivered' },
  { value: 'failed', label: 'Failed' },
  { value: 'skipped', label: 'Skipped' },
];

/** States an operator can send a notification again from: the notifier gave up on it. */
function canResend(n: Notification): boolean {
  return n.state === 'failed' || n.state === 'skipped';
}

/** What a notification is about, in words: "run.dead for run 01J…", "schedule.tick_failed for schedule 4". */
function about(n: Notification): string {
  const subject = n.taskId ? `run ${n.taskId}` : n.scheduleId ? `schedule ${n.scheduleId}` : `workflow ${n.workflow}`;
  return `${n.event} for ${subject}`;
}

function isNotificationState(value: string | null): value is NotificationState {
  return !!value && (NOTIFICATION_STATES as readonly string[]).includes(value);
}

/** What the target answered last: its HTTP status and the error, or why there was no answer. */
function lastAnswer(n: Notification): string | null {
  const status = n.lastStatus !== null ? `HTTP ${n.lastStatus}` : null;
  if (status && n.lastError) return `${status}: ${n.lastError}`;
  return status ?? n.lastError;
}

/**
 * Lets a long snake_case name wrap between its words when the table runs out of room,
 * instead of widening the table past the panel (or breaking inside a word).
 */
function breakAtUnderscores(name: string): ReactNode {
  const parts = name.split('_');
  return parts.map((part, i) => (
    <Fragment key={i}>
      {part}
      {i < parts.length - 1 && (
        <>
          _<wbr />
        </>
      )}
    </Fragment>
  ));
}

function Subject({ n }: { n: Notification }) {
  if (n.taskId) {
    return (
      <>
        <Link className="mono" to={`/runs/${encodeURIComponent(n.taskId)}`}>
          {n.taskId}
        </Link>
        {n.step && <div className="muted">step {n.step}</div>}
      </>
    );
  }
  // Schedules have no page of their own: the list is the closest place to look.
  if (n.scheduleId) return <Link to="/schedules">schedule {n.scheduleId}</Link>;
  return <span className="muted">—</span>;
}

function AlertsHowTo() {
  return (
    <div style={{ maxWidth: '70ch' }}>
      <p>
        When a run dies, Cairn records an alert here and POSTs it to <code>CAIRN_NOTIFY_URL</code>, retrying until the
        endpoint accepts it or <code>--notify-max-attempts</code> POSTs have failed. With <code>--notify-tick-failures</code>,
        a schedule tick that could not start its run is sent too.
      </p>
      <p>
        A workflow sends its own alerts elsewhere with <code>[notify] url = "…"</code> in its file, or none at all with{' '}
        <code>[notify] enabled = false</code>. Without any URL, alerts are recorded as skipped. See docs/OPERATIONS.md,
        “Alerts”.
      </p>
    </div>
  );
}

export function NotificationsPage() {
  useTitle('Notifications');
  const [search, setSearch] = useSearchParams();
  const raw = search.get('state');
  const state = isNotificationState(raw) ? raw : '';
  const setState = (value: string) => {
    const next = new URLSearchParams(search);
    if (value) next.set('state', value);
    else next.delete('state');
    setSearch(next, { replace: true });
  };
  const now = useNow(10_000);
  const queryClient = useQueryClient();
  const toast = useToast();
  const canOperate = useCan('operator');

  const notifications = useInfiniteQuery({
    queryKey: ['notifications', 'list', { state }],
    queryFn: ({ pageParam, signal }) => listNotifications({ state, before: pageParam, limit: 50 }, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.nextCursor ?? undefined,
    refetchInterval: 15_000,
  });
  const items = notifications.data?.pages.flatMap((p) => p.items) ?? [];

  // Every notifications query: this list under any filter, and the Overview's notice of failed alerts.
  const refresh = () => void queryClient.invalidateQueries({ queryKey: ['notifications'] });
  const resend = useMutation({
    mutationFn: (n: Notification) => resendNotification(n.id),
    onSuccess: (_res, n) => {
      toast.notify(`Sending ${about(n)} again.`);
      refresh();
    },
    onError: (e, n) => {
      toast.notify(`Could not send ${about(n)} again: ${(e as Error).message}`, 'danger');
      // 409: someone else resent it already, or it is no longer given up. Show where it stands now.
      if (e instanceof ApiError && e.status === 409) refresh();
    },
  });

  const columns: Column<Notification>[] = [
    { key: 'at', header: 'When', className: 'nowrap', render: (n) => <RelativeTime iso={n.createdAt} now={now} /> },
    {
      key: 'event',
      header: 'Event',
      render: (n) => (
        <>
          <span className="mono">{n.event}</span>
          {n.error && (
            <span className="cell-clip muted" style={{ maxWidth: 150 }} title={n.error}>
              {n.error}
            </span>
          )}
          {n.workflowUrl && <div className="muted">to the workflow’s URL</div>}
        </>
      ),
    },
    {
      key: 'workflow',
      header: 'Workflow',
      render: (n) => <Link to={`/workflows/${encodeURIComponent(n.workflow)}`}>{breakAtUnderscores(n.workflow)}</Link>,
    },
    { key: 'subject', header: 'Run or schedule', render: (n) => <Subject n={n} /> },
    {
      key: 'state',
      header: 'State',
      className: 'nowrap',
      render: (n) => (
        <>
          <Badge tone={notificationTone(n.state)}>{n.state}</Badge>
          {n.state === 'pending' && n.nextAttemptAt && (
            <div className="muted">
              {Date.parse(n.nextAttemptAt) > now ? 'next' : 'due'} <RelativeTime iso={n.nextAttemptAt} now={now} />
            </div>
          )}
        </>
      ),
    },
    {
      key: 'deliveries',
      header: 'POSTs',
      className: 'num',
      render: (n) => (
        <>
          {formatCount(n.deliveries)}
          {n.resends > 0 && <div className="muted">resent {formatCount(n.resends)}×</div>}
        </>
      ),
    },
    {
      key: 'answer',
      header: 'Last answer',
      render: (n) => {
        const text = lastAnswer(n);
        if (!text) return <span className="muted">—</span>;
        return (
          <span className={n.state === 'delivered' ? 'cell-clip' : 'error-cell'} style={{ maxWidth: 170 }} title={text}>
            {text}
          </span>
        );
      },
    },
  ];
  if (canOperate) {
    columns.push({
      key: 'actions',
      header: <span className="sr-only">Actions</span>,
      render: (n) =>
        canResend(n) ? (
          <Button
            size="small"
            busy={resend.isPending && resend.variables?.id === n.id}
            onClick={() => resend.mutate(n)}
            aria-label={`Send again: ${about(n)} (notification ${n.id})`}
          >
            Send again
          </Button>
        ) : null,
    });
  }

  return (
    <>
      <PageHeader title="Notifications">
        <p className="muted" style={{ margin: 0 }}>
          Alerts sent to a webhook when runs die or schedule ticks fail, and whether they got there.
        </p>
      </PageHeader>
      <Panel flush>
        <form
          className="filters"
          role="search"
          aria-label="Filter notifications"
          // One select would otherwise stretch across the whole panel.
          style={{ gridTemplateColumns: 'minmax(160px, 240px)' }}
          onSubmit={(e) => e.preventDefault()}
        >
          <Field label="State">
            {(p) => (
              <select {...p} className="select" value={state} onChange={(e) => setState(e.target.value)}>
                {STATE_FILTERS.map((f) => (
                  <option key={f.value} value={f.value}>
                    {f.label}
                  </option>
                ))}
              </select>
            )}
          </Field>
        </form>
        {notifications.isPending ? (
          <Loading label="Loading notifications…" />
        ) : notifications.isError ? (
          <ErrorState error={notifications.error} onRetry={() => void notifications.refetch()} />
        ) : items.length === 0 ? (
          state ? (
            <EmptyState title={`No ${state} notifications.`} action={<Button onClick={() => setState('')}>Show all</Button>} />
          ) : (
            <EmptyState title="No notifications yet.">
              <AlertsHowTo />
            </EmptyState>
          )
        ) : (
          <>
            <Table
              caption={`Notifications${state ? ` (${state})` : ''}, newest first`}
              columns={columns}
              rows={items}
              rowKey={(n) => n.id}
            />
            <div className="row" style={{ padding: 12 }}>
              <span className="muted" aria-live="polite">
                Showing {items.length} notification{items.length === 1 ? '' : 's'}
              </span>
              {notifications.hasNextPage && (
                <Button onClick={() => void notifications.fetchNextPage()} busy={notifications.isFetchingNextPage}>
                  Load more
                </Button>
              )}
            </div>
          </>
        )}
      </Panel>
    </>
  );
}
