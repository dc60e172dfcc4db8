-- Identifiers and states compare byte by byte (`collate "C"`), whatever the database's
-- default collation is.
--
-- Run ids are ULIDs, step ids and worker ids are names Cairn checks, statuses and event
-- kinds are fixed ASCII words: none of them has a linguistic order to respect. Under a
-- locale collation such as `en_US.UTF-8` (the default of the `postgres` image, of most
-- managed services and of many distributions' clusters), every comparison of them goes
-- through `strcoll` after copying both strings, and the hot path compares them all the
-- time: each lease and status change of a run adds entries to `runs`' indexes on
-- (status, …), (workflow, …), (lease_owner, …); each step, attempt and event is found
-- and inserted by (run_id, step_id). Measured with `cairn-bench --scenario drain` on a
-- database created with `en_US.UTF-8`, this costs about a fifth of the database's CPU
-- per run; with byte order those databases run as fast as a `C` one.
--
-- Every column that holds a run id or a step id changes together, in every table: a
-- comparison between two collations is made in the non-default one, and an index can
-- serve it only when the index has that collation too, so a run id left in the default
-- collation in one table would lose its index to lookups from the others (the deletes
-- of `runs_delete_children`, the foreign keys' actions).
--
-- The column type stays `text`, so no table is rewritten; the indexes on these columns
-- are rebuilt, which holds each table's lock for as long as that takes (seconds per
-- million rows). The state-machine triggers name `status` in their conditions and are
-- made again, unchanged, around the change.

drop trigger runs_transition on runs;
drop trigger steps_transition on steps;

alter table runs
    alter column id type text collate "C",
    alter column status type text collate "C",
    alter column workflow type text collate "C",
    alter column concurrency_key type text collate "C",
    alter column lease_owner type text collate "C",
    alter column parent_run_id type text collate "C",
    alter column parent_step_id type text collate "C",
    alter column replay_of type text collate "C";

alter table steps
    alter column run_id type text collate "C",
    alter column step_id type text collate "C",
    alter column status type text collate "C",
    alter column child_run_id type text collate "C";

alter table step_attempts
    alter column run_id type text collate "C",
    alter column step_id type text collate "C",
    alter column status type text collate "C",
    alter column worker_id type text collate "C";

alter table run_events
    alter column run_id type text collate "C",
    alter column step_id type text collate "C",
    alter column kind type text collate "C";

alter table map_items
    alter column run_id type text collate "C",
    alter column step_id type text collate "C",
    alter column status type text collate "C",
    alter column child_run_id type text collate "C";

alter table step_slots
    alter column run_id type text collate "C",
    alter column step_id type text collate "C";

alter table step_slot_waiters
    alter column run_id type text collate "C",
    alter column step_id type text collate "C";

alter table dead_letters
    alter column run_id type text collate "C",
    alter column step_id type text collate "C";

alter table llm_usage
    alter column run_id type text collate "C",
    alter column step_id type text collate "C";

alter table notifications
    alter column run_id type text collate "C",
    alter column step_id type text collate "C";

alter table schedule_ticks
    alter column run_id type text collate "C";

-- `runs.lease_owner` is joined to the worker that holds the lease.
alter table workers
    alter column id type text collate "C";

create trigger steps_transition before update on steps
    for each row
    when (old.status in ('succeeded', 'skipped'))
    execute function steps_check_transition();

create trigger runs_transition before update of status on runs
    for each row
    when (old.status is distinct from new.status)
    execute function runs_check_transition();
