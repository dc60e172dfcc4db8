-- The rows a run's transitions append — its steps, their attempts, its events — are
-- tied to their run by the statements that write them, not by foreign keys.
--
-- Each of those foreign keys ran a check query per inserted row (look the parent up
-- by its key, lock it `for key share`): a quarter of the database's CPU for a submitted
-- run (three checks: its step, its event, its definition), three checks for every
-- step a worker advances (the attempt and two events). Every statement that inserts
-- these rows takes the parent from rows it has just inserted or locked itself:
--
--   * a submit inserts the run and, from what that insert returned, its steps and its
--     `run_queued` event (`store::runs`);
--   * a worker's transition inserts attempts and events only for runs that passed the
--     lease fence (locked `for no key update` in the same statement), and an attempt
--     only for a step row the same statement updated (`store::steps`);
--   * operators' changes (cancel, retry, replay) lock or update the run first.
--
-- `runs.definition_hash` keeps its foreign key: submits rely on it to find a
-- definition that is missing after all.
alter table run_events drop constraint run_events_run_id_fkey;
alter table steps drop constraint steps_run_id_fkey;
alter table step_attempts drop constraint step_attempts_run_id_step_id_fkey;

-- What the foreign keys' `on delete cascade` did: deleting runs deletes what belongs
-- to them, in the same statement. (Cairn itself never deletes a run; an operator's
-- cleanup may.)
create function runs_delete_children() returns trigger language plpgsql as $$
begin
    delete from step_attempts a using gone g where a.run_id = g.id;
    delete from steps s using gone g where s.run_id = g.id;
    delete from run_events e using gone g where e.run_id = g.id;
    return null;
end $$;
create trigger runs_delete_children after delete on runs
    referencing old table as gone
    for each statement execute function runs_delete_children();
