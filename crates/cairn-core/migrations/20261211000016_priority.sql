-- Priorities. A run's priority (0, the default, to 1000) is a head start in the queue:
-- its wake-ups that are due at once are queued as if they had been queued `priority`
-- minutes earlier, and workers take the earliest first (`apalis.jobs.run_at`). So a
-- higher priority run is taken before the runs queued less than that many minutes
-- before it, and no run waits behind newer runs forever: a run queued N minutes ago is
-- only ever overtaken by runs whose priority is above N. Timers (a sleep, a retry's
-- backoff) still fire at their time. Child runs inherit their parent's priority.
alter table runs
    add column priority smallint not null default 0,
    add constraint runs_priority_range check (priority between 0 and 1000);
