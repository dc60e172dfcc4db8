-- A run's references are checked where it is inserted, once per statement, instead of
-- by foreign keys, once per row.
--
-- Every foreign key of `runs` ran its trigger for every inserted run, even with the
-- column null (user, project, parent, replayed run: usually null), and the definition's
-- looked its row up and locked it for each of a batch's runs, all of which share one
-- definition. Together about a fifth of the database's CPU for a batch of submitted
-- runs in `cairn bench`.
--
-- What replaces them:
--   * the definition: the statements inserting runs (`store::runs`) insert nothing
--     when it is missing, and say so;
--   * the user, project, parent and replayed run come from rows the caller has just
--     read (the authenticated user, the project checked by the API, the run a worker
--     holds, the run being replayed);
--   * `on delete set null`: the statement triggers below.
alter table runs drop constraint runs_definition_hash_fkey;
alter table runs drop constraint runs_user_id_fkey;
alter table runs drop constraint runs_project_id_fkey;
alter table runs drop constraint runs_parent_run_id_fkey;
alter table runs drop constraint runs_replay_of_fkey;
alter table steps drop constraint steps_child_run_id_fkey;

-- Deleting runs: what belonged to them goes (migration 0007), and what pointed at them
-- forgets them.
create index steps_child_run on steps (child_run_id) where child_run_id is not null;

create or replace function runs_delete_children() returns trigger language plpgsql as $$
begin
    delete from step_attempts a using gone g where a.run_id = g.id;
    delete from steps s using gone g where s.run_id = g.id;
    delete from run_events e using gone g where e.run_id = g.id;
    update runs r set parent_run_id = null from gone g where r.parent_run_id = g.id;
    update runs r set replay_of = null from gone g where r.replay_of = g.id;
    update steps s set child_run_id = null from gone g where s.child_run_id = g.id;
    return null;
end $$;

create function users_delete_forget() returns trigger language plpgsql as $$
begin
    update runs r set user_id = null from gone g where r.user_id = g.id;
    return null;
end $$;
create trigger users_delete_forget after delete on users
    referencing old table as gone
    for each statement execute function users_delete_forget();

create function projects_delete_forget() returns trigger language plpgsql as $$
begin
    update runs r set project_id = null from gone g where r.project_id = g.id;
    return null;
end $$;
create trigger projects_delete_forget after delete on projects
    referencing old table as gone
    for each statement execute function projects_delete_forget();
