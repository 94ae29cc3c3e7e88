//! routebench: the load generator and report of the routing-quality benchmark
//! (`loadtest/routing.sh` drives it; see `loadtest/ROUTING.md`).
//!
//! Subcommands:
//! - `point`: one open-loop point (warm-up + measured window) of a seeded workload at one rate
//!   against a router, several gateways, or the fleet directly (`--oracle`); appends one JSON
//!   line to `--out` and prints a one-line summary starting `slo=pass|fail`.
//! - `knee`: RR's knee by a bounded search (geometric steps, then bisection): the highest rate
//!   whose TTFT p99 meets the SLO; prints `knee=RATE` last.
//! - `report`: the Markdown tables of a run's JSON lines.
//! - `paired`: two arms compared seed by seed over any number of runs' JSON lines (mean paired
//!   difference ± standard error per metric).
//! - `unavailable`: records that an arm could not run (so the report says so).
//! - `dump`: the workload's arrival times and body digests, to check determinism by hand.
//!
//! A benchmark tool, not part of the gateway: nothing in `src/` may depend on it. Every loop is
//! bounded (request count, per-request deadline, point deadline, knee search steps).

#[path = "routebench/client.rs"]
mod client;
#[path = "routebench/fleet.rs"]
mod fleet;
#[path = "routebench/paired.rs"]
mod paired;
#[path = "routebench/report.rs"]
mod report;
#[path = "routebench/run.rs"]
mod run;
#[path = "routebench/stats.rs"]
mod stats;
#[path = "routebench/summary.rs"]
mod summary;
#[path = "routebench/trace.rs"]
mod trace;
#[path = "routebench/workload.rs"]
mod workload;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use fleet::Fleet;
use run::PointConfig;
use summary::{Labels, PointRecord};
use workload::{Api, Kind, Spec};

#[derive(Parser)]
#[command(
    name = "routebench",
    about = "Routing-quality benchmark load generator and report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one point and append its JSON line.
    Point(PointArgs),
    /// Find the knee (highest rate meeting the SLO) of the target by a bounded search.
    Knee(KneeArgs),
    /// Print the Markdown report of a run's JSON lines.
    Report {
        /// JSON lines written by `point` / `knee` / `unavailable`.
        raw: PathBuf,
    },
    /// Compare two arms seed by seed: every point of `--arm` paired with `--against`'s point of
    /// the same scenario, load and seed, from any number of runs' JSON lines.
    Paired {
        #[arg(long)]
        arm: String,
        #[arg(long)]
        against: String,
        /// JSON lines written by `point` (several runs, e.g. one per seed).
        #[arg(required = true)]
        raw: Vec<PathBuf>,
    },
    /// Record that an arm is not available in a scenario.
    Unavailable {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        arm: String,
        #[arg(long)]
        note: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the workload's arrival times and body digests (determinism check).
    Dump {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Requests (or sessions × turns) to generate.
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
}

/// The workload (see `workload::Spec` for the meaning of each field).
#[derive(Args, Clone)]
struct WorkloadArgs {
    #[arg(long, value_enum, default_value = "shared-prefix")]
    workload: Kind,
    /// The API of single-turn requests (multi-turn sessions are always chat).
    #[arg(long, value_enum, default_value = "chat")]
    api: Api,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "llama-3.1-8b-sim")]
    model: String,
    #[arg(long, default_value_t = 192)]
    groups: u32,
    #[arg(long, default_value_t = 2048)]
    sys_tokens: u32,
    #[arg(long, default_value_t = 256)]
    question_tokens: u32,
    #[arg(long, default_value_t = 128)]
    output_tokens: u32,
    #[arg(long, default_value_t = 1.1)]
    zipf_alpha: f64,
    #[arg(long, default_value_t = 5)]
    turns: u32,
    /// Think time bounds between turns, simulated seconds.
    #[arg(long, default_value_t = 1.0)]
    think_min: f64,
    #[arg(long, default_value_t = 3.0)]
    think_max: f64,
}

impl WorkloadArgs {
    fn spec(&self) -> Spec {
        Spec {
            kind: self.workload,
            api: self.api,
            seed: self.seed,
            model: self.model.clone(),
            groups: self.groups.max(1),
            sys_tokens: self.sys_tokens,
            question_tokens: self.question_tokens,
            output_tokens: self.output_tokens.max(1),
            zipf_alpha: self.zipf_alpha,
            turns: self.turns.max(1),
            think_min: self.think_min,
            think_max: self.think_max,
        }
    }

    fn describe(&self) -> String {
        let s = self.spec();
        let what = describe_kind(&s);
        match (s.kind, s.api) {
            (Kind::MultiTurn, _) | (_, Api::Chat) => what,
            (_, Api::Completions) => format!("{what}, {}", Api::Completions.path()),
        }
    }
}

/// The workload's family and sizes, for the report.
fn describe_kind(s: &Spec) -> String {
    match s.kind {
        Kind::SharedPrefix => format!(
            "shared-prefix, {} groups, system {} + question {} tokens, {} out",
            s.groups, s.sys_tokens, s.question_tokens, s.output_tokens
        ),
        Kind::Zipf => format!(
            "shared-prefix Zipf α={}, {} groups, system {} + question {} tokens, {} out",
            s.zipf_alpha, s.groups, s.sys_tokens, s.question_tokens, s.output_tokens
        ),
        Kind::MultiTurn => format!(
            "multi-turn, {} turns, {} system prompts of {} tokens, {} tokens per user turn, \
                 {} out, think {}–{} s",
            s.turns,
            s.groups,
            s.sys_tokens,
            s.question_tokens,
            s.output_tokens,
            s.think_min,
            s.think_max
        ),
        Kind::NoReuse => format!(
            "no reuse, unique {}-token prompts, {} out",
            s.question_tokens, s.output_tokens
        ),
    }
}

#[derive(Args, Clone)]
struct CommonArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Base URL of the router under test; repeat to alternate between several (per request).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// No router: each key goes straight to its server (balanced assignment), or, with
    /// `--target`s, to the target in the server's place (one gateway per server).
    #[arg(long)]
    oracle: bool,
    /// The oracle's server index for each key 0, 1, 2, ... (comma-separated) instead of the
    /// balanced assignment: replays another arm's placement (from its `--trace`) with no router.
    /// Keys beyond the list go to the first server.
    #[arg(long, value_delimiter = ',', requires = "oracle")]
    assignment: Option<Vec<usize>>,
    /// The fleet's servers, comma-separated base URLs (for /metrics and the cache reset; the
    /// oracle's targets).
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<String>,
    /// The endpoint (default: the `--api`'s, `/v1/chat/completions` or `/v1/completions`).
    #[arg(long)]
    path: Option<String>,
    /// Real seconds per simulated second (the simulator's --time-scale).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Requests discarded before the measured window.
    #[arg(long, default_value_t = 400)]
    warmup: u32,
    /// Requests measured.
    #[arg(long, default_value_t = 1000)]
    measured: u32,
    /// At least this many simulated seconds of arrivals for the warm-up (raises --warmup to
    /// rate × seconds). Multi-turn needs it: its steady state is the sessions alive at once,
    /// which takes a session lifetime of arrivals whatever the rate.
    #[arg(long, default_value_t = 0.0)]
    warmup_seconds: f64,
    /// At least this many simulated seconds of arrivals measured (raises --measured).
    #[arg(long, default_value_t = 0.0)]
    measured_seconds: f64,
    /// Longest time a request may take, simulated seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Requests in flight from this client at most (more are counted as `client_cap` errors).
    #[arg(long, default_value_t = 4000)]
    max_inflight: usize,
    /// Longest real wait for the fleet to become idle before a point, seconds.
    #[arg(long, default_value_t = 300)]
    idle_wait: u64,
    /// SLO: TTFT p99 at most this many simulated seconds.
    #[arg(long, default_value_t = 2.0)]
    slo: f64,
    #[arg(long, default_value = "adhoc")]
    scenario: String,
    #[arg(long, default_value = "adhoc")]
    arm: String,
    /// JSON lines file to append to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// JSON lines file to append every request of a point to (its key, the backend that
    /// answered, cached tokens, latencies): where each arm put each group.
    #[arg(long)]
    trace: Option<PathBuf>,
}

#[derive(Args)]
struct PointArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Offered load, simulated requests per second.
    #[arg(long)]
    rate: f64,
    /// The rate as a multiple of the scenario's knee (for the report).
    #[arg(long)]
    multiple: Option<f64>,
    #[arg(long, default_value = "ladder")]
    phase: String,
}

#[derive(Args)]
struct KneeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// First rate tried, simulated requests per second.
    #[arg(long)]
    start_rate: f64,
    /// Factor between the first bracketing steps.
    #[arg(long, default_value_t = 1.5)]
    step: f64,
    /// Bisection steps once the knee is bracketed.
    #[arg(long, default_value_t = 3)]
    refine: u32,
    /// Points at most, bracketing included.
    #[arg(long, default_value_t = 10)]
    max_points: u32,
}

impl CommonArgs {
    fn config(&self, rate: f64) -> Result<PointConfig, String> {
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return Err("--time-scale must be positive".to_owned());
        }
        if !(rate > 0.0 && rate.is_finite()) {
            return Err("the rate must be positive".to_owned());
        }
        let targets = if self.oracle && self.targets.is_empty() {
            self.servers.clone()
        } else {
            self.targets.clone()
        };
        if targets.is_empty() {
            return Err("give --target URL (repeatable) or --oracle".to_owned());
        }
        if let Some(a) = &self.assignment {
            if a.iter().any(|&i| i >= targets.len()) {
                return Err("--assignment names a server beyond the targets".to_owned());
            }
        }
        Ok(PointConfig {
            targets,
            oracle: self.oracle,
            assignment: self.assignment.clone(),
            path: self
                .path
                .clone()
                .unwrap_or_else(|| self.workload.api.path().to_owned()),
            scale: self.time_scale,
            rate,
            warmup: self.warmup_at(rate),
            measured: self.measured_at(rate),
            timeout: self.timeout,
            max_inflight: self.max_inflight.max(1),
            idle_limit: Duration::from_secs(self.idle_wait),
        })
    }

    /// Warm-up requests at `rate`: `--warmup`, or more to cover `--warmup-seconds`.
    fn warmup_at(&self, rate: f64) -> u32 {
        self.warmup.max(requests_for(rate, self.warmup_seconds))
    }

    /// Measured requests at `rate`: `--measured`, or more to cover `--measured-seconds`.
    fn measured_at(&self, rate: f64) -> u32 {
        self.measured
            .max(requests_for(rate, self.measured_seconds))
            .max(1)
    }

    fn labels(&self, phase: &str, rate: f64, multiple: Option<f64>) -> Labels {
        Labels {
            scenario: self.scenario.clone(),
            arm: self.arm.clone(),
            phase: phase.to_owned(),
            multiple,
            rate,
            seed: self.workload.seed,
            time_scale: self.time_scale,
            workload: self.workload.describe(),
            warmup: self.warmup_at(rate),
            measured: self.measured_at(rate),
            slo_ttft_p99: self.slo,
        }
    }

    /// Runs one point, appends its line, prints its summary.
    async fn point(
        &self,
        fleet: &Fleet,
        phase: &str,
        rate: f64,
        multiple: Option<f64>,
    ) -> Result<PointRecord, String> {
        let cfg = self.config(rate)?;
        let run = run::run_point(&cfg, &self.workload.spec(), fleet).await;
        let record = PointRecord::summarize(self.labels(phase, rate, multiple), &run);
        if let Some(out) = &self.out {
            append_line(out, &record)?;
        }
        if let Some(trace) = &self.trace {
            append_lines(trace, &trace::lines(&record, &run.records))?;
        }
        println!("{}", record.line());
        for note in &record.notes {
            eprintln!("routebench: note: {note}");
        }
        Ok(record)
    }
}

/// Requests arriving in `seconds` at `rate` (at most 1,000,000: a bound, not a target).
fn requests_for(rate: f64, seconds: f64) -> u32 {
    (rate * seconds).ceil().clamp(0.0, 1e6) as u32
}

/// Every point of a run's JSON lines (blank lines skipped).
fn read_points(raw: &std::path::Path) -> Result<Vec<PointRecord>, String> {
    let text = std::fs::read_to_string(raw).map_err(|e| format!("{}: {e}", raw.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", raw.display(), i + 1))
        })
        .collect()
}

fn append_line(path: &PathBuf, record: &PointRecord) -> Result<(), String> {
    let line = serde_json::to_string(record).map_err(|e| e.to_string())?;
    append_lines(path, &[line])
}

fn append_lines(path: &PathBuf, lines: &[String]) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for line in lines {
        writeln!(w, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}

/// The knee search: geometric steps of `step` until one rate passes and the next fails (in
/// whichever direction the start rate points), then `refine` geometric bisections. Returns the
/// highest passing rate. At most `max_points` points: bracketing that needs more is an error,
/// refining that would need more stops with the bracket found.
async fn knee(args: &KneeArgs, fleet: &Fleet) -> Result<f64, String> {
    let c = &args.common;
    let step = args.step.max(1.05);
    let mut points = 0;
    let mut passes = |rate: f64| {
        points += 1;
        let over = points > args.max_points;
        async move {
            if over {
                return Err(format!(
                    "knee search: no bracket within {} points",
                    args.max_points
                ));
            }
            c.point(fleet, "knee", rate, None).await.map(|r| r.slo_ok)
        }
    };
    let first = args.start_rate;
    let (mut lo, mut hi);
    if passes(first).await? {
        lo = first;
        hi = first * step;
        while passes(hi).await? {
            lo = hi;
            hi *= step;
        }
    } else {
        hi = first;
        lo = first / step;
        while !passes(lo).await? {
            hi = lo;
            lo /= step;
        }
    }
    for _ in 0..args.refine {
        let mid = (lo * hi).sqrt();
        match passes(mid).await {
            Ok(true) => lo = mid,
            Ok(false) => hi = mid,
            // Out of points while refining: the bracket so far is the answer.
            Err(_) => break,
        }
    }
    Ok(lo)
}

fn dump(workload: &WorkloadArgs, count: u32) {
    use sha2::{Digest, Sha256};
    let spec = workload.spec();
    let mut all = Sha256::new();
    match spec.plan(count) {
        workload::Plan::Single(requests) => {
            for r in requests {
                let digest = Sha256::digest(&r.body);
                all.update(digest);
                all.update(r.at.to_le_bytes());
                println!(
                    "{} at={:.6} key={} body_sha256={:x}",
                    r.index, r.at, r.key, digest
                );
            }
        }
        workload::Plan::Sessions(sessions) => {
            for s in sessions {
                let first = s.body(&spec, 0, &[]);
                let digest = Sha256::digest(&first);
                all.update(digest);
                all.update(s.at.to_le_bytes());
                println!(
                    "{} at={:.6} turns={} think={:?} first_body_sha256={:x}",
                    s.index,
                    s.at,
                    s.users.len(),
                    s.think,
                    digest
                );
            }
        }
    }
    println!("digest={:x}", all.finalize());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a 2-thread tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Point(a) => {
                let fleet = Fleet::new(a.common.servers.clone()).map_err(|e| e.to_string())?;
                a.common
                    .point(&fleet, &a.phase, a.rate, a.multiple)
                    .await
                    .map(|_| ())
            }
            Command::Knee(a) => {
                let fleet = Fleet::new(a.common.servers.clone()).map_err(|e| e.to_string())?;
                let k = knee(&a, &fleet).await?;
                println!("knee={k:.4}");
                Ok(())
            }
            Command::Report { raw } => {
                let points = read_points(&raw)?;
                print!("{}", report::Report::new(&points).render());
                Ok(())
            }
            Command::Paired { arm, against, raw } => {
                let mut points = Vec::new();
                for path in &raw {
                    points.extend(read_points(path)?);
                }
                print!("{}", paired::render(&points, &arm, &against));
                Ok(())
            }
            Command::Unavailable {
                scenario,
                arm,
                note,
                out,
            } => {
                let record = PointRecord {
                    labels: Labels {
                        scenario,
                        arm,
                        phase: "unavailable".to_owned(),
                        ..Labels::default()
                    },
                    notes: vec![note],
                    ..PointRecord::default()
                };
                append_line(&out, &record)
            }
            Command::Dump { workload, count } => {
                dump(&workload, count);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("routebench: {e}");
            ExitCode::FAILURE
        }
    }
}
