-- Backfill: an operator starts the runs of a schedule's fire times in a past (or any)
-- range. Each backfilled fire time is a tick of its own kind, `backfill`, held to the
-- same exactly-once index as the scheduler's ticks (`schedule_ticks_once` covers every
-- kind but `manual`): a fire time the scheduler handled is not backfilled, one that a
-- backfill handled is not fired again, and two backfills of one range start each run
-- once.
alter table schedule_ticks
    drop constraint schedule_ticks_kind_valid,
    add constraint schedule_ticks_kind_valid check (kind in ('on_time', 'late', 'manual', 'backfill'));
