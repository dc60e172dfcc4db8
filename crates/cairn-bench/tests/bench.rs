//! A smoke run of `cairn-bench`: the scenarios, small, through the real binaries (the
//! bench's, which starts the workspace's `cairn` from beside it). It
//! checks that each figure is produced with a positive number and that the bench's own
//! correctness checks passed (it exits non-zero otherwise) — never that Cairn is fast.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

/// Runs in each scenario of the smoke run.
const RUNS: f64 = 30.0;

/// The figures the smoke run prints, by scenario, each a positive number.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "drain",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "runs_per_s",
            "db_commits_per_run",
            "wal_bytes_per_run",
            "machine_cpu_busy_pct",
            "verified_runs",
            "one_worker_runs_per_s",
        ],
    ),
    (
        "chain",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "steps_per_s",
            "db_commits_per_step",
            "wal_bytes_per_step",
            "machine_cpu_busy_pct",
            "verified_runs",
        ],
    ),
    (
        "pickup",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "worker_ready_ms",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "created_p50_ms",
            "created_p99_ms",
            "p50_submit_to_lease_ms",
            "p50_lease_to_step_ms",
            "verified_runs",
        ],
    ),
    (
        "submit_http",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "runs_per_s",
            "verified_runs",
            "batch_runs_per_s",
            "batch_verified_runs",
            "batch_one_connection_runs_per_s",
        ],
    ),
    (
        "backlog",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "drain_empty_runs_per_s",
            "drain_backlog_runs_per_s",
            "backlog_vs_empty",
            "list_first_page_ms",
            "list_first_page_cold_ms",
            "verified_runs",
        ],
    ),
    (
        "history",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "drain_empty_runs_per_s",
            "drain_history_runs_per_s",
            "history_vs_empty",
            "list_first_page_ms",
            "list_first_page_cold_ms",
            "verified_runs",
        ],
    ),
    (
        "retention",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "drain_kept_runs_per_s",
            "drain_reaping_runs_per_s",
            "reaping_vs_kept",
            "reaper_runs_per_s",
            "verified_runs",
        ],
    ),
    (
        "memory",
        &[
            "floor_rows_per_s",
            "keep_history_floor_per_s",
            "drain_runs_per_s",
            "worker_peak_rss_mib",
            "api_peak_rss_mib",
            "verified_runs",
        ],
    ),
];

/// Throughput figures, which carry a ratio to the floor.
const RATIOS: &[(&str, &str)] = &[
    ("drain", "runs_per_s"),
    ("chain", "steps_per_s"),
    ("submit_http", "runs_per_s"),
    ("submit_http", "batch_runs_per_s"),
    ("submit_http", "batch_one_connection_runs_per_s"),
    ("drain", "one_worker_runs_per_s"),
    ("backlog", "drain_empty_runs_per_s"),
    ("backlog", "drain_backlog_runs_per_s"),
    ("memory", "drain_runs_per_s"),
];

/// Throughput figures that also carry a ratio to the keep-history floor.
const HISTORY_RATIOS: &[(&str, &str)] = &[
    ("drain", "runs_per_s"),
    ("drain", "one_worker_runs_per_s"),
    ("chain", "steps_per_s"),
    ("history", "drain_empty_runs_per_s"),
    ("history", "drain_history_runs_per_s"),
    ("retention", "drain_kept_runs_per_s"),
    ("retention", "drain_reaping_runs_per_s"),
];

/// Figures that may be zero (CPU is counted in 10 ms ticks; autovacuum may have run).
const NON_NEGATIVE: &[(&str, &str)] = &[
    ("drain", "worker_cpu_ms_per_run"),
    ("drain", "postgres_cpu_ms_per_run"),
    ("chain", "worker_cpu_ms_per_step"),
    ("chain", "postgres_cpu_ms_per_step"),
    ("submit_http", "api_cpu_us_per_run"),
    ("submit_http", "postgres_cpu_us_per_run"),
    ("submit_http", "client_cpu_us_per_run"),
    ("submit_http", "batch_api_cpu_us_per_run"),
    ("submit_http", "batch_postgres_cpu_us_per_run"),
    ("submit_http", "batch_client_cpu_us_per_run"),
    ("submit_http", "machine_cpu_busy_pct"),
    ("submit_http", "batch_machine_cpu_busy_pct"),
    // The reaper may finish before the drain's last run (it is small here).
    ("retention", "reaped_during_drain"),
    ("memory", "dead_tuples_runs"),
    ("memory", "dead_tuples_steps"),
    ("memory", "dead_tuples_step_attempts"),
    ("memory", "dead_tuples_run_events"),
    ("memory", "dead_tuples_apalis_jobs"),
];

/// `cairn-bench ARGS -o json` against `DATABASE_URL` (the admin connection).
fn bench(args: &[&str]) -> Output {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at a PostgreSQL superuser connection");
    Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(args)
        .args(["--floor-rows", "5000", "-o", "json"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("cairn-bench runs")
}

/// The JSON lines by (scenario, figure); panics on anything else or a repeat.
fn figures(stdout: &str) -> HashMap<(String, String), Value> {
    let mut figures = HashMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["scenario", "figure", "unit"] {
            assert!(v[key].is_string(), "no {key}: {line}");
        }
        let key = (
            v["scenario"].as_str().unwrap_or_default().to_owned(),
            v["figure"].as_str().unwrap_or_default().to_owned(),
        );
        assert!(
            figures.insert(key, v.clone()).is_none(),
            "printed twice: {line}"
        );
    }
    figures
}

#[test]
fn bench_runs_every_scenario_and_verifies_its_runs() {
    let started = Instant::now();
    let out = bench(&[
        "--scenario",
        // Every scenario but fanout, which runs on its own with `sql` steps: see
        // `fanout_finishes_with_default_settings` below.
        "drain,chain,pickup,submit_http,backlog,history,retention,memory",
        "--runs",
        "30",
        "--history",
        "500",
        "--reap",
        "500",
        "--concurrency",
        "4",
        "--memory-concurrency",
        "20",
        "--connections",
        "16",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cairn-bench failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    eprintln!("cairn-bench took {:?}", started.elapsed());

    let figures = figures(&stdout);
    let get = |scenario: &str, figure: &str| -> &Value {
        figures
            .get(&(scenario.to_owned(), figure.to_owned()))
            .unwrap_or_else(|| panic!("no {scenario}/{figure} in:\n{stdout}"))
    };
    let positive = |scenario: &str, figure: &str, field: &str| {
        let v = get(scenario, figure);
        let n = v[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{scenario}/{figure}: {field} is not a number: {v}"));
        assert!(
            n > 0.0 && n.is_finite(),
            "{scenario}/{figure}: {field} = {n}"
        );
        n
    };

    for (scenario, names) in EXPECTED {
        for figure in *names {
            positive(scenario, figure, "value");
        }
    }
    for (scenario, figure) in RATIOS {
        positive(scenario, figure, "ratio");
    }
    for (scenario, figure) in HISTORY_RATIOS {
        positive(scenario, figure, "history_ratio");
    }
    for (scenario, figure) in NON_NEGATIVE {
        let v = get(scenario, figure);
        assert!(
            v["value"].as_f64().is_some_and(|n| n >= 0.0),
            "{scenario}/{figure}: {v}"
        );
    }
    // Every run of every scenario was checked; for backlog, both drains.
    for scenario in ["drain", "chain", "pickup", "submit_http", "memory"] {
        assert_eq!(get(scenario, "verified_runs")["value"], RUNS, "{scenario}");
    }
    assert_eq!(get("backlog", "verified_runs")["value"], 2.0 * RUNS);
    assert_eq!(get("history", "verified_runs")["value"], 2.0 * RUNS);
    assert_eq!(get("retention", "verified_runs")["value"], 2.0 * RUNS);
    let (p50, p95, p99) = (
        positive("pickup", "p50_ms", "value"),
        positive("pickup", "p95_ms", "value"),
        positive("pickup", "p99_ms", "value"),
    );
    assert!(p50 <= p95 && p95 <= p99, "{p50} {p95} {p99}");
    // The batch endpoint's part submits ten times the runs.
    assert_eq!(
        get("submit_http", "batch_verified_runs")["value"],
        10.0 * RUNS
    );
    assert!(
        !figures.keys().any(|(_, f)| f == "error"),
        "a scenario failed:\n{stdout}"
    );
}

/// The fan-out scenario (1 → 50 parallel → 1) of `sql` steps with a worker's default 10
/// connections: a run's parallel `sql` steps outnumber the pool, and every run must still finish
/// (each attempt runs on its own task, so recording one step's outcome never waits on
/// steps that are not being polled).
#[test]
fn fanout_finishes_with_default_settings() {
    let out = bench(&["--scenario", "fanout", "--runs", "5", "--step", "sql"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cairn-bench failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    let figures = figures(&stdout);
    let verified = figures.get(&("fanout".to_owned(), "verified_runs".to_owned()));
    assert_eq!(verified.map(|v| v["value"].clone()), Some(Value::from(5.0)));
}
