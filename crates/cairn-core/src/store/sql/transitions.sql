with input as (
          select * from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::int[],
                               $6::jsonb[], $7::jsonb[], $8::text[], $9::int[])
                   with ordinality
                   as i (run_id, token, owner, ck_step, ck_attempt, ck_output, run_output,
                         begin_step, begin_attempt, ord)),
     -- The runs named, found and locked by key alone, then kept if still leased
     -- with the token given, as locked. Found with the status among the conditions,
     -- a generic plan that trusted the statistics of `status` (few running runs)
     -- read every running run through `runs_status_created` for each statement.
     locked as materialized (
          select r.id, r.status, r.lease_token, r.lease_expires_at, r.cancel_requested_at
            from runs r
           where r.id = any ($1::text[])
           order by r.id
             for no key update),
     fence as (
          select l.id from locked l
           where l.status = 'running' and l.lease_expires_at > clock_timestamp()
             and l.cancel_requested_at is null
             and exists (select from input i where i.run_id = l.id and i.token = l.lease_token)),
     ok as (select i.* from input i where i.run_id in (select id from fence)),
     at as (select clock_timestamp() as t),
     -- Every write finds its rows by key alone (`= any (array(...))`, the only index
     -- condition it has), keeps the exact rows with a filter on their whole key (a
     -- hashed subplan: `(…) in (…) is true` is never turned into a join), and looks
     -- its new values up in `ok`: it joins nothing. Joined to `ok`, the plan
     -- hung on the join order: with the table outside, an analyzed empty
     -- `step_attempts` was read whole for every batch for as long as the connection
     -- kept the plan; with `ok` outside, any key condition besides the join is looked
     -- up again for each row.
     done as (update steps s
                 set status = 'succeeded', error = null, finished_at = (select t from at),
                     output = (select ok.ck_output from ok
                                where ok.run_id = s.run_id and ok.ck_step = s.step_id limit 1)
               where s.run_id = any (array(select run_id from ok where ck_step is not null))
                 and ((s.run_id, s.step_id) in (
                         select run_id, ck_step from ok where ck_step is not null)) is true),
     done_attempt as (
              update step_attempts a set status = 'succeeded', finished_at = (select t from at)
               where a.run_id = any (array(select run_id from ok where ck_step is not null))
                 and ((a.run_id, a.step_id, a.attempt) in (
                         select run_id, ck_step, ck_attempt from ok
                          where ck_step is not null)) is true),
     run as (update runs r
                set status = 'succeeded', finished_at = (select t from at), lease_owner = null,
                    lease_expires_at = null,
                    output = (select ok.run_output from ok
                               where ok.run_id = r.id and ok.run_output is not null limit 1)
              where r.id = any (array(select run_id from ok where run_output is not null))),
     begun as (update steps s
                  set status = 'running', next_attempt_at = null,
                      started_at = coalesce(s.started_at, (select t from at)),
                      attempts = (select ok.begin_attempt from ok
                                   where ok.run_id = s.run_id and ok.begin_step = s.step_id
                                   limit 1)
                where s.run_id = any (array(select run_id from ok where begin_step is not null))
                  and ((s.run_id, s.step_id) in (
                          select run_id, begin_step from ok where begin_step is not null)) is true
            returning s.run_id, s.step_id, s.attempts),
     begun_attempt as (
              insert into step_attempts (run_id, step_id, attempt, worker_id, started_at)
              select b.run_id, b.step_id, b.attempts,
                     (select ok.owner from ok where ok.run_id = b.run_id limit 1),
                     (select t from at)
                from begun b),
     events as (
              insert into run_events (run_id, kind, step_id, data)
              select ok.run_id, v.kind, v.step, v.data
                from ok,
                     lateral (values
                         (1, 'step_succeeded', ok.ck_step,
                          jsonb_build_object('attempt', ok.ck_attempt)),
                         (2, 'run_succeeded', null, '{}'::jsonb),
                         (3, 'step_started', ok.begin_step,
                          jsonb_build_object('attempt', ok.begin_attempt,
                                             'worker', ok.owner)))
                       as v (ord, kind, step, data)
               where (v.ord = 1 and ok.ck_step is not null)
                  or (v.ord = 2 and ok.run_output is not null)
                  or (v.ord = 3 and ok.begin_step is not null)
               order by ok.ord, v.ord)
     select id from fence