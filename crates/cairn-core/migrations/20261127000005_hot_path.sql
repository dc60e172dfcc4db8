-- The hot path: fewer notifications, room for in-page updates, earlier vacuuming.

-- One notification per statement that appends events (not one per event): listeners
-- only need a wake-up, then read `run_events` after their cursor.
--
-- A transaction that notifies holds a database-wide lock through its commit, so
-- notifying commits happen one at a time. Workers therefore connect with
-- `cairn.notify_events = off` (the trigger is not even called for them) and announce
-- their events themselves, at most every few tens of milliseconds, in a statement of
-- their own.
drop trigger run_events_notify on run_events;
drop function run_events_notify();
create function run_events_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('cairn_events', '{"id": 0}');
    return null;
end $$;
create trigger run_events_notify after insert on run_events
    for each statement
    when (current_setting('cairn.notify_events', true) is distinct from 'off')
    execute function run_events_notify();

-- `steps` and `step_attempts` rows are updated in place a few times each (start,
-- success); free room in every page lets those updates stay on the page (HOT) instead
-- of adding index entries. `runs` are updated on every lease and status change.
alter table steps set (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);
alter table step_attempts set (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);
alter table runs set (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
