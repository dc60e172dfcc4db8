with expired as (
             select id, lease_owner from runs
              where status = 'running' and lease_expires_at < now()
              order by lease_expires_at
              limit $1
              for update skip locked),
         r as (update runs r set status = 'queued', lease_owner = null, lease_expires_at = null
                where r.id = any (array(select id from expired))
               returning r.id)
         select r.id, e.lease_owner from r join expired e on e.id = r.id