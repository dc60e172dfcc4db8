select id, run_id, at, kind, step_id, data from run_events
          where run_id = $1 and id > $2 order by id