//! The scenarios. Each starts from empty tables, sets up (seeds runs, starts processes),
//! measures, stops its processes, verifies its runs and only then reports its figures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::db::BenchDb;
use super::procs::{self, Service};
use super::report::{Figure, Output, round};
use super::{BenchError, BenchStep, Result, STALL, Scenario, Settings};
use cairn_core::workflow::Definition;

/// Steps of a `chain` run, one after the other.
const CHAIN_STEPS: u64 = 10;
/// Parallel steps of a `fanout` run, between its first and last step.
const FAN_WIDTH: u64 = 50;
/// How long a stopping process may take before it is killed.
const GRACE: Duration = Duration::from_secs(30);
/// How often the bench looks at progress (timings come from the database's clock, so
/// this only bounds how late the bench notices the end).
pub(super) const POLL: Duration = Duration::from_millis(250);
/// Runs `pickup` submits, and how far apart.
const PICKUP_GAP: Duration = Duration::from_millis(10);

/// The bench's workflows: every step is a `pass` step (no I/O), or with `--step sql` the
/// cheapest step that does I/O, `select 1`.
pub(super) struct Defs {
    noop: Definition,
    chain: Definition,
    fanout: Definition,
}

impl Defs {
    pub(super) fn build(kind: BenchStep) -> Result<Defs> {
        let parse = |name: &str, source: String| {
            Definition::parse(name, &format!("{name}.toml"), &source)
                .map_err(|e| BenchError::Workflow(format!("{name}: {e}")))
        };
        let step = |id: &str, needs: &[String]| {
            let needs = if needs.is_empty() {
                String::new()
            } else {
                let quoted: Vec<String> = needs.iter().map(|n| format!("\"{n}\"")).collect();
                format!("needs = [{}]\n", quoted.join(", "))
            };
            let what = match kind {
                BenchStep::Pass => "kind = \"pass\"",
                BenchStep::Sql => "kind = \"sql\"\nquery = \"select 1\"",
            };
            format!("[[steps]]\nid = \"{id}\"\n{what}\n{needs}\n")
        };
        let noop = format!(
            "description = \"cairn-bench: one no-op step\"\n\n{}",
            step("only", &[])
        );
        let mut chain = String::from("description = \"cairn-bench: ten no-op steps in a row\"\n\n");
        for i in 1..=CHAIN_STEPS {
            let needs: Vec<String> = if i == 1 {
                vec![]
            } else {
                vec![format!("s{:02}", i - 1)]
            };
            chain.push_str(&step(&format!("s{i:02}"), &needs));
        }
        let mut fanout =
            String::from("description = \"cairn-bench: 1 → 50 parallel → 1 no-op steps\"\n\n");
        fanout.push_str(&step("first", &[]));
        let branches: Vec<String> = (1..=FAN_WIDTH).map(|i| format!("b{i:02}")).collect();
        for b in &branches {
            fanout.push_str(&step(b, &["first".to_owned()]));
        }
        fanout.push_str(&step("last", &branches));
        Ok(Defs {
            noop: parse("bench_noop", noop)?,
            chain: parse("bench_chain", chain)?,
            fanout: parse("bench_fanout", fanout)?,
        })
    }

    /// Writes the workflow files the API loads.
    fn write(&self, dir: &std::path::Path) -> Result<()> {
        let dir = dir.join("workflows");
        std::fs::create_dir_all(&dir)
            .map_err(BenchError::io(format!("creating {}", dir.display())))?;
        for def in [&self.noop, &self.chain, &self.fanout] {
            let path = dir.join(format!("{}.toml", def.workflow.name));
            std::fs::write(&path, &def.source)
                .map_err(BenchError::io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }
}

/// Measures the floor, then runs each selected scenario on emptied tables. A failed
/// scenario is reported and the next one runs; the error lists every failure.
pub(super) async fn run_all(
    db: &BenchDb,
    settings: &Settings,
    selected: &[Scenario],
    out: &mut Output,
) -> Result<()> {
    let defs = Defs::build(settings.step)?;
    defs.write(&settings.dir)?;
    let mut bench = Bench {
        db,
        s: settings,
        defs: &defs,
        floor: None,
        history_floor: None,
        out,
    };
    let mut failures = Vec::new();
    for (i, &scenario) in selected.iter().enumerate() {
        let size = settings.size(scenario);
        tracing::info!(scenario = scenario.name(), size, "scenario");
        db.reset().await?;
        // Shared machines drift: each scenario's ratios use floors measured just
        // before it.
        bench.measure_floors(scenario, i == 0).await?;
        let result = match scenario {
            Scenario::Drain => bench.drain(size).await,
            Scenario::Chain => bench.chain(size).await,
            Scenario::Fanout => bench.fanout(size).await,
            Scenario::Pickup => bench.pickup(size).await,
            Scenario::SubmitHttp => bench.submit_http(size).await,
            Scenario::Backlog => bench.backlog(size).await,
            Scenario::History => bench.history(size).await,
            Scenario::Retention => bench.retention(size).await,
            Scenario::Memory => bench.memory(size).await,
            Scenario::All => Ok(()),
        };
        if let Err(e) = result {
            // The scenario's processes were killed when its future dropped them.
            tracing::error!(scenario = scenario.name(), error = %e, "scenario failed");
            let mut message = e.to_string();
            if !message.starts_with(&format!("{}: ", scenario.name())) {
                message = format!("{}: {message}", scenario.name());
            }
            let first_line = message.lines().next().unwrap_or_default();
            bench.out.emit(
                Figure::absent(
                    scenario.name(),
                    "error",
                    "",
                    &format!("failed: {first_line}"),
                )
                .n(size),
            );
            failures.push(message);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Failed(failures))
    }
}

/// A drain in progress: its timing and its still-running workers.
struct Drained {
    secs: f64,
    workers: Vec<Service>,
    before: Snapshot,
    activity: Activity,
}

/// Counters read before the workers start.
struct Snapshot {
    commits: i64,
    wal: i64,
    busy_ms: f64,
    total_ms: f64,
    backends: HashMap<u32, f64>,
}

/// What a drain cost, in all.
struct Costs {
    /// Samples of `pg_stat_activity`, and what active backends were doing.
    samples: u64,
    states: Vec<(String, u64)>,
    commits: f64,
    wal_bytes: f64,
    worker_cpu_ms: f64,
    postgres_cpu_ms: f64,
    busy_pct: f64,
}

/// Samples, every [`SAMPLE`], what the bench database's active backends (other than
/// the bench's own) are doing: their wait event, or running, and the statement. A
/// poor man's profiler that names the bottleneck in the same run.
struct Activity {
    stop: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<(u64, HashMap<String, u64>)>,
}

/// How often [`Activity`] samples `pg_stat_activity`.
const SAMPLE: Duration = Duration::from_millis(50);

impl Activity {
    fn start(pool: sqlx::PgPool) -> Activity {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let mut ticks = 0u64;
            let mut counts: HashMap<String, u64> = HashMap::new();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(SAMPLE) => {}
                }
                let rows: Vec<String> = match sqlx::query_scalar(
                    "select coalesce(wait_event_type || ':' || wait_event, 'running')
                            || ' · ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
                       from pg_stat_activity
                      where datname = current_database() and state = 'active'
                        and application_name <> 'cairn-bench' and pid <> pg_backend_pid()",
                )
                .fetch_all(&pool)
                .await
                {
                    Ok(rows) => rows,
                    Err(_) => continue,
                };
                ticks += 1;
                for row in rows {
                    *counts.entry(row).or_default() += 1;
                }
            }
            (ticks, counts)
        });
        Activity { stop, handle }
    }

    /// Stops sampling: (samples taken, states by how often they were seen, most first).
    async fn finish(self) -> (u64, Vec<(String, u64)>) {
        self.stop.cancel();
        let (ticks, counts) = self.handle.await.unwrap_or_default();
        let mut states: Vec<(String, u64)> = counts.into_iter().collect();
        states.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (ticks, states)
    }
}

/// How [`Bench::http_load`] submits.
#[derive(Debug, Clone, Copy)]
enum HttpSubmit {
    /// `POST /api/tasks`, a run a request.
    One,
    /// `POST /api/tasks/batch`, this many runs a request.
    Batch(u64),
}

/// The drain scenario's second drain: a small deployment's one worker at concurrency 10.
const SMALL_SHAPE: (u32, usize) = (1, 10);
/// That drain takes this share of the scenario's runs (`n / SMALL_SHARE`).
const SMALL_SHARE: u64 = 5;

/// Runs a `POST /api/tasks/batch` request carries in `submit_http`.
const BATCH_SIZE: u64 = 500;

/// Runs a seeding request carries: the most a batch takes.
const SEED_BATCH: u64 = cairn_core::engine::submit::BATCH_MAX as u64;
/// `submit_http` submits this many times more runs through the batch endpoint than one
/// at a time, so that every connection sends several batches.
const BATCH_RUNS_FACTOR: u64 = 10;

/// What an HTTP submit load measured.
struct HttpLoad {
    secs: f64,
    /// The API's peak RSS.
    api_kib: u64,
    samples: u64,
    states: Vec<(String, u64)>,
    /// CPU (ms) of the API process, of the Postgres backends serving the bench
    /// database, and of this process (the HTTP clients) over the load; the machine's
    /// busy share (%).
    api_cpu_ms: f64,
    postgres_cpu_ms: f64,
    client_cpu_ms: f64,
    busy_pct: f64,
}

struct Bench<'a> {
    db: &'a BenchDb,
    s: &'a Settings,
    defs: &'a Defs,
    floor: Option<f64>,
    /// The keep-history floor measured with `floor` (jobs/s).
    history_floor: Option<f64>,
    out: &'a mut Output,
}

impl Bench<'_> {
    /// Measures both floors and reports them: the raw-SQL floor (claim and delete) and
    /// the keep-history floor (claim, mark done, keep the row); for the chain scenario
    /// the keep-history floor is a chain floor of as many steps as its runs have.
    async fn measure_floors(&mut self, scenario: Scenario, first: bool) -> Result<()> {
        const FLOOR: &str = "plain table; delete … where id in (select … order by id limit 100 for update skip locked), 2 connections";
        const HISTORY: &str = "plain table; claim 100 (update … set status = 'running' … for update skip locked), then mark them done in a second statement, rows kept; 2 connections";
        let rows = self.s.floor_rows;
        tracing::info!(rows, "measuring the floors");
        let floor = self.db.floor(rows).await?;
        self.floor = Some(floor);
        let note = match first {
            true => format!("{FLOOR}; this scenario's ratios divide by this"),
            false => {
                "the raw-SQL floor again, just before this scenario; its ratios divide by this"
                    .to_owned()
            }
        };
        self.out.emit(
            Figure::new(
                scenario.name(),
                "floor_rows_per_s",
                round(floor, 0),
                "rows/s",
            )
            .n(rows)
            .note(note),
        );
        let (history, what) = match scenario {
            Scenario::Chain => (
                self.db
                    .history_floor(rows / CHAIN_STEPS, Some(CHAIN_STEPS as u32))
                    .await?,
                format!(
                    "{HISTORY}; chains of {CHAIN_STEPS}: marking a step done queues the next in the same statement"
                ),
            ),
            _ => (self.db.history_floor(rows, None).await?, HISTORY.to_owned()),
        };
        self.history_floor = Some(history);
        self.out.emit(
            Figure::new(
                scenario.name(),
                "keep_history_floor_per_s",
                round(history, 0),
                "jobs/s",
            )
            .ratio(Some(floor))
            .n(rows)
            .note(format!("{what}; the × keep-history column divides by this")),
        );
        Ok(())
    }

    fn workers_note(&self, concurrency: usize) -> String {
        let pool = self
            .s
            .db_pool
            .map(|p| format!(", db pool {p}"))
            .unwrap_or_default();
        let step = match self.s.step {
            BenchStep::Pass => "pass",
            BenchStep::Sql => "sql",
        };
        format!(
            "{} workers × concurrency {concurrency}{pool}; {step} steps",
            self.s.workers
        )
    }

    fn start_workers(&self, concurrency: usize) -> Result<Vec<Service>> {
        self.start_n_workers(self.s.workers, concurrency)
    }

    fn start_n_workers(&self, workers: u32, concurrency: usize) -> Result<Vec<Service>> {
        (0..workers)
            .map(|i| Service::worker(self.s, &self.db.url, concurrency, i))
            .collect()
    }

    /// Waits until every worker listens for new jobs: each holds one session whose
    /// last statement is its `LISTEN` (the API's sessions listen on other channels).
    async fn wait_registered(&self, workers: &mut [Service]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for w in workers.iter_mut() {
                w.check_alive()?;
            }
            let ready: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                  where datname = current_database() and application_name = 'cairn'
                    and query ilike 'listen%apalis::job::insert%'",
            )
            .fetch_one(&self.db.pool)
            .await?;
            if ready as usize >= workers.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Process(format!(
                    "{ready} of {} workers listening for jobs after 60 s",
                    workers.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` runs finished, failing if the workers die or nothing finishes
    /// for [`STALL`].
    async fn wait_finished(
        &self,
        scenario: &'static str,
        n: u64,
        workers: &mut [Service],
    ) -> Result<()> {
        let mut last = -1i64;
        let mut last_change = Instant::now();
        let mut last_log = Instant::now();
        loop {
            for w in workers.iter_mut() {
                w.check_alive()?;
            }
            let finished = self.db.finished().await?;
            if finished as u64 >= n {
                return Ok(());
            }
            if finished != last {
                last = finished;
                last_change = Instant::now();
            } else if last_change.elapsed() > STALL {
                return Err(BenchError::Stalled {
                    scenario,
                    what: format!("{finished} of {n} runs finished, none in {STALL:?}"),
                });
            }
            if last_log.elapsed() > Duration::from_secs(10) {
                tracing::info!(scenario, finished, of = n, "progress");
                last_log = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Seeds `n` queued runs, starts the workers and waits for the first `until` runs
    /// to finish. Returns the seconds from the first start to the `until`th finish
    /// (database clock), with the still-running workers.
    async fn drain_runs(
        &self,
        scenario: &'static str,
        def: &Definition,
        n: u64,
        until: u64,
        concurrency: usize,
    ) -> Result<Drained> {
        self.drain_runs_on(scenario, def, n, until, (self.s.workers, concurrency))
            .await
    }

    /// [`Self::drain_runs`] with `shape.0` workers at concurrency `shape.1`.
    async fn drain_runs_on(
        &self,
        scenario: &'static str,
        def: &Definition,
        n: u64,
        until: u64,
        shape: (u32, usize),
    ) -> Result<Drained> {
        self.seed(def, n).await?;
        let before = self.snapshot().await?;
        let activity = Activity::start(self.db.pool.clone());
        let mut workers = self.start_n_workers(shape.0, shape.1)?;
        self.wait_finished(scenario, until, &mut workers).await?;
        let secs = self
            .db
            .window(until)
            .await?
            .ok_or_else(|| BenchError::Stalled {
                scenario,
                what: "no timing: runs finished without start times".into(),
            })?;
        Ok(Drained {
            secs: secs.max(1e-6),
            workers,
            before,
            activity,
        })
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let (commits, wal) = self.db.counters().await?;
        let (busy_ms, total_ms) = procs::machine_cpu_ms()?;
        Ok(Snapshot {
            commits,
            wal,
            busy_ms,
            total_ms,
            backends: procs::backend_cpu_ms(&self.db.name),
        })
    }

    /// Stops a drain's workers and measures what it cost: commits and WAL, the
    /// workers' and their Postgres backends' CPU, the machine's load.
    async fn stop_drained(&self, d: Drained) -> Result<Costs> {
        let (samples, states) = d.activity.finish().await;
        let (busy_ms, total_ms) = procs::machine_cpu_ms()?;
        let mut worker_cpu_ms = 0.0;
        for w in &d.workers {
            worker_cpu_ms += w.cpu_ms()?;
        }
        let backends = procs::backend_cpu_ms(&self.db.name);
        let postgres_cpu_ms: f64 = backends
            .iter()
            .map(|(pid, ms)| ms - d.before.backends.get(pid).copied().unwrap_or(0.0))
            .sum();
        procs::stop_all(d.workers, GRACE).await;
        // Exiting backends flush their statistics; give the last ones a moment.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (commits, wal) = self.db.counters().await?;
        Ok(Costs {
            samples,
            states,
            commits: (commits - d.before.commits) as f64,
            wal_bytes: (wal - d.before.wal) as f64,
            worker_cpu_ms,
            postgres_cpu_ms,
            busy_pct: 100.0 * (busy_ms - d.before.busy_ms)
                / (total_ms - d.before.total_ms).max(1.0),
        })
    }

    /// Reports `costs` per run (`units` runs) or per step.
    fn emit_costs(&mut self, scenario: &'static str, costs: &Costs, units: u64, per_step: bool) {
        let u = units.max(1) as f64;
        let names: [&'static str; 4] = if per_step {
            [
                "db_commits_per_step",
                "wal_bytes_per_step",
                "worker_cpu_ms_per_step",
                "postgres_cpu_ms_per_step",
            ]
        } else {
            [
                "db_commits_per_run",
                "wal_bytes_per_run",
                "worker_cpu_ms_per_run",
                "postgres_cpu_ms_per_run",
            ]
        };
        let per = if per_step { "step" } else { "run" };
        let figures = [
            (
                names[0],
                costs.commits / u,
                "commits",
                "xact_commit of the bench database (workers' transactions, apalis' included)",
                1,
            ),
            (
                names[1],
                costs.wal_bytes / u,
                "bytes",
                "WAL written by the whole cluster during the drain",
                0,
            ),
            (
                names[2],
                costs.worker_cpu_ms / u,
                "ms",
                "user + system CPU of the worker processes",
                3,
            ),
            (
                names[3],
                costs.postgres_cpu_ms / u,
                "ms",
                "user + system CPU of the Postgres backends serving the bench database",
                3,
            ),
        ];
        for (figure, value, unit, what, places) in figures {
            self.out.emit(
                Figure::new(scenario, figure, round(value, places), unit)
                    .n(units)
                    .note(format!("per {per}: {what}")),
            );
        }
        self.out.emit(
            Figure::new(
                scenario,
                "machine_cpu_busy_pct",
                round(costs.busy_pct, 1),
                "%",
            )
            .note("both cores, all processes, from the workers' start to the last run's end"),
        );
        self.emit_activity(scenario, costs.samples, &costs.states);
    }

    /// Reports where an HTTP load's CPU went, per run: the API process, the Postgres
    /// backends, the bench's own HTTP clients (all on this machine); and how busy the
    /// machine was. `batch` names the batch load's figures apart from the single one's.
    fn emit_http_costs(&mut self, batch: bool, load: &HttpLoad, runs: u64) {
        let u = runs.max(1) as f64;
        let names: [&'static str; 4] = if batch {
            [
                "batch_api_cpu_us_per_run",
                "batch_postgres_cpu_us_per_run",
                "batch_client_cpu_us_per_run",
                "batch_machine_cpu_busy_pct",
            ]
        } else {
            [
                "api_cpu_us_per_run",
                "postgres_cpu_us_per_run",
                "client_cpu_us_per_run",
                "machine_cpu_busy_pct",
            ]
        };
        let figures = [
            (
                names[0],
                load.api_cpu_ms,
                "user + system CPU of the cairn api process",
            ),
            (
                names[1],
                load.postgres_cpu_ms,
                "user + system CPU of the Postgres backends serving the bench database",
            ),
            (
                names[2],
                load.client_cpu_ms,
                "user + system CPU of the bench process: the HTTP clients sending the load",
            ),
        ];
        for (figure, ms, what) in figures {
            self.out.emit(
                Figure::new("submit_http", figure, round(1000.0 * ms / u, 1), "µs")
                    .n(runs)
                    .note(format!("per run: {what}")),
            );
        }
        self.out.emit(
            Figure::new("submit_http", names[3], round(load.busy_pct, 1), "%")
                .note("both cores, all processes, over the load"),
        );
    }

    /// Reports how busy the database was and the three most common states of its
    /// active backends.
    fn emit_activity(&mut self, scenario: &'static str, samples: u64, states: &[(String, u64)]) {
        if samples == 0 {
            return;
        }
        let seen: u64 = states.iter().map(|(_, n)| n).sum();
        self.out.emit(
            Figure::new(
                scenario,
                "active_backends_avg",
                round(seen as f64 / samples as f64, 1),
                "backends",
            )
            .note(format!(
                "pg_stat_activity every {} ms ({samples} samples)",
                SAMPLE.as_millis(),
            )),
        );
        let top = ["activity_1_pct", "activity_2_pct", "activity_3_pct"];
        for (figure, (state, n)) in top.into_iter().zip(states) {
            self.out.emit(
                Figure::new(
                    scenario,
                    figure,
                    round(100.0 * *n as f64 / seen.max(1) as f64, 1),
                    "%",
                )
                .note(format!("of active backend samples: {state}")),
            );
        }
    }

    fn verified(&mut self, scenario: &'static str, runs: u64) {
        self.out.emit(
            Figure::new(scenario, "verified_runs", runs as f64, "runs").note(
                "succeeded, every step checkpointed exactly once, no row without its run or step",
            ),
        );
    }

    async fn drain(&mut self, n: u64) -> Result<()> {
        let c = self.s.concurrency;
        let d = self.drain_runs("drain", &self.defs.noop, n, n, c).await?;
        let secs = d.secs;
        let costs = self.stop_drained(d).await?;
        self.db.verify_all("drain", n, 1).await?;
        self.out.emit(
            Figure::new("drain", "runs_per_s", round(n as f64 / secs, 1), "runs/s")
                .ratio(self.floor)
                .history_ratio(self.history_floor)
                .target("≥ 0.5× floor")
                .n(n)
                .note(self.workers_note(c)),
        );
        self.emit_costs("drain", &costs, n, false);
        self.verified("drain", n);

        // A small deployment: one worker at concurrency 10, on emptied tables.
        self.db.reset().await?;
        let m = (n / SMALL_SHARE).max(1);
        let (workers, c) = SMALL_SHAPE;
        let d = self
            .drain_runs_on("drain", &self.defs.noop, m, m, SMALL_SHAPE)
            .await?;
        let secs = d.secs;
        self.stop_drained(d).await?;
        self.db.verify_all("drain", m, 1).await?;
        self.out.emit(
            Figure::new(
                "drain",
                "one_worker_runs_per_s",
                round(m as f64 / secs, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .target("≥ 0.2× keep-history floor")
            .n(m)
            .note(format!(
                "{workers} worker × concurrency {c}, as a small deployment runs; the same runs, emptied tables"
            )),
        );
        Ok(())
    }

    async fn chain(&mut self, n: u64) -> Result<()> {
        let c = self.s.concurrency;
        let d = self.drain_runs("chain", &self.defs.chain, n, n, c).await?;
        let secs = d.secs;
        let costs = self.stop_drained(d).await?;
        self.db.verify_all("chain", n, CHAIN_STEPS).await?;
        let steps = n * CHAIN_STEPS;
        self.out.emit(
            Figure::new(
                "chain",
                "steps_per_s",
                round(steps as f64 / secs, 1),
                "steps/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .target("≥ 10,000 steps/s")
            .n(n)
            .note(format!(
                "{CHAIN_STEPS} steps a run; {}",
                self.workers_note(c)
            )),
        );
        self.emit_costs("chain", &costs, steps, true);
        self.verified("chain", n);
        Ok(())
    }

    async fn fanout(&mut self, n: u64) -> Result<()> {
        let c = self.s.concurrency;
        let d = self
            .drain_runs("fanout", &self.defs.fanout, n, n, c)
            .await?;
        let secs = d.secs;
        let costs = self.stop_drained(d).await?;
        let per_run = FAN_WIDTH + 2;
        self.db.verify_all("fanout", n, per_run).await?;
        self.out.emit(
            Figure::new(
                "fanout",
                "steps_per_s",
                round((n * per_run) as f64 / secs, 1),
                "steps/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .n(n)
            .note(format!(
                "1 → {FAN_WIDTH} → 1 steps a run; {}",
                self.workers_note(c)
            )),
        );
        self.emit_costs("fanout", &costs, n * per_run, true);
        self.verified("fanout", n);
        Ok(())
    }

    async fn pickup(&mut self, n: u64) -> Result<()> {
        let c = self.s.concurrency;
        let offset = self.db.clock_offset().await?;
        // How soon a worker works after its process starts: one run queued, then the
        // workers started; from the spawn to that run's first attempt.
        self.seed(&self.defs.noop, 1).await?;
        let spawned = chrono::Utc::now() + offset;
        let mut workers = self.start_workers(c)?;
        self.wait_finished("pickup", 1, &mut workers).await?;
        procs::stop_all(workers, GRACE).await;
        let ready_ms = self.db.first_attempt_ms_after(spawned).await?;
        self.out.emit(
            Figure::new("pickup", "worker_ready_ms", round(ready_ms, 1), "ms")
                .target("≤ 300 ms")
                .note(format!(
                    "the workers' processes spawned → the first attempt of a run queued before them; {}",
                    self.workers_note(c)
                )),
        );
        self.db.reset().await?;

        let mut workers = self.start_workers(c)?;
        self.wait_registered(&mut workers).await?;
        let mut tick = tokio::time::interval(PICKUP_GAP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut answered = Vec::with_capacity(n as usize);
        for _ in 0..n {
            tick.tick().await;
            let input = json!({});
            let one = [cairn_core::engine::submit::Item::input(&input)];
            let mut tx = self.db.pool.begin().await?;
            let submitted = cairn_core::engine::submit_in(
                &mut tx,
                cairn_core::engine::Submission::of(&self.defs.noop, &one),
            )
            .await?;
            tx.commit().await?;
            match submitted.ok().and_then(|mut runs| runs.pop()) {
                Some(run) if run.outcome == cairn_core::engine::submit::Outcome::Created => {
                    answered.push((run.run_id, chrono::Utc::now() + offset));
                }
                _ => {
                    return Err(BenchError::Incorrect {
                        scenario: "pickup",
                        what: "a submission was not created".into(),
                    });
                }
            }
        }
        self.wait_finished("pickup", n, &mut workers).await?;
        procs::stop_all(workers, GRACE).await;
        self.db.verify_all("pickup", n, 1).await?;
        let quantiles = [0.5, 0.95, 0.99];
        let from_answer = self.db.pickup_answered_ms(&answered, &quantiles).await?;
        let from_created = self.db.pickup_ms(&quantiles).await?;
        let idle = format!(
            "idle {}; one submit every {} ms",
            self.workers_note(c),
            PICKUP_GAP.as_millis()
        );
        let note = format!(
            "submit answered (its commit returned) → first attempt's start; clocks {} µs apart; {idle}",
            offset.num_microseconds().unwrap_or_default()
        );
        let created_note = format!(
            "the submit transaction's start (runs.created_at) → first attempt's start, DB clock; {idle}"
        );
        let figures = [
            ("p50_ms", Some("≤ 2 ms"), &from_answer, 0, &note),
            ("p95_ms", None, &from_answer, 1, &note),
            ("p99_ms", Some("≤ 10 ms"), &from_answer, 2, &note),
            ("created_p50_ms", None, &from_created, 0, &created_note),
            ("created_p99_ms", None, &from_created, 2, &created_note),
        ];
        for (figure, target, values, i, note) in figures {
            let value = values
                .get(i)
                .copied()
                .ok_or_else(|| BenchError::Incorrect {
                    scenario: "pickup",
                    what: "no pickup times".into(),
                })?;
            let mut f = Figure::new("pickup", figure, round(value, 2), "ms")
                .n(n)
                .note(note.clone());
            if let Some(t) = target {
                f = f.target(t);
            }
            self.out.emit(f);
        }
        let (to_lease, to_step) = self.db.pickup_parts_ms().await?;
        self.out.emit(
            Figure::new("pickup", "p50_submit_to_lease_ms", round(to_lease, 2), "ms")
                .n(n)
                .note("runs.created_at → runs.started_at: queue wait, apalis fetch and dispatch, the lease transaction"),
        );
        self.out.emit(
            Figure::new("pickup", "p50_lease_to_step_ms", round(to_step, 2), "ms")
                .n(n)
                .note("runs.started_at → the first attempt's start: loading the run, the step's start transaction"),
        );
        self.verified("pickup", n);
        Ok(())
    }

    /// A `cairn api` started for a scenario and answering, with a new token of `role`
    /// and a client keeping up to `connections` connections to it: (the process, its
    /// base URL, the token, the client).
    async fn start_api(
        &self,
        role: &str,
        connections: usize,
    ) -> Result<(Service, String, String, reqwest::Client)> {
        let token = Service::create_token(self.s, &self.db.url, role)?;
        let listen = format!("127.0.0.1:{}", procs::free_port()?);
        let mut api = Service::api(self.s, &self.db.url, &listen)?;
        let base = format!("http://{listen}");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(120))
            .build()?;
        wait_ready(&client, &base, &mut api).await?;
        Ok((api, base, token, client))
    }

    /// Queues `n` runs of `def` as users do: `POST /api/tasks/batch` to a `cairn api`
    /// process started for it, [`SEED_BATCH`] runs a request over two connections;
    /// then leaves the tables' statistics as `--stats` says. (The history's finished
    /// runs are written in SQL instead: no public path makes a million finished runs in
    /// seconds.)
    async fn seed(&self, def: &Definition, n: u64) -> Result<()> {
        let started = Instant::now();
        let (api, base, token, client) = self.start_api("operator", 2).await?;
        let posts = Posts {
            client: &client,
            base: &base,
            token: &token,
            connections: 2,
        };
        let submitted = posts
            .submit("seed", &def.workflow.name, n, HttpSubmit::Batch(SEED_BATCH))
            .await;
        api.stop(GRACE).await;
        submitted?;
        self.db.settle(self.s.stats).await?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(runs = n, secs, per_s = n as f64 / secs.max(1e-9), "seeded");
        Ok(())
    }

    /// `n` runs submitted over HTTP to a `cairn api` process (no workers running), one
    /// per request or `per_request` a request through `POST /api/tasks/batch`.
    /// Returns seconds and the API's peak RSS (KiB); verifies every run was queued
    /// with its job.
    async fn http_load(&self, scenario: &'static str, n: u64, how: HttpSubmit) -> Result<HttpLoad> {
        self.http_load_over(scenario, n, how, self.s.connections as usize)
            .await
    }

    /// [`Self::http_load`] over `connections` connections.
    async fn http_load_over(
        &self,
        scenario: &'static str,
        n: u64,
        how: HttpSubmit,
        connections: usize,
    ) -> Result<HttpLoad> {
        let (mut api, base, token, client) = self.start_api("operator", connections).await?;

        let activity = Activity::start(self.db.pool.clone());
        let before = self.snapshot().await?;
        let (api_before, client_before) = (api.cpu_ms()?, procs::own_cpu_ms()?);
        let started = Instant::now();
        let workflow = self.defs.noop.workflow.name.as_str();
        let posts = Posts {
            client: &client,
            base: &base,
            token: &token,
            connections,
        };
        posts.submit(scenario, workflow, n, how).await?;
        let secs = started.elapsed().as_secs_f64();
        let (busy_ms, total_ms) = procs::machine_cpu_ms()?;
        let (api_cpu_ms, client_cpu_ms) = (
            api.cpu_ms()? - api_before,
            procs::own_cpu_ms()? - client_before,
        );
        let postgres_cpu_ms: f64 = procs::backend_cpu_ms(&self.db.name)
            .iter()
            .map(|(pid, ms)| ms - before.backends.get(pid).copied().unwrap_or(0.0))
            .sum();
        let (samples, states) = activity.finish().await;
        let rss = api.peak_rss_kib()?;
        api.check_alive()?;
        api.stop(GRACE).await;

        let (queued_runs, runs, pending_jobs) = self.db.queued().await?;
        if queued_runs != n as i64 || runs != n as i64 || pending_jobs != n as i64 {
            return Err(BenchError::Incorrect {
                scenario,
                what: format!(
                    "{n} submitted runs left {runs} runs, {queued_runs} queued, {pending_jobs} pending jobs"
                ),
            });
        }
        Ok(HttpLoad {
            secs,
            api_kib: rss,
            samples,
            states,
            api_cpu_ms,
            postgres_cpu_ms,
            client_cpu_ms,
            busy_pct: 100.0 * (busy_ms - before.busy_ms) / (total_ms - before.total_ms).max(1.0),
        })
    }

    async fn submit_http(&mut self, n: u64) -> Result<()> {
        let load = self.http_load("submit_http", n, HttpSubmit::One).await?;
        let secs = load.secs;
        let note = format!(
            "POST /api/tasks, {} keep-alive connections, one cairn api process, no workers",
            self.s.connections
        );
        self.out.emit(
            Figure::new(
                "submit_http",
                "runs_per_s",
                round(n as f64 / secs, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .target("≥ 10,000 runs/s")
            .n(n)
            .note(note),
        );
        self.emit_http_costs(false, &load, n);
        self.emit_activity("submit_http", load.samples, &load.states);
        self.out.emit(
            Figure::new("submit_http", "verified_runs", n as f64, "runs")
                .note("every request answered 201; each run queued with its job"),
        );

        // The batch endpoint, on emptied tables and a fresh API process.
        self.db.reset().await?;
        let batch_runs = n * BATCH_RUNS_FACTOR;
        let load = self
            .http_load("submit_http", batch_runs, HttpSubmit::Batch(BATCH_SIZE))
            .await?;
        self.out.emit(
            Figure::new(
                "submit_http",
                "batch_runs_per_s",
                round(batch_runs as f64 / load.secs, 1),
                "runs/s",
            )
            .ratio(self.floor)
                .history_ratio(self.history_floor)
            .target("≥ 50,000 runs/s")
            .n(batch_runs)
            .note(format!(
                "POST /api/tasks/batch, {BATCH_SIZE} runs a request, {} keep-alive connections, one cairn api process, no workers",
                self.s.connections
            )),
        );
        self.emit_http_costs(true, &load, batch_runs);
        self.out.emit(
            Figure::new(
                "submit_http",
                "batch_verified_runs",
                batch_runs as f64,
                "runs",
            )
            .note("every batch answered 201 with every task created; each run queued with its job"),
        );

        // One client sending the largest batches one after another, on emptied tables
        // and a fresh API process: what one importing script gets.
        self.db.reset().await?;
        let load = self
            .http_load_over("submit_http", batch_runs, HttpSubmit::Batch(SEED_BATCH), 1)
            .await?;
        self.out.emit(
            Figure::new(
                "submit_http",
                "batch_one_connection_runs_per_s",
                round(batch_runs as f64 / load.secs, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .target("≥ 40,000 runs/s")
            .n(batch_runs)
            .note(format!(
                "POST /api/tasks/batch, {} runs a request, one connection, one cairn api process, no workers; every run verified queued with its job",
                crate::report::thousands(SEED_BATCH)
            )),
        );
        Ok(())
    }

    async fn backlog(&mut self, backlog: u64) -> Result<()> {
        let m = (backlog / 10).clamp(100, 50_000).min(backlog);
        let c = self.s.concurrency;

        // The same drain of m runs, first with nothing else queued…
        let d = self.drain_runs("backlog", &self.defs.noop, m, m, c).await?;
        let empty_secs = d.secs;
        d.activity.finish().await;
        procs::stop_all(d.workers, GRACE).await;
        self.db.verify_all("backlog", m, 1).await?;
        let empty = m as f64 / empty_secs;

        // …then as the first m of a large backlog.
        self.db.reset().await?;
        self.seed(&self.defs.noop, backlog).await?;
        let (cold_ms, page_ms) = self.list_first_page(backlog).await?;
        let mut workers = self.start_workers(c)?;
        self.wait_finished("backlog", m, &mut workers).await?;
        let secs = self
            .db
            .window(m)
            .await?
            .ok_or_else(|| BenchError::Stalled {
                scenario: "backlog",
                what: "no timing".into(),
            })?;
        procs::stop_all(workers, GRACE).await;
        let verified = self.db.verify_finished("backlog", m, 1).await?;
        let full = m as f64 / secs.max(1e-6);

        let workers_note = self.workers_note(c);
        let note = |what: &str| format!("{what}; {workers_note}");
        self.out.emit(
            Figure::new(
                "backlog",
                "drain_empty_runs_per_s",
                round(empty, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .n(m)
            .note(note(&format!("{m} runs, nothing else queued"))),
        );
        self.out.emit(
            Figure::new(
                "backlog",
                "drain_backlog_runs_per_s",
                round(full, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .n(m)
            .note(note(&format!("the first {m} runs of {backlog} queued"))),
        );
        self.out.emit(
            Figure::new("backlog", "backlog_vs_empty", round(full / empty, 3), "×")
                .target("≥ 0.8")
                .n(backlog),
        );
        self.out.emit(
            Figure::new("backlog", "list_first_page_ms", round(page_ms, 2), "ms")
                .target("≤ 50 ms")
                .n(backlog)
                .note(format!(
                    "GET /api/tasks (50 items), median of 20 warm requests, {backlog} runs queued"
                )),
        );
        self.out.emit(
            Figure::new(
                "backlog",
                "list_first_page_cold_ms",
                round(cold_ms, 2),
                "ms",
            )
            .n(backlog)
            .note("the API's first GET /api/tasks after start"),
        );
        self.verified("backlog", verified + m);
        Ok(())
    }

    /// The same drain of `n` one-step runs over empty tables, then over a history of
    /// `--history` finished runs in every table: how a deployment that keeps its runs
    /// slows down. Then the run list's first page over it all.
    async fn history(&mut self, n: u64) -> Result<()> {
        let c = self.s.concurrency;
        let d = self.drain_runs("history", &self.defs.noop, n, n, c).await?;
        let empty = n as f64 / d.secs;
        d.activity.finish().await;
        procs::stop_all(d.workers, GRACE).await;
        self.db.verify_all("history", n, 1).await?;

        self.db.reset().await?;
        let h = self.s.history;
        let seeding = Instant::now();
        self.db
            .seed_history(&self.defs.noop, h, self.s.stats)
            .await?;
        let seed_secs = seeding.elapsed().as_secs_f64();
        let d = self.drain_runs("history", &self.defs.noop, n, n, c).await?;
        let full = n as f64 / d.secs;
        d.activity.finish().await;
        procs::stop_all(d.workers, GRACE).await;
        self.db.verify_all("history", h + n, 1).await?;
        let (cold_ms, page_ms) = self.list_first_page(h + n).await?;

        let workers_note = self.workers_note(c);
        self.out.emit(
            Figure::new(
                "history",
                "drain_empty_runs_per_s",
                round(empty, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .n(n)
            .note(format!("{n} runs over empty tables; {workers_note}")),
        );
        self.out.emit(
            Figure::new("history", "drain_history_runs_per_s", round(full, 1), "runs/s")
                .ratio(self.floor)
                .history_ratio(self.history_floor)
                .n(n)
                .note(format!(
                    "{n} runs over {h} finished ones (runs, steps, attempts, 5 events each; seeded in {seed_secs:.0} s); {workers_note}"
                )),
        );
        self.out.emit(
            Figure::new("history", "history_vs_empty", round(full / empty, 3), "×")
                .target("≥ 0.8")
                .n(h),
        );
        self.out.emit(
            Figure::new("history", "list_first_page_ms", round(page_ms, 2), "ms")
                .target("≤ 50 ms")
                .n(h + n)
                .note("GET /api/tasks (50 items), median of 20 warm requests"),
        );
        self.out.emit(
            Figure::new(
                "history",
                "list_first_page_cold_ms",
                round(cold_ms, 2),
                "ms",
            )
            .n(h + n)
            .note("the API's first GET /api/tasks after start"),
        );
        self.verified("history", n * 2);
        Ok(())
    }

    /// The same drain of `n` one-step runs over `--reap` finished runs that are past
    /// their retention window: first with no reaper, then while `cairn scheduler`'s
    /// reaper deletes them (its first pass starts with the workers). How much a
    /// deployment's retention slows its workers, and how fast it deletes.
    async fn retention(&mut self, n: u64) -> Result<()> {
        const SCENARIO: &str = "retention";
        let c = self.s.concurrency;
        let h = self.s.reap;

        // No reaper: the finished runs lie there.
        self.db
            .seed_history(&self.defs.noop, h, self.s.stats)
            .await?;
        let d = self.drain_runs(SCENARIO, &self.defs.noop, n, n, c).await?;
        let without = n as f64 / d.secs;
        d.activity.finish().await;
        procs::stop_all(d.workers, GRACE).await;
        self.db.verify_all(SCENARIO, h + n, 1).await?;

        // The reaper deletes them while the workers drain.
        self.db.reset().await?;
        self.db
            .seed_history(&self.defs.noop, h, self.s.stats)
            .await?;
        self.seed(&self.defs.noop, n).await?;
        let mut all = vec![Service::reaper(self.s, &self.db.url)?];
        all.extend(self.start_workers(c)?);
        self.wait_finished(SCENARIO, n, &mut all).await?;
        let (drain_start, drain_end) =
            self.db
                .drain_bounds(n)
                .await?
                .ok_or_else(|| BenchError::Stalled {
                    scenario: SCENARIO,
                    what: "no timing: runs finished without start times".into(),
                })?;
        let left_at_drain_end = self.db.history_left().await?;
        let scheduler = all.remove(0);
        procs::stop_all(all, GRACE).await;
        let secs =
            ((drain_end - drain_start).num_microseconds().unwrap_or(0) as f64 / 1e6).max(1e-6);
        let with = n as f64 / secs;

        // The reaper's pass, once it has deleted everything: waited for as long as it
        // keeps deleting (it rests between batches, so a large pass takes minutes).
        let mut scheduler = vec![scheduler];
        let mut progressed = Instant::now();
        let mut left_before = left_at_drain_end;
        let (reaped, rows, pass_start, pass_end) = loop {
            scheduler[0].check_alive()?;
            if let Some(pass) = self.db.reaper_pass().await? {
                break pass;
            }
            // Counting what is left reads the table, so only every few seconds.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let left = self.db.history_left().await?;
            if left < left_before {
                left_before = left;
                progressed = Instant::now();
            } else if progressed.elapsed() > STALL {
                return Err(BenchError::Stalled {
                    scenario: SCENARIO,
                    what: format!(
                        "the reaper recorded no complete pass and deleted nothing in {STALL:?}; \
                         {left} of {h} finished runs left"
                    ),
                });
            }
        };
        procs::stop_all(scheduler, GRACE).await;
        // Every finished run gone with all its rows; the drained runs whole.
        self.db.verify_all(SCENARIO, n, 1).await?;
        if reaped as u64 != h {
            return Err(BenchError::Incorrect {
                scenario: SCENARIO,
                what: format!("the reaper deleted {reaped} runs, expected {h}"),
            });
        }
        let pass_secs = ((pass_end - pass_start).num_milliseconds() as f64 / 1e3).max(1e-3);
        let overlap = (drain_end.min(pass_end) - drain_start.max(pass_start))
            .num_milliseconds()
            .max(0) as f64
            / 1e3;

        let workers_note = self.workers_note(c);
        self.out.emit(
            Figure::new(
                SCENARIO,
                "drain_kept_runs_per_s",
                round(without, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .n(n)
            .note(format!(
                "{n} runs over {h} finished ones past their window, no reaper; {workers_note}"
            )),
        );
        self.out.emit(
            Figure::new(SCENARIO, "drain_reaping_runs_per_s", round(with, 1), "runs/s")
                .ratio(self.floor)
                .history_ratio(self.history_floor)
                .n(n)
                .note(format!(
                    "the same drain while `cairn scheduler`'s reaper deletes the {h} (batches of 1,000); {workers_note}"
                )),
        );
        self.out.emit(
            Figure::new(SCENARIO, "reaping_vs_kept", round(with / without, 3), "×")
                .target("≥ 0.8")
                .n(h),
        );
        self.out.emit(
            Figure::new(
                SCENARIO,
                "reaper_runs_per_s",
                round(reaped as f64 / pass_secs, 1),
                "runs/s",
            )
            .n(h)
            .note(format!(
                "{reaped} runs ({rows} rows) deleted in one pass of {pass_secs:.1} s"
            )),
        );
        self.out.emit(
            Figure::new(
                SCENARIO,
                "reaped_during_drain",
                (h as i64 - left_at_drain_end).max(0) as f64,
                "runs",
            )
            .n(h)
            .note(format!(
                "finished runs the reaper had deleted when the drain's last run finished; the pass overlapped {:.0} % of the drain's {secs:.1} s",
                100.0 * overlap / secs
            )),
        );
        self.verified(SCENARIO, n * 2);
        Ok(())
    }

    /// Times `GET /api/tasks` (first page) against a fresh API process: the first
    /// request, then the median of 20. Returns (first, median) in ms.
    async fn list_first_page(&self, runs: u64) -> Result<(f64, f64)> {
        let (api, base, token, client) = self.start_api("viewer", 1).await?;
        let url = format!("{base}/api/tasks");
        let mut times = Vec::with_capacity(21);
        for _ in 0..21 {
            let started = Instant::now();
            let resp = client.get(&url).bearer_auth(&token).send().await?;
            let status = resp.status();
            let page: Value = resp.json().await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            let items = page["items"].as_array().map(Vec::len).unwrap_or(0) as u64;
            if status != reqwest::StatusCode::OK || items != runs.min(50) {
                return Err(BenchError::Incorrect {
                    scenario: "backlog",
                    what: format!("GET /api/tasks answered {status} with {items} items"),
                });
            }
        }
        api.stop(GRACE).await;
        let cold = times[0];
        let mut warm = times.split_off(1);
        warm.sort_by(f64::total_cmp);
        Ok((cold, warm[warm.len() / 2]))
    }

    async fn memory(&mut self, n: u64) -> Result<()> {
        let c = self.s.memory_concurrency;
        let d = self.drain_runs("memory", &self.defs.noop, n, n, c).await?;
        let secs = d.secs;
        let mut worker_kib = 0;
        for w in &d.workers {
            worker_kib = worker_kib.max(w.peak_rss_kib()?);
        }
        d.activity.finish().await;
        procs::stop_all(d.workers, GRACE).await;
        // Exiting backends flush their statistics; give the last ones a moment.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let dead = self.db.dead_tuples().await?;
        let autovacuum = self.db.autovacuum().await?;
        self.db.verify_all("memory", n, 1).await?;

        self.db.reset().await?;
        let api_kib = self.http_load("memory", n, HttpSubmit::One).await?.api_kib;

        self.out.emit(
            Figure::new(
                "memory",
                "drain_runs_per_s",
                round(n as f64 / secs, 1),
                "runs/s",
            )
            .ratio(self.floor)
            .history_ratio(self.history_floor)
            .n(n)
            .note(self.workers_note(c)),
        );
        self.out.emit(
            Figure::new(
                "memory",
                "worker_peak_rss_mib",
                round(worker_kib as f64 / 1024.0, 1),
                "MiB",
            )
            .target("≤ 64 MB")
            .n(n)
            .note(format!(
                "VmHWM of the larger worker, draining at concurrency {c}"
            )),
        );
        self.out.emit(
            Figure::new(
                "memory",
                "api_peak_rss_mib",
                round(api_kib as f64 / 1024.0, 1),
                "MiB",
            )
            .target("≤ 64 MB")
            .n(n)
            .note(format!(
                "VmHWM of cairn api after {n} POST /api/tasks over {} connections",
                self.s.connections
            )),
        );
        for (table, count) in dead {
            let figure = match table.as_str() {
                "runs" => "dead_tuples_runs",
                "steps" => "dead_tuples_steps",
                "step_attempts" => "dead_tuples_step_attempts",
                "run_events" => "dead_tuples_run_events",
                "apalis.jobs" => "dead_tuples_apalis_jobs",
                _ => continue,
            };
            self.out.emit(
                Figure::new("memory", figure, count as f64, "tuples")
                    .n(n)
                    .note(format!(
                        "pg_stat_user_tables.n_dead_tup after the drain; autovacuum = {autovacuum}"
                    )),
            );
        }
        self.verified("memory", n);
        Ok(())
    }
}

/// Submits runs to a `cairn api` over `connections` keep-alive connections, as users
/// do: the bench's load (`submit_http`) and its seeding alike.
struct Posts<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
    connections: usize,
}

impl Posts<'_> {
    /// `n` runs of `workflow`, each created (`201`, every run's outcome `created`), or
    /// an error naming `scenario`.
    async fn submit(
        &self,
        scenario: &'static str,
        workflow: &str,
        n: u64,
        how: HttpSubmit,
    ) -> Result<()> {
        let (url, per_request) = match how {
            HttpSubmit::One => (format!("{}/api/tasks", self.base), 1),
            HttpSubmit::Batch(size) => (format!("{}/api/tasks/batch", self.base), size.max(1)),
        };
        // The bodies, made once: a full request, and the last, shorter one.
        let body = |runs: u64| -> Arc<String> {
            Arc::new(match how {
                HttpSubmit::One => json!({ "workflow": workflow, "input": {} }).to_string(),
                HttpSubmit::Batch(_) => {
                    let tasks = vec![json!({ "input": {} }); runs as usize];
                    json!({ "workflow": workflow, "tasks": tasks }).to_string()
                }
            })
        };
        let (full, last) = (body(per_request), body(n % per_request));
        let next = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..self.connections)
            .map(|_| {
                let (client, url, token, next) = (
                    self.client.clone(),
                    url.clone(),
                    self.token.to_owned(),
                    next.clone(),
                );
                let (full, last) = (full.clone(), last.clone());
                tokio::spawn(async move {
                    loop {
                        let first = next.fetch_add(per_request, Ordering::Relaxed);
                        if first >= n {
                            return Ok(());
                        }
                        let runs = per_request.min(n - first);
                        let body = if runs == per_request { &full } else { &last };
                        let resp = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body.as_str().to_owned())
                            .send()
                            .await?;
                        let status = resp.status();
                        let text = resp.text().await?;
                        let created = match how {
                            HttpSubmit::One => 1,
                            HttpSubmit::Batch(_) => {
                                text.matches(r#""outcome":"created""#).count() as u64
                            }
                        };
                        if status != reqwest::StatusCode::CREATED || created != runs {
                            let text: String = text.chars().take(500).collect();
                            return Err(BenchError::Incorrect {
                                scenario,
                                what: format!(
                                    "POST {url} of {runs} runs answered {status}, {created} created: {text}"
                                ),
                            });
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await
                .map_err(|e| BenchError::Process(format!("a submitting task failed: {e}")))??;
        }
        Ok(())
    }
}

/// Waits until the API answers `/readyz`.
async fn wait_ready(client: &reqwest::Client, base: &str, api: &mut Service) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        api.check_alive()?;
        if let Ok(resp) = client.get(format!("{base}/readyz")).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Process(
                "cairn api was not ready in 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_workflows_are_valid_and_shaped_as_named() {
        for kind in [BenchStep::Pass, BenchStep::Sql] {
            let defs = Defs::build(kind).expect("bench workflows parse");
            the_bench_workflows_are_shaped_as_named(&defs);
        }
    }

    fn the_bench_workflows_are_shaped_as_named(defs: &Defs) {
        assert_eq!(defs.noop.workflow.steps.len(), 1);
        assert_eq!(defs.chain.workflow.steps.len() as u64, CHAIN_STEPS);
        assert_eq!(defs.fanout.workflow.steps.len() as u64, FAN_WIDTH + 2);
        let last = defs.fanout.workflow.step("last").expect("a last step");
        assert_eq!(last.needs.len() as u64, FAN_WIDTH);
        let s10 = defs.chain.workflow.step("s10").expect("s10");
        assert_eq!(s10.needs, vec!["s09".to_owned()]);
    }
}
