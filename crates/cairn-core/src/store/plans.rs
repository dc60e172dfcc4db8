//! The hot statements' plans, checked in each state a deployment's tables go through:
//! analyzed while empty (a fresh install, or a table autovacuum saw empty), analyzed
//! with every run queued, and analyzed under a long history of finished runs.
//!
//! Workers plan each statement once per connection (`plan_cache_mode =
//! force_generic_plan`) and keep that plan while the tables grow, so a plan that is
//! only right for the statistics of the moment it was made degrades without bound: a
//! drain once slowed from 4.6 ms to 164 ms per batch because an analyzed empty
//! `step_attempts` made the planner read it whole on the outer side of a join. The rule
//! checked here is about shape, not time: every read of a hot table goes through an
//! index by key, whatever the statistics say.

use serde_json::Value;
use sqlx::PgConnection;

/// The tables that grow with every run: a hot statement reads them by key only.
const HOT_TABLES: &[&str] = &[
    "runs",
    "steps",
    "step_attempts",
    "run_events",
    "jobs",
    "dead_letters",
];

/// How a statement is run in production: by a worker (one generic plan per connection,
/// no sequential scans: `store::connect_quiet`), by the API (a plan for each execution
/// and its values, given as SQL literals here: `store::connect_api`), or by the API's
/// submit connections (the server's default, whose plan is generic after five runs:
/// `store::connect_unannounced`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Session {
    Worker,
    Api(&'static str),
    Submit,
}

/// A hot statement and the session that runs it.
pub(super) struct Hot {
    pub name: &'static str,
    pub sql: String,
    pub session: Session,
}

/// The statements on the path of every run: submit, fetch and lease, transitions,
/// failures, heartbeat, rescue, hand-back, and the reads of a run's page.
pub(super) fn hot_statements() -> Vec<Hot> {
    use Session::*;
    let hot = |name, sql: &str, session| Hot {
        name,
        sql: sql.to_owned(),
        session,
    };
    vec![
        hot(
            "submit (runs, steps, events, wake-ups)",
            &super::runs::INSERT_MANY,
            Submit,
        ),
        hot("wake-ups (queue::enqueue)", super::jobs::PUSH, Worker),
        hot("claim (fetch and lease)", &super::jobs::CLAIM, Worker),
        hot("lease one run", &super::runs::ACQUIRE, Worker),
        hot("step transitions", super::steps::TRANSITIONS, Worker),
        hot("lease fence", super::LEASE_FENCE, Worker),
        hot("event append", super::events::EVENT_APPEND, Worker),
        hot("heartbeat", super::workers::HEARTBEAT, Worker),
        hot("rescue expired leases", super::runs::RESCUE, Worker),
        hot("hand back held runs", super::runs::RELEASE_HELD, Worker),
        hot("close a failed attempt", super::steps::ATTEMPT_FAIL, Worker),
        hot("waiting steps' news", super::steps::STEPS_HAVE_NEWS, Worker),
        // Not on a run's path, but it deletes from every hot table while workers write
        // them; its transactions plan as workers' do (`retention::BATCH_SETTINGS`).
        hot(
            "reaper batch (retention)",
            super::retention::REAP_RUNS,
            Worker,
        ),
        hot(
            "a run's steps",
            super::steps::STEP_LIST,
            Api("'run000000000007'"),
        ),
        hot(
            "a run's events",
            super::events::EVENT_LIST,
            Api("'run000000000007', 0"),
        ),
    ]
}

/// The plan `session` would run `sql` with, as `EXPLAIN (FORMAT JSON)` gives it. A
/// worker's generic plan does not depend on the values, so every parameter is null.
pub(super) async fn plan(
    conn: &mut PgConnection,
    sql: &str,
    session: Session,
) -> sqlx::Result<Value> {
    let (mode, seqscan) = match session {
        Session::Worker => ("force_generic_plan", "off"),
        Session::Api(_) => ("force_custom_plan", "on"),
        Session::Submit => ("force_generic_plan", "on"),
    };
    let settings = format!("set plan_cache_mode = {mode}; set enable_seqscan = {seqscan}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(settings))
        .execute(&mut *conn)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("prepare hot as {sql}")))
        .execute(&mut *conn)
        .await?;
    let params = sqlx::query_scalar!(
        r#"select coalesce(cardinality(parameter_types), 0) as "params!" from pg_prepared_statements
          where name = 'hot'"#
    )
    .fetch_one(&mut *conn)
    .await?;
    let args = match session {
        Session::Api(values) => values.to_owned(),
        Session::Worker | Session::Submit => vec!["null"; params as usize].join(", "),
    };
    let execute = match params {
        0 => "explain (format json) execute hot".to_owned(),
        _ => format!("explain (format json) execute hot({args})"),
    };
    let plan = sqlx::query_scalar(sqlx::AssertSqlSafe(execute))
        .fetch_one(&mut *conn)
        .await;
    sqlx::query("deallocate hot").execute(&mut *conn).await?;
    plan
}

/// What is wrong with `plan` by the rule above: each read of a hot table that is a
/// sequential scan, an index scan with no key condition (which reads the whole index)
/// outside an ordered read stopped by a `LIMIT`, or the inner side of a nested loop
/// that looks a whole array of keys up for each outer row.
pub(super) fn plan_problems(plan: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(root) = plan.get(0).and_then(|p| p.get("Plan")) {
        visit(root, false, false, &mut problems);
    }
    problems
}

fn visit(node: &Value, under_limit: bool, inner_of_loop: bool, problems: &mut Vec<String>) {
    let kind = node["Node Type"].as_str().unwrap_or_default();
    let relation = node["Relation Name"].as_str().unwrap_or_default();
    let index = node["Index Name"].as_str().unwrap_or_default();
    let cond = node["Index Cond"].as_str();
    if HOT_TABLES.contains(&relation) {
        match kind {
            "Seq Scan" => problems.push(format!("Seq Scan on {relation}")),
            "Index Scan" | "Index Only Scan" if cond.is_none() && !under_limit => problems.push(
                format!("{kind} using {index} on {relation} with no Index Cond"),
            ),
            // A key array looked up again for every row of the loop's outer side.
            "Index Scan" | "Index Only Scan"
                if inner_of_loop && cond.is_some_and(|c| c.contains("ANY (")) =>
            {
                problems.push(format!(
                    "{kind} using {index} on {relation} looks up a key array for each outer row"
                ))
            }
            _ => {}
        }
    }
    if kind == "Bitmap Index Scan" && cond.is_none() {
        problems.push(format!(
            "Bitmap Index Scan using {index} with no Index Cond"
        ));
    }
    let limit = kind == "Limit";
    if let Some(children) = node["Plans"].as_array() {
        for (i, child) in children.iter().enumerate() {
            let inner = kind == "Nested Loop" && i == 1;
            visit(child, limit, inner, problems);
        }
    }
}

/// The scans of `plan`, one line each, for a failure's message.
pub(super) fn plan_outline(plan: &Value) -> String {
    fn walk(node: &Value, depth: usize, out: &mut String) {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        out.push_str(&format!("{:width$}{kind}", "", width = depth * 2));
        for key in ["Relation Name", "Index Name", "CTE Name"] {
            if let Some(v) = node[key].as_str() {
                out.push_str(&format!(" {v}"));
            }
        }
        if let Some(cond) = node["Index Cond"].as_str() {
            out.push_str(&format!(" [{cond}]"));
        }
        out.push('\n');
        if let Some(children) = node["Plans"].as_array() {
            for child in children {
                walk(child, depth + 1, out);
            }
        }
    }
    let mut out = String::new();
    if let Some(root) = plan.get(0).and_then(|p| p.get("Plan")) {
        walk(root, 0, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RunStatus;
    use sqlx::PgPool;

    /// Seeds `n` runs of `status` (queued: each with a pending step, a wake-up and one
    /// event; succeeded: each with a finished step, attempt and five events), inserted
    /// with triggers off so a history of many thousands takes seconds.
    async fn seed(pool: &PgPool, from: i64, n: i64, status: RunStatus) {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("set local session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .expect("replica");
        let finished = status == RunStatus::Succeeded;
        let sql = format!(
            "with r as (
                 insert into runs (id, workflow, definition_hash, status, input, output,
                                   created_at, started_at, finished_at)
                 select 'run' || lpad(g::text, 12, '0'), 'w', 'h', '{status}', '{{}}'::jsonb,
                        case when {finished} then '{{}}'::jsonb end,
                        now() - interval '1 hour' + g * interval '1 ms',
                        case when {finished} then now() end,
                        case when {finished} then now() end
                   from generate_series($1::bigint, $1 + $2 - 1) g
                 returning id),
             s as (
                 insert into steps (run_id, step_id, status, attempts, output, started_at,
                                    finished_at)
                 select id, 'a', case when {finished} then 'succeeded' else 'pending' end,
                        case when {finished} then 1 else 0 end,
                        case when {finished} then '{{}}'::jsonb end,
                        case when {finished} then now() end, case when {finished} then now() end
                   from r),
             a as (
                 insert into step_attempts (run_id, step_id, attempt, worker_id, status,
                                            finished_at)
                 select id, 'a', 1, 'w1', 'succeeded', now() from r where {finished}),
             e as (
                 insert into run_events (run_id, kind, data)
                 select id, k, '{{}}'::jsonb
                   from r, unnest(case when {finished}
                                       then array['run_queued', 'run_running', 'step_started',
                                                  'step_succeeded', 'run_succeeded']
                                       else array['run_queued'] end) k),
             j as (
                 insert into apalis.jobs (id, job_type, job, metadata)
                 select 'job' || id, 'cairn.runs',
                        convert_to(json_build_object('run_id', id)::text, 'utf8'), ''::hstore
                   from r where not {finished})
             select count(*) from r"
        );
        let inserted: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(n)
            .fetch_one(&mut *tx)
            .await
            .expect("seed");
        assert_eq!(inserted, n);
        tx.commit().await.expect("commit");
    }

    const EMPTY: &str = "analyzed empty";

    async fn check(pool: &PgPool, state: &str, analyze: bool, failures: &mut Vec<String>) {
        if analyze {
            sqlx::query("analyze").execute(pool).await.expect("analyze");
        }
        let mut conn = pool.acquire().await.expect("connection");
        for hot in hot_statements() {
            // The API plans each execution for the tables as they are: on empty tables
            // any plan is right, and it is not kept.
            if state == EMPTY && matches!(hot.session, Session::Api(_)) {
                continue;
            }
            let plan = plan(&mut conn, &hot.sql, hot.session)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", hot.name));
            let problems = plan_problems(&plan);
            if !problems.is_empty() {
                failures.push(format!(
                    "{state} / {}: {}\n{}",
                    hot.name,
                    problems.join("; "),
                    plan_outline(&plan)
                ));
            }
        }
    }

    #[sqlx::test(migrations = false)]
    async fn hot_statements_read_hot_tables_by_key_in_every_state(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        // Statistics change only when this test analyzes.
        for table in HOT_TABLES {
            let table = if *table == "jobs" {
                "apalis.jobs"
            } else {
                table
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "alter table {table} set (autovacuum_enabled = false)"
            )))
            .execute(&pool)
            .await
            .expect("autovacuum off");
        }
        let mut failures = Vec::new();
        check(&pool, EMPTY, true, &mut failures).await;
        seed(&pool, 0, 20_000, RunStatus::Queued).await;
        check(
            &pool,
            "analyzed empty, then 20k runs queued",
            false,
            &mut failures,
        )
        .await;
        check(&pool, "analyzed, everything queued", true, &mut failures).await;
        seed(&pool, 1_000_000, 100_000, RunStatus::Succeeded).await;
        check(&pool, "analyzed, 100k finished runs", true, &mut failures).await;
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The database's default collation is a deployment's choice (`en_US.UTF-8` in the
    /// `postgres` image), so identifiers and states are byte-ordered (`collate "C"`)
    /// in every table: compared under a locale, each index entry the hot path adds
    /// costs `strcoll` calls. And a run id in one table must be reachable by index from
    /// another's: a column left in the default collation is compared in `C`, its
    /// index cannot serve that comparison, and the join reads it whole.
    #[sqlx::test(migrations = false)]
    async fn identifiers_are_byte_ordered_and_reached_by_index_from_every_table(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        let columns: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "select table_name::text, column_name::text, collation_name::text
               from information_schema.columns
              where table_schema = 'public' and data_type = 'text'
                and (column_name in ('run_id', 'child_run_id', 'parent_run_id', 'replay_of',
                                     'step_id', 'parent_step_id', 'worker_id', 'lease_owner')
                     or (table_name, column_name) in (
                         ('runs', 'id'), ('runs', 'status'), ('runs', 'workflow'),
                         ('steps', 'status'), ('step_attempts', 'status'),
                         ('map_items', 'status'), ('run_events', 'kind'), ('workers', 'id')))
              order by 1, 2",
        )
        .fetch_all(&pool)
        .await
        .expect("columns");
        assert!(columns.len() > 30, "{columns:?}");
        let not_c: Vec<String> = columns
            .iter()
            .filter(|(_, _, collation)| collation.as_deref() != Some("C"))
            .map(|(table, column, collation)| format!("{table}.{column} ({collation:?})"))
            .collect();
        assert!(not_c.is_empty(), "not byte-ordered: {not_c:?}");

        // Every indexed run id, found from `runs` by a lookup in its index.
        let indexed: Vec<(String, String)> = sqlx::query_as(
            "select distinct c.relname::text, a.attname::text
               from pg_index i
               join pg_class c on c.oid = i.indrelid
               join pg_namespace n on n.oid = c.relnamespace and n.nspname = 'public'
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
              where a.attname in ('run_id', 'child_run_id', 'parent_run_id', 'replay_of')
              order by 1, 2",
        )
        .fetch_all(&pool)
        .await
        .expect("indexes");
        assert!(indexed.len() >= 8, "{indexed:?}");
        let mut conn = pool.acquire().await.expect("connection");
        sqlx::raw_sql(
            "set enable_seqscan = off; set enable_hashjoin = off; set enable_mergejoin = off",
        )
        .execute(&mut *conn)
        .await
        .expect("settings");
        let mut failures = Vec::new();
        for (table, column) in &indexed {
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "explain select 1 from runs r join {table} x on x.{column} = r.id
                  where r.id = any ('{{a,b}}'::text[])"
            )))
            .fetch_all(&mut *conn)
            .await
            .expect("explain");
            let plan = plan.join("\n");
            if !plan.contains(&format!("Index Cond: ({column} = r.id)")) {
                failures.push(format!("{table}.{column}:\n{plan}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_rule_flags_full_reads_and_allows_limited_ordered_ones() {
        let plan = serde_json::json!([{ "Plan": { "Node Type": "Nested Loop", "Plans": [
            { "Node Type": "Index Scan", "Relation Name": "step_attempts",
              "Index Name": "step_attempts_pkey" },
            { "Node Type": "Seq Scan", "Relation Name": "runs" },
            { "Node Type": "Index Scan", "Relation Name": "steps", "Index Name": "steps_pkey",
              "Index Cond": "(run_id = x)" },
            { "Node Type": "Limit", "Plans": [
                { "Node Type": "Index Scan", "Relation Name": "runs",
                  "Index Name": "runs_created" }]},
            { "Node Type": "Nested Loop", "Plans": [
                { "Node Type": "CTE Scan", "CTE Name": "ok" },
                { "Node Type": "Index Scan", "Relation Name": "steps", "Index Name": "steps_pkey",
                  "Index Cond": "((run_id = ok.run_id) AND (run_id = ANY ($1)))" }]}
        ]}}]);
        assert_eq!(
            plan_problems(&plan),
            vec![
                "Index Scan using step_attempts_pkey on step_attempts with no Index Cond",
                "Seq Scan on runs",
                "Index Scan using steps_pkey on steps looks up a key array for each outer row"
            ]
        );
    }
}
