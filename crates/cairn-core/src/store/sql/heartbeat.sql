with mine as (
              select id from runs
               where id = any ($3) and lease_owner = $1 and status = 'running'
                 and lease_expires_at > clock_timestamp()
               order by id
                 for no key update)
         update runs r set lease_expires_at = clock_timestamp() + make_interval(secs => $2)
           where r.id = any (array(select id from mine))