-- The state-machine triggers run their PL/pgSQL only when there is something to check.
-- Every step start and checkpoint updates a `steps` row, and almost every lease and
-- status change a `runs` row; calling a function for each of those to find nothing to
-- do is a measurable share of a transition's cost. The conditions are the functions'
-- own early exits, so what is allowed and refused is unchanged.

-- Only a checkpointed step can be refused a change.
drop trigger steps_transition on steps;
create trigger steps_transition before update on steps
    for each row
    when (old.status in ('succeeded', 'skipped'))
    execute function steps_check_transition();

-- Only a change of status is checked (and stamps `updated_at`).
drop trigger runs_transition on runs;
create trigger runs_transition before update of status on runs
    for each row
    when (old.status is distinct from new.status)
    execute function runs_check_transition();
