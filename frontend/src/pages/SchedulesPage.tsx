import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { Link } from 'react-router';
import {
  backfillSchedule,
  createSchedule,
  deleteSchedule,
  listSchedules,
  listWorkflows,
  scheduleAction,
  updateSchedule,
  type ScheduleVerb,
} from '../api/endpoints';
import type { BackfillRequest, BackfillResult, Json, NewSchedule, Schedule, ScheduleChange } from '../api/types';
import { RequireRole, useCan } from '../auth/auth';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { parseJsonInput } from '../lib/json';
import { formatDateTime, formatJson, formatShortDateTime } from '../lib/format';
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
  { value: 'cancel_previous', label: 'Cancel the previous run' },
];

function localTimezone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

interface ScheduleForm {
  name: string;
  workflow: string;
  cron: string;
  timezone: string;
  input: string;
  misfirePolicy: string;
  overlapPolicy: string;
  enabled: boolean;
}

function formOf(s: Schedule | null): ScheduleForm {
  if (!s) {
    return {
      name: '',
      workflow: '',
      cron: '0 * * * *',
      timezone: localTimezone(),
      input: '{}',
      misfirePolicy: MISFIRE_POLICIES[0]!.value,
      overlapPolicy: OVERLAP_POLICIES[0]!.value,
      enabled: true,
    };
  }
  return {
    name: s.name,
    workflow: s.workflow,
    cron: s.cron,
    timezone: s.timezone,
    input: formatJson(s.input ?? {}),
    misfirePolicy: s.misfirePolicy,
    overlapPolicy: s.overlapPolicy,
    enabled: s.enabled,
  };
}

/**
 * The fields of an edited schedule that differ from what it was (`PATCH` takes any of
 * them; the name cannot change). Input is compared as JSON, not as text.
 */
export function scheduleChanges(before: Schedule, form: ScheduleForm, input: Json): ScheduleChange {
  const change: ScheduleChange = {};
  if (form.workflow !== before.workflow) change.workflow = form.workflow;
  if (form.cron.trim() !== before.cron) change.cron = form.cron.trim();
  const tz = form.timezone.trim() || 'UTC';
  if (tz !== before.timezone) change.timezone = tz;
  if (JSON.stringify(input) !== JSON.stringify(before.input ?? {})) change.input = input;
  if (form.misfirePolicy !== before.misfirePolicy) change.misfirePolicy = form.misfirePolicy;
  if (form.overlapPolicy !== before.overlapPolicy) change.overlapPolicy = form.overlapPolicy;
  return change;
}

/** Creates a schedule, or (with `editing`) changes one: everything but its name. */
export function ScheduleDialog({ editing = null, onClose }: { editing?: Schedule | null; onClose: () => void }) {
  const queryClient = useQueryClient();
  const toast = useToast();
  const workflows = useQuery({ queryKey: ['workflows'], queryFn: ({ signal }) => listWorkflows(signal) });
  const [form, setForm] = useState<ScheduleForm>(() => formOf(editing));
  const [inputError, setInputError] = useState<string | null>(null);
  const [unchanged, setUnchanged] = useState(false);
  const save = useMutation({
    mutationFn: (body: { create: NewSchedule } | { change: ScheduleChange }) =>
      'create' in body ? createSchedule(body.create) : updateSchedule(editing!.id, body.change),
    onSuccess: (s) => {
      toast.notify(`Schedule “${s?.name ?? form.name}” ${editing ? 'saved' : 'created'}.`);
      void queryClient.invalidateQueries({ queryKey: ['schedules'] });
      onClose();
    },
  });
  const set = (key: keyof ScheduleForm) => (value: string | boolean) => setForm((f) => ({ ...f, [key]: value }));
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const parsed = parseJsonInput(form.input);
    if ('error' in parsed) {
      setInputError(parsed.error);
      return;
    }
    setInputError(null);
    if (editing) {
      const change = scheduleChanges(editing, form, parsed.value);
      if (Object.keys(change).length === 0) {
        setUnchanged(true);
        return;
      }
      setUnchanged(false);
      save.mutate({ change });
      return;
    }
    save.mutate({
      create: {
        name: form.name.trim(),
        workflow: form.workflow,
        cron: form.cron.trim(),
        timezone: form.timezone.trim() || 'UTC',
        input: parsed.value,
        misfirePolicy: form.misfirePolicy,
        overlapPolicy: form.overlapPolicy,
        enabled: form.enabled,
      },
    });
  };
  const names = workflows.data?.items.map((w) => w.name) ?? [];
  const workflowOptions = form.workflow && !names.includes(form.workflow) ? [form.workflow, ...names] : names;
  const withCurrent = (list: { value: string; label: string }[], value: string) =>
    list.some((o) => o.value === value) ? list : [...list, { value, label: value }];
  const title = editing ? `Edit schedule “${editing.name}”` : 'New schedule';
  return (
    <Dialog open wide title={title} onClose={save.isPending ? () => {} : onClose}>
      <form className="stack" onSubmit={submit} aria-label={title}>
        <div className="grid grid--2">
          {editing ? (
            <Field label="Name" hint="A schedule keeps its name; create another to rename it.">
              {(p) => <input {...p} className="input" readOnly value={form.name} />}
            </Field>
          ) : (
            <Field label="Name">
              {(p) => (
                <input {...p} className="input" required value={form.name} onChange={(e) => set('name')(e.target.value)} data-autofocus />
              )}
            </Field>
          )}
          <Field label="Workflow" error={workflows.isError ? 'Could not load workflows' : undefined}>
            {(p) => (
              <select {...p} className="select" required value={form.workflow} onChange={(e) => set('workflow')(e.target.value)}>
                <option value="" disabled>
                  {workflows.isPending ? 'Loading…' : 'Choose a workflow'}
                </option>
                {workflowOptions.map((n) => (
                  <option key={n} value={n}>
                    {n}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Cron expression" hint="minute hour day-of-month month day-of-week, e.g. 0 6 * * *">
            {(p) => (
              <input
                {...p}
                className="input mono"
                required
                value={form.cron}
                onChange={(e) => set('cron')(e.target.value)}
                data-autofocus={editing ? true : undefined}
              />
            )}
          </Field>
          <Field label="Time zone" hint="An IANA name such as Europe/Paris or UTC">
            {(p) => <input {...p} className="input" value={form.timezone} onChange={(e) => set('timezone')(e.target.value)} />}
          </Field>
          <Field label="Missed ticks">
            {(p) => (
              <select {...p} className="select" value={form.misfirePolicy} onChange={(e) => set('misfirePolicy')(e.target.value)}>
                {withCurrent(MISFIRE_POLICIES, form.misfirePolicy).map((m) => (
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
                {withCurrent(OVERLAP_POLICIES, form.overlapPolicy).map((m) => (
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
        {!editing && (
          <label className="checkbox">
            <input type="checkbox" checked={form.enabled} onChange={(e) => set('enabled')(e.target.checked)} />
            Start enabled
          </label>
        )}
        {editing && (
          <p className="muted" style={{ margin: 0 }}>
            The change applies from the next tick; runs already started keep what they were started with.
          </p>
        )}
        {unchanged && (
          <p className="callout tone-neutral" role="status" style={{ margin: 0 }}>
            Nothing changed.
          </p>
        )}
        {save.isError && <InlineError error={save.error} />}
        <div className="row row--end">
          <Button onClick={onClose} disabled={save.isPending}>
            Cancel
          </Button>
          <Button type="submit" variant="primary" busy={save.isPending} disabled={!form.name.trim() || !form.workflow || !form.cron.trim()}>
            {editing ? 'Save schedule' : 'Create schedule'}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

/** `2026-01-02T06:00` in local time, for a `datetime-local` input. */
export function toLocalInput(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A `datetime-local` value (local time) as RFC 3339 in UTC, or null when it is not one. */
export function fromLocalInput(value: string): string | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(value)) return null;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

/** The run ids a backfill answered with, whichever shape its list has. */
export function backfillRunIds(res: BackfillResult | null | undefined): string[] {
  const list = res && Array.isArray(res.runs) ? res.runs : [];
  return list
    .map((r) => (typeof r === 'string' ? r : (r?.taskId ?? r?.id ?? null)))
    .filter((id): id is string => typeof id === 'string' && !!id);
}

/** Starts the runs of every tick a schedule had between two times (a backfill). */
export function BackfillDialog({ schedule, onClose }: { schedule: Schedule; onClose: () => void }) {
  const queryClient = useQueryClient();
  const [from, setFrom] = useState(() => toLocalInput(Date.now() - 86_400_000));
  const [to, setTo] = useState(() => toLocalInput(Date.now()));
  const [rangeError, setRangeError] = useState<string | null>(null);
  const resultRef = useRef<HTMLDivElement>(null);
  const backfill = useMutation({
    mutationFn: (body: BackfillRequest) => backfillSchedule(schedule.id, body),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ['schedules'] });
      void queryClient.invalidateQueries({ queryKey: ['tasks'] });
    },
  });
  useEffect(() => {
    if (backfill.isSuccess) resultRef.current?.focus();
  }, [backfill.isSuccess]);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const start = fromLocalInput(from);
    const end = fromLocalInput(to);
    if (!start || !end) {
      setRangeError('Give both times as a date and a time.');
      return;
    }
    if (Date.parse(start) >= Date.parse(end)) {
      setRangeError('“From” must be before “to”.');
      return;
    }
    setRangeError(null);
    backfill.mutate({ from: start, to: end });
  };
  const ids = backfillRunIds(backfill.data);
  const title = `Backfill “${schedule.name}”`;
  if (backfill.isSuccess) {
    return (
      <Dialog
        open
        title={title}
        onClose={onClose}
        footer={
          <Button variant="primary" onClick={onClose}>
            Done
          </Button>
        }
      >
        <div ref={resultRef} tabIndex={-1} role="status" className="stack">
          <p style={{ margin: 0 }}>
            {ids.length === 0
              ? 'No tick of this schedule fell in that range: no run was started.'
              : `Started ${ids.length} run${ids.length === 1 ? '' : 's'} of ${schedule.workflow}, one per tick in the range.`}
          </p>
          {ids.length > 0 && (
            <ul className="findings">
              {ids.slice(0, 10).map((id) => (
                <li key={id}>
                  <Link className="mono" to={`/runs/${encodeURIComponent(id)}`}>
                    {id}
                  </Link>
                </li>
              ))}
              {ids.length > 10 && (
                <li>
                  <Link to={`/runs?workflow=${encodeURIComponent(schedule.workflow)}`}>and {ids.length - 10} more</Link>
                </li>
              )}
            </ul>
          )}
        </div>
      </Dialog>
    );
  }
  return (
    <Dialog
      open
      title={title}
      description={`Starts a run of ${schedule.workflow} for every tick of ${schedule.cron} (${schedule.timezone}) between the two times, as if the schedule had fired then.`}
      onClose={backfill.isPending ? () => {} : onClose}
    >
      <form className="stack" onSubmit={submit} aria-label={title} noValidate>
        <div className="grid grid--2">
          <Field label="From" hint="Your local time" error={rangeError}>
            {(p) => <input {...p} className="input" type="datetime-local" required value={from} onChange={(e) => setFrom(e.target.value)} data-autofocus />}
          </Field>
          <Field label="To" hint="Your local time">
            {(p) => <input {...p} className="input" type="datetime-local" required value={to} onChange={(e) => setTo(e.target.value)} />}
          </Field>
        </div>
        {backfill.isError && <InlineError error={backfill.error} />}
        <div className="row row--end">
          <Button onClick={onClose} disabled={backfill.isPending}>
            Cancel
          </Button>
          <Button type="submit" variant="primary" busy={backfill.isPending}>
            Start runs
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
  const [editing, setEditing] = useState<Schedule | null>(null);
  const [backfilling, setBackfilling] = useState<Schedule | null>(null);
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
    {
      key: 'name',
      header: 'Schedule',
      render: (s) => (
        <div style={{ minWidth: 0 }}>
          <strong className="cell-clip" title={s.name}>
            {s.name}
          </strong>
          <Link className="cell-clip" to={`/workflows/${encodeURIComponent(s.workflow)}`} title={`Workflow ${s.workflow}`}>
            {s.workflow}
          </Link>
        </div>
      ),
    },
    {
      key: 'cron',
      header: 'When',
      render: (s) => (
        <>
          <code className="nowrap">{s.cron}</code>
          <div className="muted cell-clip" title={s.timezone}>
            {s.timezone}
          </div>
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
          <ul className="compact-list">
            {s.nextFireTimes.slice(0, 3).map((t) => (
              <li key={t}>
                <time dateTime={t} title={formatDateTime(t)}>
                  {formatShortDateTime(t)}
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
        <div className="row actions-cell">
          {s.enabled ? (
            <Button size="small" busy={busy(s, 'pause')} onClick={() => act.mutate({ schedule: s, verb: 'pause' })} aria-label={`Pause ${s.name}`}>
              Pause
            </Button>
          ) : (
            <Button size="small" busy={busy(s, 'resume')} onClick={() => act.mutate({ schedule: s, verb: 'resume' })} aria-label={`Resume ${s.name}`}>
              Resume
            </Button>
          )}
          <Button size="small" busy={busy(s, 'trigger')} onClick={() => act.mutate({ schedule: s, verb: 'trigger' })} aria-label={`Trigger now: ${s.name}`}>
            Trigger now
          </Button>
          <Button size="small" onClick={() => setEditing(s)} aria-label={`Edit… ${s.name}`}>
            Edit…
          </Button>
          <Button size="small" onClick={() => setBackfilling(s)} aria-label={`Backfill… ${s.name}`}>
            Backfill…
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
      {creating && <ScheduleDialog onClose={() => setCreating(false)} />}
      {editing && <ScheduleDialog editing={editing} onClose={() => setEditing(null)} />}
      {backfilling && <BackfillDialog schedule={backfilling} onClose={() => setBackfilling(null)} />}
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
