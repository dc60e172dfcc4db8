-- The priority of the runs a schedule starts (see migration 0016): from `priority` in the
-- workflow file's [[schedules]] entry, or the API's.
alter table schedules
    add column priority smallint not null default 0,
    add constraint schedules_priority_range check (priority between 0 and 1000);
