-- Schedules: recurring runs of a workflow, from `[[schedules]]` in workflow files or
-- from the API. Any number of `cairn scheduler` processes may run: a tick fires at most
-- once because its `schedule_ticks` row is unique and is written in the same
-- transaction as the run it starts.

create table schedules (
    id               text primary key,                 -- ULID
    name             text not null,
    workflow         text not null,
    cron             text not null,                    -- 5 fields, or 6 with seconds first
    timezone         text not null default 'UTC',      -- IANA name; fire times are wall-clock times there
    input            jsonb not null default '{}',
    enabled          boolean not null default true,
    misfire_policy   text not null default 'fire_once',
    -- A tick handled later than this after its time is missed (see misfire_policy).
    max_lateness_ms  bigint not null default 60000,
    overlap_policy   text not null default 'allow',
    source           text not null,                    -- 'file' (synced by schedulers) or 'api'
    -- File schedules: a hash of the `[[schedules]]` entry last synced. Sync rewrites a
    -- schedule only when its entry changed, so an operator's pause survives restarts.
    spec_hash        text,
    -- The cursor: the earliest tick not yet handled. Schedulers claim rows whose
    -- cursor is due; null when the expression has no future tick.
    next_fire_at     timestamptz,
    last_fired_at    timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint schedules_source_valid check (source in ('file', 'api')),
    constraint schedules_misfire_valid check (misfire_policy in ('fire_once', 'skip')),
    constraint schedules_overlap_valid check (overlap_policy in ('allow', 'skip', 'cancel_previous')),
    constraint schedules_max_lateness_positive check (max_lateness_ms >= 1000),
    constraint schedules_input_object check (jsonb_typeof(input) = 'object'),
    constraint schedules_file_has_hash check ((source = 'file') = (spec_hash is not null))
);

create unique index schedules_name on schedules (name);
-- The schedulers' scan: enabled schedules by cursor.
create index schedules_due on schedules (next_fire_at) where enabled;

-- Wake sleeping schedulers when a schedule appears or its timing changes, so a new or
-- resumed schedule does not wait for their next poll. (Their own cursor moves do not
-- notify: every scheduler already sleeps until the earliest cursor.)
create function schedules_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('cairn_schedules', new.id);
    return new;
end $$;
create trigger schedules_notify after insert or update of cron, timezone, enabled
    on schedules for each row execute function schedules_notify();

-- One row per handled tick: the exactly-once guard. A scheduler inserts the row with
-- `on conflict do nothing` before it starts the tick's run, in one transaction; a
-- second scheduler reaching the same tick inserts nothing and starts nothing.
create table schedule_ticks (
    id           bigserial primary key,
    schedule_id  text not null references schedules (id) on delete cascade,
    -- The cron time the tick stands for; for manual triggers, when it was triggered.
    tick_at      timestamptz not null,
    -- 'on_time': within max_lateness; 'late': stands for missed ticks (misfire policy);
    -- 'manual': `trigger` from the API or ctl.
    kind         text not null,
    -- 'fired': started run_id; 'skipped_overlap': the previous run was still active;
    -- 'skipped_misfire': missed ticks under misfire_policy = skip; 'failed': the run
    -- could not start (see error).
    outcome      text not null,
    run_id       text references runs (id) on delete set null,
    -- For 'late' rows: how many missed ticks the row stands for.
    missed       integer not null default 0,
    error        text,
    scheduler    text not null,                    -- the process (or API caller) that handled it
    handled_at   timestamptz not null default clock_timestamp(),
    constraint schedule_ticks_kind_valid check (kind in ('on_time', 'late', 'manual')),
    constraint schedule_ticks_outcome_valid check (outcome in
        ('fired', 'skipped_overlap', 'skipped_misfire', 'failed')),
    constraint schedule_ticks_failed_has_error check ((outcome = 'failed') = (error is not null)),
    constraint schedule_ticks_missed_only_late check (kind = 'late' or missed = 0)
);

-- Exactly once per (schedule, tick). Manual triggers are not cron ticks: each one is
-- its own request.
create unique index schedule_ticks_once on schedule_ticks (schedule_id, tick_at) where kind <> 'manual';
create index schedule_ticks_recent on schedule_ticks (schedule_id, id desc);
create index schedule_ticks_run on schedule_ticks (run_id) where run_id is not null;

-- Which schedule and tick started a run. No foreign key: the run keeps the record after
-- its schedule is removed.
alter table runs
    add column schedule_id text,
    add column schedule_tick_at timestamptz;
-- Overlap policies look up a schedule's active runs.
create index runs_schedule_active on runs (schedule_id)
    where schedule_id is not null and status in ('queued', 'running', 'waiting', 'sleeping', 'retrying');
