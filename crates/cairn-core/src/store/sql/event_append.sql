insert into run_events (run_id, kind, step_id, data)
         select $1, $2, $3, $4 where exists (select from runs where id = $1)