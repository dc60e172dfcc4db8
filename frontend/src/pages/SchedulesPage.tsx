import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState, type FormEvent } from 'react';
import { Link } from 'react-router';
import { createSchedule, deleteSchedule, listSchedules, listWorkflows, scheduleAction, type ScheduleVerb } from '../api/endpoints';
import type { NewSchedule, Schedule } from '../api/types';
import { RequireRole, useCan } from '../auth/auth';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { parseJsonInput } from '../lib/json';
import { formatDateTime } from '../lib/format';
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
  useToast,
  type Column,
} from '../ui';

/** What a schedule does with ticks missed while nothing ran (see DESIGN.md: fire late or skip). */
export const MISFIRE_POLICIES = [
  { value: 'fire_once', label: 'Fire once, late' },
  { value: 'skip', label: 'Skip missed ticks' },
];
/** What a tick does while the previous run of the schedule is still going. */
export const OVERLAP_POLICIES = [
  { value: 'allow', label: 'Start anyway' },
  { value: 'skip', label: 'Skip the tick' },
];

function localTimezone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

function CreateScheduleDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  const queryClient = useQueryClient();
  const toast = useToast();
  const workflows = useQuery({ queryKey: ['workflows'], queryFn: ({ signal }) => listWorkflows(signal), enabled: open });
  const [form, setForm] = useState({
    name: '',
    workflow: '',
    cron: '0 * * * *',
    timezone: localTimezone(),
    input: '{}',
    misfirePolicy: MISFIRE_POLICIES[0]!.value,
    overlapPolicy: OVERLAP_POLICIES[0]!.value,
    enabled: true,
  });
  const [inputError, setInputError] = useState<string | null>(null);
  const create = useMutation({
    mutationFn: (body: NewSchedule) => createSchedule(body),
    onSuccess: (s) => {
      toast.notify(`Schedule “${s?.name ?? form.name}” created.`);
      void queryClient.invalidateQueries({ queryKey: ['schedules'] });
      onClose();
    },
  });
  const set = (key: keyof typeof form) => (value: string | boolean) => setForm((f) => ({ ...f, [key]: value }));
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const parsed = parseJsonInput(form.input);
    if ('error' in parsed) {
      setInputError(parsed.error);
      return;
    }
    setInputError(null);
    create.mutate({
      name: form.name.trim(),
      workflow: form.workflow,
      cron: form.cron.trim(),
      timezone: form.timezone.trim() || 'UTC',
      input: parsed.value,
      misfirePolicy: form.misfirePolicy,
      overlapPolicy: form.overlapPolicy,
      enabled: form.enabled,
    });
  };
  const names = workflows.data?.items.map((w) => w.name) ?? [];
  return (
    <Dialog open={open} wide title="New schedule" onClose={create.isPending ? () => {} : onClose}>
      <form className="stack" onSubmit={submit} aria-label="New schedule">
        <div className="grid grid--2">
          <Field label="Name">
            {(p) => (
              <input {...p} className="input" required value={form.name} onChange={(e) => set('name')(e.target.value)} data-autofocus />
            )}
          </Field>
          <Field label="Workflow" error={workflows.isError ? 'Could not load workflows' : undefined}>
            {(p) => (
              <select {...p} className="select" required value={form.workflow} onChange={(e) => set('workflow')(e.target.value)}>
                <option value="" disabled>
                  {workflows.isPending ? 'Loading…' : 'Choose a workflow'}
                </option>
                {names.map((n) => (
                  <option key={n} value={n}>
                    {n}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Cron expression" hint="minute hour day-of-month month day-of-week, e.g. 0 6 * * *">
            {(p) => <input {...p} className="input mono" required value={form.cron} onChange={(e) => set('cron')(e.target.value)} />}
          </Field>
          <Field label="Time zone" hint="An IANA name such as Europe/Paris or UTC">
            {(p) => <input {...p} className="input" value={form.timezone} onChange={(e) => set('timezone')(e.target.value)} />}
          </Field>
          <Field label="Missed ticks">
            {(p) => (
              <select {...p} className="select" value={form.misfirePolicy} onChange={(e) => set('misfirePolicy')(e.target.value)}>
                {MISFIRE_POLICIES.map((m) => (
                  <option key={m.value} value={m.value}>
                    {m.label}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="When the previous run is still going">
            {(p) => (
              <select {...p} className="select" value={form.overlapPolicy} onChange={(e) => set('overlapPolicy')(e.target.value)}>
                {OVERLAP_POLICIES.map((m) => (
                  <option key={m.value} value={m.value}>
                    {m.label}
                  </option>
                ))}
              </select>
            )}
          </Field>
        </div>
        <Field label="Input (JSON)" error={inputError}>
          {(p) => (
            <textarea {...p} className="textarea" rows={5} spellCheck={false} value={form.input} onChange={(e) => set('input')(e.target.value)} />
          )}
        </Field>
        <label className="checkbox">
          <input type="checkbox" checked={form.enabled} onChange={(e) => set('enabled')(e.target.checked)} />
          Start enabled
        </label>
        {create.isError && <InlineError error={create.error} />}
        <div className="row row--end">
          <Button onClick={onClose} disabled={create.isPending}>
            Cancel
          </Button>
          <Button type="submit" variant="primary" busy={create.isPending} disabled={!form.name.trim() || !form.workflow || !form.cron.trim()}>
            Create schedule
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

export function SchedulesPage() {
  useTitle('Schedules');
  const queryClient = useQueryClient();
  const toast = useToast();
  const now = useNow(10_000);
  const canOperate = useCan('operator');
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState<Schedule | null>(null);
  const schedules = useQuery({
    queryKey: ['schedules'],
    queryFn: ({ signal }) => listSchedules(signal),
    refetchInterval: 30_000,
  });
  const act = useMutation({
    mutationFn: ({ schedule, verb }: { schedule: Schedule; verb: ScheduleVerb }) => scheduleAction(schedule.id, verb),
    onSuccess: (_res, { schedule, verb }) => {
      const done = verb === 'pause' ? 'paused' : verb === 'resume' ? 'resumed' : 'triggered';
      toast.notify(`Schedule “${schedule.name}” ${done}.`);
      void queryClient.invalidateQueries({ queryKey: ['schedules'] });
      if (verb === 'trigger') void queryClient.invalidateQueries({ queryKey: ['tasks'] });
    },
    onError: (e, { schedule, verb }) => toast.notify(`Could not ${verb} “${schedule.name}”: ${(e as Error).message}`, 'danger'),
  });
  const remove = useMutation({
    mutationFn: (s: Schedule) => deleteSchedule(s.id),
    onSuccess: (_r, s) => {
      setDeleting(null);
      toast.notify(`Schedule “${s.name}” deleted.`);
      void queryClient.invalidateQueries({ queryKey: ['schedules'] });
    },
  });
  const busy = (s: Schedule, verb: ScheduleVerb) => act.isPending && act.variables?.schedule.id === s.id && act.variables.verb === verb;

  const columns: Column<Schedule>[] = [
    { key: 'name', header: 'Name', render: (s) => <strong>{s.name}</strong> },
    { key: 'workflow', header: 'Workflow', render: (s) => <Link to={`/workflows/${encodeURIComponent(s.workflow)}`}>{s.workflow}</Link> },
    {
      key: 'cron',
      header: 'When',
      render: (s) => (
        <>
          <code>{s.cron}</code> <span className="muted">{s.timezone}</span>
        </>
      ),
    },
    {
      key: 'state',
      header: 'State',
      render: (s) => (s.enabled ? <Badge tone="success">active</Badge> : <Badge tone="muted">paused</Badge>),
    },
    {
      key: 'next',
      header: 'Next fire times',
      render: (s) =>
        s.enabled && s.nextFireTimes.length ? (
          <ul style={{ margin: 0, paddingLeft: 16 }}>
            {s.nextFireTimes.slice(0, 3).map((t) => (
              <li key={t}>
                <time dateTime={t} title={formatDateTime(t)}>
                  {formatDateTime(t)}
                </time>
              </li>
            ))}
          </ul>
        ) : (
          <span className="muted">{s.enabled ? '—' : 'paused'}</span>
        ),
    },
    { key: 'last', header: 'Last fired', render: (s) => <RelativeTime iso={s.lastFiredAt} now={now} /> },
  ];
  if (canOperate) {
    columns.push({
      key: 'actions',
      header: <span className="sr-only">Actions</span>,
      render: (s) => (
        <div className="row" style={{ flexWrap: 'nowrap' }}>
          {s.enabled ? (
            <Button size="small" busy={busy(s, 'pause')} onClick={() => act.mutate({ schedule: s, verb: 'pause' })} aria-label={`Pause ${s.name}`}>
              Pause
            </Button>
          ) : (
            <Button size="small" busy={busy(s, 'resume')} onClick={() => act.mutate({ schedule: s, verb: 'resume' })} aria-label={`Resume ${s.name}`}>
              Resume
            </Button>
          )}
          <Button size="small" busy={busy(s, 'trigger')} onClick={() => act.mutate({ schedule: s, verb: 'trigger' })} aria-label={`Trigger ${s.name} now`}>
            Trigger now
          </Button>
          <Button size="small" variant="ghost" onClick={() => setDeleting(s)} aria-label={`Delete ${s.name}`}>
            Delete
          </Button>
        </div>
      ),
    });
  }

  return (
    <>
      <PageHeader
        title="Schedules"
        actions={
          <RequireRole min="operator">
            <Button variant="primary" onClick={() => setCreating(true)}>
              New schedule
            </Button>
          </RequireRole>
        }
      />
      <Panel flush>
        {schedules.isPending ? (
          <Loading label="Loading schedules…" />
        ) : schedules.isError ? (
          <ErrorState error={schedules.error} onRetry={() => void schedules.refetch()} />
        ) : (
          <Table
            caption="Schedules"
            columns={columns}
            rows={schedules.data.items}
            rowKey={(s) => String(s.id)}
            empty={
              <EmptyState title="No schedules yet.">
                Schedules start runs of a workflow on a cron expression; add one here or in a workflow file.
              </EmptyState>
            }
          />
        )}
      </Panel>
      {creating && <CreateScheduleDialog open onClose={() => setCreating(false)} />}
      <ConfirmDialog
        open={deleting !== null}
        title={`Delete schedule “${deleting?.name ?? ''}”?`}
        confirmLabel="Delete schedule"
        danger
        busy={remove.isPending}
        error={remove.error}
        onConfirm={() => deleting && remove.mutate(deleting)}
        onClose={() => {
          remove.reset();
          setDeleting(null);
        }}
      >
        <p>It stops firing. Runs it already started are not affected.</p>
      </ConfirmDialog>
    </>
  );
}
