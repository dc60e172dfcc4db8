with held as (select id from runs where lease_owner = $1 and status = 'running'
                        order by id
                          for no key update),
              r as (update runs u set status = 'queued', lease_owner = null, lease_expires_at = null
                     where u.id = any (array(select id from held))
                    returning u.id),
              abandoned as (
                    update step_attempts a
                       set status = 'abandoned', finished_at = clock_timestamp(),
                           error = 'abandoned: ' || $2
                     where a.run_id = any (array(select id from r)) and a.status = 'running'
                       and ((a.run_id, a.step_id) in (
                               select s.run_id, s.step_id from steps s
                                where s.run_id = any (array(select id from r))
                                  and s.status = 'running')) is true),
              pending as (update steps set status = 'pending'
                           where run_id = any (array(select id from r)) and status = 'running'),
              events as (insert into run_events (run_id, kind, data)
                         select id, 'run_released',
                                jsonb_build_object('worker', $1::text, 'reason', $2::text)
                           from r order by id)
         select id from r order by id