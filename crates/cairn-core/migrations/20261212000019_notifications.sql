-- Notifications: an outbox of events Cairn tells an operator's endpoint about (a run
-- died; a schedule's tick failed). A row is written by a trigger in the transaction
-- that records the event, so an event is never lost to a crash between the death and
-- the telling, and never told for a death that rolled back. The notifier (in
-- `cairn scheduler` and `cairn dev`) delivers pending rows, at least once, with
-- retries and backoff; several notifiers share the work through `for update skip
-- locked` and a claim that moves `next_attempt_at` past the delivery's deadline.
create table notifications (
    id               bigint generated always as identity primary key,
    -- 'run.dead' or 'schedule.tick_failed'.
    event            text not null,
    run_id           text,
    workflow         text not null,
    step_id          text,
    schedule_id      text,
    error            text not null,
    -- Attempts of the step that failed ('run.dead'); 0 otherwise.
    step_attempts    integer not null default 0,
    -- The workflow's own `[notify] url`, when it has one; null: the cluster's
    -- CAIRN_NOTIFY_URL. Never served by the API (such URLs often carry a credential).
    url              text,
    -- 'pending': to be delivered at next_attempt_at; 'delivered': the endpoint answered
    -- 2xx; 'skipped': nothing to deliver to (no URL, or this event is not sent);
    -- 'failed': given up (the egress policy refused, or the attempts ran out).
    state            text not null default 'pending',
    deliveries       integer not null default 0,
    next_attempt_at  timestamptz not null default clock_timestamp(),
    last_error       text,
    last_status      integer,
    created_at       timestamptz not null default clock_timestamp(),
    delivered_at     timestamptz,
    finished_at      timestamptz,
    constraint notifications_event_valid check (event in ('run.dead', 'schedule.tick_failed')),
    constraint notifications_state_valid check (state in ('pending', 'delivered', 'skipped', 'failed')),
    constraint notifications_finished check ((state = 'pending') = (finished_at is null)),
    constraint notifications_delivered check ((state = 'delivered') = (delivered_at is not null))
);
create index notifications_due on notifications (next_attempt_at) where state = 'pending';
create index notifications_created on notifications (created_at desc, id desc);
create index notifications_finished on notifications (finished_at) where state <> 'pending';

-- A run dies in one place: `run_dead` marks it dead and parks it in `dead_letters`, in
-- one transaction. The dead letter carries the step, the error and every attempt, so
-- its insert is where the notification is written. The run's definition (the one it
-- started with) decides: `[notify] enabled = false` writes nothing, `[notify] url`
-- sends it there instead of to the cluster's URL.
create function notifications_run_dead() returns trigger language plpgsql as $$
declare
    notify jsonb;
begin
    select d.definition -> 'notify' into notify
      from runs r join workflow_definitions d on d.hash = r.definition_hash
     where r.id = new.run_id;
    if coalesce((notify ->> 'enabled')::boolean, true) then
        insert into notifications (event, run_id, workflow, step_id, error, step_attempts, url)
        values ('run.dead', new.run_id, new.workflow, new.step_id, new.error,
                case when jsonb_typeof(new.attempts) = 'array'
                     then jsonb_array_length(new.attempts) else 0 end,
                notify ->> 'url');
        perform pg_notify('cairn_notifications', '');
    end if;
    return null;
end $$;
create trigger notifications_run_dead after insert on dead_letters
    for each row execute function notifications_run_dead();

-- A tick that could not start its run. Written always; the notifier sends it only when
-- told to (CAIRN_NOTIFY_TICK_FAILURES) and skips it otherwise.
create function notifications_tick_failed() returns trigger language plpgsql as $$
declare
    wf text;
    notify jsonb;
begin
    if new.outcome <> 'failed' or (tg_op = 'UPDATE' and old.outcome = 'failed') then
        return null;
    end if;
    select sc.workflow into wf from schedules sc where sc.id = new.schedule_id;
    select d.definition -> 'notify' into notify
      from workflow_definitions d where d.name = wf
     order by d.created_at desc limit 1;
    if coalesce((notify ->> 'enabled')::boolean, true) then
        insert into notifications (event, workflow, schedule_id, error, url)
        values ('schedule.tick_failed', coalesce(wf, ''), new.schedule_id,
                coalesce(new.error, ''), notify ->> 'url');
        perform pg_notify('cairn_notifications', '');
    end if;
    return null;
end $$;
create trigger notifications_tick_failed after insert or update of outcome on schedule_ticks
    for each row execute function notifications_tick_failed();
