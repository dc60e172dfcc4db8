-- Cairn core schema: workflow definitions, runs, step checkpoints and attempts, the run
-- event history, dead letters and worker heartbeats. apalis keeps its queue tables in
-- its own schema (`apalis`), created by its own migrations.

-- Every definition a run ever started with, by content hash. Runs pin a hash, so
-- editing a workflow file never changes runs in flight.
create table workflow_definitions (
    hash        text primary key,
    name        text not null,
    definition  jsonb not null,
    source      text not null,
    created_at  timestamptz not null default now()
);

create table runs (
    id                text primary key,                 -- ULID
    workflow          text not null,
    definition_hash   text not null references workflow_definitions (hash),
    status            text not null default 'queued',
    input             jsonb not null,
    output            jsonb,
    error             text,
    idempotency_key   text,
    request_hash      text,                             -- what the idempotency key promised
    -- Lease: the worker that advances the run; `lease_token` grows on every acquisition
    -- and fences commits of a worker whose lease has expired.
    lease_owner       text,
    lease_token       bigint not null default 0,
    lease_expires_at  timestamptz,
    wake_at           timestamptz,                      -- when a parked run is due again
    created_at        timestamptz not null default now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz not null default now(),
    constraint runs_status_valid check (status in
        ('queued', 'running', 'waiting', 'sleeping', 'retrying', 'succeeded', 'dead', 'cancelled')),
    constraint runs_finished_iff_final check
        ((status in ('succeeded', 'dead', 'cancelled')) = (finished_at is not null)),
    constraint runs_lease_complete check ((lease_owner is null) = (lease_expires_at is null)),
    constraint runs_running_is_leased check (status <> 'running' or lease_owner is not null),
    constraint runs_only_running_is_leased check (status = 'running' or lease_owner is null),
    constraint runs_parked_has_wake check
        (status not in ('sleeping', 'retrying') or wake_at is not null),
    constraint runs_succeeded_has_output check (status <> 'succeeded' or output is not null)
);

create unique index runs_idempotency_key on runs (idempotency_key) where idempotency_key is not null;
-- Keyset pagination, newest first, optionally per status or workflow.
create index runs_created on runs (created_at desc, id desc);
create index runs_status_created on runs (status, created_at desc, id desc);
create index runs_workflow_created on runs (workflow, created_at desc, id desc);
-- The rescuer's scan: runs whose lease expired.
create index runs_lease_expiry on runs (lease_expires_at) where status = 'running';

-- Runs move only along the state machine in docs/state_machine.md.
create function runs_check_transition() returns trigger language plpgsql as $$
begin
    if old.status = new.status then
        return new;
    end if;
    if not (
        (old.status = 'queued'    and new.status in ('running', 'cancelled')) or
        (old.status = 'running'   and new.status in ('queued', 'waiting', 'sleeping', 'retrying',
                                                     'succeeded', 'dead', 'cancelled')) or
        (old.status in ('waiting', 'sleeping', 'retrying')
                                  and new.status in ('running', 'queued', 'cancelled')) or
        (old.status = 'dead'      and new.status = 'queued')
    ) then
        raise exception 'run % cannot go from % to %', old.id, old.status, new.status
            using errcode = 'check_violation', constraint = 'runs_transition';
    end if;
    new.updated_at := now();
    return new;
end $$;

create trigger runs_transition before update of status on runs
    for each row execute function runs_check_transition();

-- One row per step of a run: its checkpoint once it succeeded.
create table steps (
    run_id           text not null references runs (id) on delete cascade,
    step_id          text not null,
    status           text not null default 'pending',
    attempts         integer not null default 0,
    output           jsonb,
    error            text,
    next_attempt_at  timestamptz,                       -- retry_scheduled: when
    wake_at          timestamptz,                       -- waiting: when a timer fires
    started_at       timestamptz,
    finished_at      timestamptz,
    primary key (run_id, step_id),
    constraint steps_status_valid check (status in
        ('pending', 'running', 'retry_scheduled', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled')),
    constraint steps_finished_iff_final check
        ((status in ('succeeded', 'failed', 'skipped', 'cancelled')) = (finished_at is not null)),
    constraint steps_retry_has_time check ((status = 'retry_scheduled') = (next_attempt_at is not null)),
    constraint steps_succeeded_has_output check (status <> 'succeeded' or output is not null),
    constraint steps_failed_has_error check (status <> 'failed' or error is not null),
    constraint steps_attempts_nonnegative check (attempts >= 0)
);

-- A checkpoint is final: once succeeded (or skipped/failed/cancelled) a step never
-- changes again, except that operators may reset failed and cancelled steps.
create function steps_check_transition() returns trigger language plpgsql as $$
begin
    if old.status in ('succeeded', 'skipped') and (new.status <> old.status or new.output is distinct from old.output) then
        raise exception 'step %/% is checkpointed (%) and cannot change', old.run_id, old.step_id, old.status
            using errcode = 'check_violation', constraint = 'steps_checkpoint_final';
    end if;
    return new;
end $$;

create trigger steps_transition before update on steps
    for each row execute function steps_check_transition();

-- Every attempt of every step: when it started and ended, how, and why it failed.
create table step_attempts (
    run_id          text not null,
    step_id         text not null,
    attempt         integer not null,
    worker_id       text not null,
    status          text not null default 'running',
    started_at      timestamptz not null default clock_timestamp(),
    finished_at     timestamptz,
    error           text,
    retry_delay_ms  bigint,                             -- backoff chosen after this failure
    primary key (run_id, step_id, attempt),
    foreign key (run_id, step_id) references steps (run_id, step_id) on delete cascade,
    constraint step_attempts_status_valid check (status in ('running', 'succeeded', 'failed', 'abandoned')),
    constraint step_attempts_finished check ((status = 'running') = (finished_at is null)),
    constraint step_attempts_failed_has_error check (status not in ('failed', 'abandoned') or error is not null)
);

-- Append-only history of everything that happened to a run.
create table run_events (
    id          bigserial primary key,
    run_id      text not null references runs (id) on delete cascade,
    at          timestamptz not null default clock_timestamp(),
    kind        text not null,
    step_id     text,
    data        jsonb not null default '{}'
);
create index run_events_run on run_events (run_id, id);

create function run_events_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'run_events is append-only' using errcode = 'check_violation';
end $$;
create trigger run_events_no_update before update on run_events
    for each row execute function run_events_append_only();

-- Wake listeners (the API's live feed) on every event.
create function run_events_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('cairn_events', json_build_object(
        'id', new.id, 'runId', new.run_id, 'kind', new.kind, 'stepId', new.step_id)::text);
    return new;
end $$;
create trigger run_events_notify after insert on run_events
    for each row execute function run_events_notify();

-- Runs that died: the failed step, its error, every attempt, and the input to redrive with.
create table dead_letters (
    id          bigserial primary key,
    run_id      text not null references runs (id) on delete cascade,
    workflow    text not null,
    step_id     text not null,
    error       text not null,
    attempts    jsonb not null,
    input       jsonb not null,
    created_at  timestamptz not null default now()
);
create index dead_letters_created on dead_letters (created_at desc, id desc);
create index dead_letters_run on dead_letters (run_id);

-- Live worker processes and their heartbeats.
create table workers (
    id                 text primary key,
    hostname           text not null,
    pid                integer not null,
    version            text not null,
    concurrency        integer not null,
    started_at         timestamptz not null default now(),
    last_heartbeat_at  timestamptz not null default now(),
    stopped_at         timestamptz
);
