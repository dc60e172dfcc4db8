insert into apalis.jobs (id, job_type, job, metadata, run_at)
     select w.job_id, $1, convert_to(json_build_object('run_id', w.run_id)::text, 'utf8'),
            ''::hstore,
            coalesce(w.at, now() - make_interval(mins => coalesce(
                (select r.priority from runs r where r.id = w.run_id), 0)))
       from unnest($2::text[], $3::text[], $4::timestamptz[]) as w (job_id, run_id, at)