-- Retention: Cairn deletes what it no longer needs. The reaper (`src/scheduler/reaper.rs`,
-- run by `cairn scheduler` and `cairn dev`) deletes finished runs once they are older
-- than a window per final status (`--retain-succeeded`, `--retain-cancelled`,
-- `--retain-dead`), with everything that hangs off them, and expired sessions, expired
-- API tokens and workers long gone. Migration 0007 says "Cairn itself never deletes a
-- run": that was true until this migration; since it, the reaper does.

-- A pinned run is never deleted. Operators pin and unpin runs (`POST
-- /api/tasks/{id}/pin`), and a run of a workflow declaring `retain = "forever"` is
-- pinned when it is queued, as is a child run whose parent is pinned. (`if not exists`:
-- an operator may have added it beforehand, with the index below; see
-- docs/OPERATIONS.md.)
alter table runs add column if not exists pinned boolean not null default false;

-- The reaper's scan: finished runs that may go, by status, oldest finish first. Only
-- finished, unpinned runs are in it. Building it reads `runs` once and blocks writes to
-- it meanwhile; on a large table an operator may create it first with `create index
-- concurrently` (same name and definition, see docs/OPERATIONS.md), which this then
-- leaves alone.
create index if not exists runs_reapable on runs (status, finished_at)
    where finished_at is not null and not pinned;

-- Expired sessions and tokens, ticks without a run, and silent workers, by age.
create index sessions_expires on sessions (expires_at);
create index api_tokens_expires on api_tokens (expires_at) where expires_at is not null;
create index schedule_ticks_runless on schedule_ticks (handled_at) where run_id is null;
create index workers_heartbeat on workers (last_heartbeat_at);

-- What each pass of the reaper did; it keeps the latest 1,000.
create table retention_passes (
    id           bigserial primary key,
    reaper       text not null,                    -- the process that ran the pass
    started_at   timestamptz not null,
    finished_at  timestamptz not null,
    duration_ms  bigint not null,
    -- The windows and limits the pass applied (seconds; null: kept forever).
    settings     jsonb not null,
    -- Runs deleted, by final status.
    runs         jsonb not null,
    -- Rows deleted, by table: the runs and what hung off them, ticks, sessions, tokens,
    -- workers.
    deleted      jsonb not null,
    batches      integer not null,
    -- False when the pass stopped part-way (shutdown, or the error below); what it
    -- deleted before is counted all the same.
    complete     boolean not null,
    error        text
);

-- Deleting runs (migration 0009's trigger) finds what belongs to them by key alone:
-- `= any (array(...))` is an index lookup per deleted run whatever the plan, where a
-- join with the transition table could be planned as a whole read of `run_events`.
create or replace function runs_delete_children() returns trigger language plpgsql as $$
begin
    delete from step_attempts where run_id = any (array(select id from gone));
    delete from steps where run_id = any (array(select id from gone));
    delete from run_events where run_id = any (array(select id from gone));
    update runs set parent_run_id = null where parent_run_id = any (array(select id from gone));
    update runs set replay_of = null where replay_of = any (array(select id from gone));
    update steps set child_run_id = null where child_run_id = any (array(select id from gone));
    return null;
end $$;
