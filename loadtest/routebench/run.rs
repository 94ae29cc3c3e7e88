//! One benchmark point: wait for an idle fleet, reset its prefix caches, replay a plan open-loop
//! at one rate (warm-up, then the measured window), and collect every request's outcome with
//! the servers' counters around the measured window.
//!
//! The timed path: a scheduler sleeps to each request's due time and spawns it; it never waits
//! for answers, so arrivals stay open-loop (multi-turn sessions are closed-loop inside a
//! session only: a turn follows the previous answer after its think time). Everything is
//! bounded: a cap on requests in flight (over it a request is counted as `client_cap`, not
//! sent), a per-request deadline, and a final deadline after which stragglers are aborted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::client::{Exchange, Outcome};
use super::fleet::{Fleet, FleetDelta, ServerMetrics};
use super::workload::{balanced_assignment, Plan, Session, Spec};

/// How a point is run.
#[derive(Clone, Debug)]
pub struct PointConfig {
    /// Base URLs requests go to: one gateway or router, several (the client alternates between
    /// them per request), or, with `oracle`, the servers themselves.
    pub targets: Vec<String>,
    /// Send each key (group, session, request) straight to its server in a balanced
    /// assignment, with no router.
    pub oracle: bool,
    /// The oracle's server per key, replacing the balanced assignment.
    pub assignment: Option<Vec<usize>>,
    /// Chat endpoint path.
    pub path: String,
    /// Real seconds per simulated second.
    pub scale: f64,
    /// Offered load, simulated requests per second.
    pub rate: f64,
    /// Requests (single-turn) whose results are discarded, then requests measured. Multi-turn
    /// converts both to whole sessions.
    pub warmup: u32,
    pub measured: u32,
    /// Longest time one request may take, simulated seconds.
    pub timeout: f64,
    /// Cap on requests in flight from this client.
    pub max_inflight: usize,
    /// Longest real wait for the fleet to become idle before the point.
    pub idle_limit: Duration,
}

/// One request's result.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub measured: bool,
    /// The oracle's key: group, session or request.
    pub key: u64,
    /// Due time, simulated seconds since the point's start.
    pub due: f64,
    /// How late the request was sent, simulated seconds.
    pub lag: f64,
    pub outcome: Outcome,
}

/// Everything a point produced.
#[derive(Debug)]
pub struct PointRun {
    pub records: Vec<RequestRecord>,
    /// Counters over the measured window, or why they are missing.
    pub fleet: Result<FleetDelta, String>,
    /// Problems worth a note in the report (reset refused, fleet not idle).
    pub notes: Vec<String>,
    /// This process's CPU time (user + system) and the wall time of the point, real seconds.
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    /// The whole machine's busy CPUs on average over the point (from `/proc/stat`; `None`
    /// where it cannot be read), to show whether the box kept up.
    pub machine_busy_cpus: Option<f64>,
}

/// Where each request goes.
struct Router {
    urls: Vec<String>,
    /// Oracle: the server of each group; `None` = key mod servers.
    assignment: Option<Vec<usize>>,
    oracle: bool,
    next: AtomicUsize,
}

impl Router {
    fn new(cfg: &PointConfig, spec: &Spec) -> Self {
        let urls = cfg
            .targets
            .iter()
            .map(|t| format!("{}{}", t.trim_end_matches('/'), cfg.path))
            .collect::<Vec<_>>();
        let assignment = cfg.assignment.clone().or_else(|| {
            spec.group_weights()
                .map(|w| balanced_assignment(&w, urls.len()))
        });
        Router {
            urls,
            assignment,
            oracle: cfg.oracle,
            next: AtomicUsize::new(0),
        }
    }

    fn url(&self, key: u64) -> &str {
        let n = self.urls.len();
        let i = if self.oracle {
            match &self.assignment {
                Some(a) => a.get(key as usize).copied().unwrap_or(0),
                None => (key % n as u64) as usize,
            }
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        &self.urls[i]
    }
}

/// Shared by every request task of a point.
struct Shared {
    client: reqwest::Client,
    router: Router,
    inflight: AtomicUsize,
    cfg: PointConfig,
    spec: Spec,
    start: Instant,
}

impl Shared {
    fn sim_since_start(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64() / self.cfg.scale
    }

    fn at(&self, sim_seconds: f64) -> Instant {
        self.start + Duration::from_secs_f64(sim_seconds.max(0.0) * self.cfg.scale)
    }

    /// Sends one request due at `due` unless the in-flight cap is reached.
    async fn send(
        &self,
        key: u64,
        body: Vec<u8>,
        session: Option<&str>,
        due: Instant,
        keep_text: bool,
    ) -> (f64, Outcome) {
        let lag = Instant::now().saturating_duration_since(due).as_secs_f64() / self.cfg.scale;
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_inflight {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            let outcome = Outcome {
                error: Some("client_cap".to_owned()),
                ..Outcome::default()
            };
            return (lag, outcome);
        }
        let outcome = Exchange {
            client: &self.client,
            url: self.router.url(key),
            body,
            session,
            origin: due,
            scale: self.cfg.scale,
            timeout: Duration::from_secs_f64(self.cfg.timeout * self.cfg.scale),
            keep_text,
        }
        .run()
        .await;
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        (lag, outcome)
    }
}

/// (busy, total) jiffies of all CPUs from the first line of `/proc/stat`, and the CPU count.
fn machine_jiffies() -> Option<(u64, u64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle + iowait are not busy.
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total, cpus))
}

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Runs one point of `spec` as `cfg` says, against `fleet` for counters.
pub async fn run_point(cfg: &PointConfig, spec: &Spec, fleet: &Fleet) -> PointRun {
    let mut notes = Vec::new();
    if let Err(e) = fleet.wait_idle(cfg.idle_limit).await {
        notes.push(e);
    }
    if let Err(e) = fleet.reset_prefix_caches().await {
        notes.push(format!("prefix caches not reset: {e}"));
    }
    let total = cfg.warmup + cfg.measured;
    let plan = spec.plan(total);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .expect("reqwest client with default TLS-free settings builds");
    let cpu0 = cpu_seconds();
    let machine0 = machine_jiffies();
    let wall0 = Instant::now();
    // A short lead so the first due times are not already late.
    let start = Instant::now() + Duration::from_millis(200);
    let shared = Arc::new(Shared {
        client,
        router: Router::new(cfg, spec),
        inflight: AtomicUsize::new(0),
        cfg: cfg.clone(),
        spec: spec.clone(),
        start,
    });
    let (records, before) = match plan {
        Plan::Single(requests) => run_single(&shared, requests, fleet).await,
        Plan::Sessions(sessions) => run_sessions(&shared, sessions, fleet).await,
    };
    let after = fleet.scrape().await;
    let fleet_delta = match (before, after) {
        (Some(Ok(b)), Ok(a)) => Ok(FleetDelta::between(&b, &a)),
        (Some(Err(e)), _) | (_, Err(e)) => Err(e),
        (None, _) => Err("no measured request was sent".to_owned()),
    };
    let machine_busy_cpus =
        machine0
            .zip(machine_jiffies())
            .and_then(|((b0, t0, _), (b1, t1, cpus))| {
                super::stats::ratio((b1 - b0) as f64 * cpus as f64, (t1 - t0) as f64)
            });
    PointRun {
        records,
        fleet: fleet_delta,
        notes,
        cpu_seconds: cpu_seconds() - cpu0,
        wall_seconds: wall0.elapsed().as_secs_f64(),
        machine_busy_cpus,
    }
}

type Snapshot = Option<Result<Vec<ServerMetrics>, String>>;

/// Extra real time, beyond the last request's deadline, before stragglers are aborted.
const JOIN_SLACK: Duration = Duration::from_secs(5);

/// The point's running units (a request or a session each), with the record to keep for a
/// unit that never reports: one failed request (`aborted` past the point's deadline, `panic`).
struct Running {
    set: JoinSet<Vec<RequestRecord>>,
    pending: HashMap<tokio::task::Id, RequestRecord>,
}

impl Running {
    fn new() -> Self {
        Running {
            set: JoinSet::new(),
            pending: HashMap::new(),
        }
    }

    fn spawn<Fut>(&mut self, unit: Fut, measured: bool, key: u64, due: f64)
    where
        Fut: std::future::Future<Output = Vec<RequestRecord>> + Send + 'static,
    {
        let id = self.set.spawn(unit).id();
        let placeholder = RequestRecord {
            measured,
            key,
            due,
            lag: 0.0,
            outcome: Outcome::default(),
        };
        self.pending.insert(id, placeholder);
    }

    fn take(
        &mut self,
        done: Result<(tokio::task::Id, Vec<RequestRecord>), tokio::task::JoinError>,
        records: &mut Vec<RequestRecord>,
    ) {
        match done {
            Ok((id, mut r)) => {
                self.pending.remove(&id);
                records.append(&mut r);
            }
            Err(e) => {
                let kind = if e.is_panic() { "panic" } else { "aborted" };
                if let Some(mut r) = self.pending.remove(&e.id()) {
                    r.outcome.error = Some(kind.to_owned());
                    records.push(r);
                }
            }
        }
    }

    /// Collects the units already finished, without waiting.
    fn reap(&mut self, records: &mut Vec<RequestRecord>) {
        while let Some(done) = self.set.try_join_next_with_id() {
            self.take(done, records);
        }
    }

    /// Collects every unit until `deadline`, then aborts the rest (each recorded as failed).
    async fn finish(&mut self, deadline: Instant, records: &mut Vec<RequestRecord>) {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(Some(done)) => self.take(done, records),
                Ok(None) => return,
                Err(_) => {
                    eprintln!(
                        "routebench: aborting {} unit(s) past the point's deadline",
                        self.set.len()
                    );
                    self.set.abort_all();
                    while let Some(done) = self.set.join_next_with_id().await {
                        self.take(done, records);
                    }
                    return;
                }
            }
        }
    }
}

/// Starts each unit (a request, or a whole session) at its due time, simulated seconds since
/// the start, and collects the records its task returns. Snapshots the fleet's counters when
/// the first measured unit is due. `tail`: simulated seconds the last unit may still run.
async fn schedule<T, F, Fut>(
    shared: &Arc<Shared>,
    fleet: &Fleet,
    units: impl IntoIterator<Item = (f64, bool, u64, T)>,
    start_unit: F,
    tail: f64,
) -> (Vec<RequestRecord>, Snapshot)
where
    F: Fn(Arc<Shared>, T, bool, f64, Instant) -> Fut,
    Fut: std::future::Future<Output = Vec<RequestRecord>> + Send + 'static,
{
    let mut running = Running::new();
    let mut records = Vec::new();
    let mut before = None;
    let mut last_due = shared.start;
    for (due_sim, measured, key, unit) in units {
        let due = shared.at(due_sim);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        if measured && before.is_none() {
            let fleet = fleet.clone();
            before = Some(tokio::spawn(async move { fleet.scrape().await }));
        }
        last_due = due;
        let task = start_unit(Arc::clone(shared), unit, measured, due_sim, due);
        running.spawn(task, measured, key, due_sim);
        // Reap finished units as we go so the set stays small.
        running.reap(&mut records);
    }
    let deadline = last_due + Duration::from_secs_f64(tail * shared.cfg.scale) + JOIN_SLACK;
    running.finish(deadline, &mut records).await;
    let before = match before {
        Some(handle) => Some(handle.await.unwrap_or_else(|e| Err(e.to_string()))),
        None => None,
    };
    (records, before)
}

async fn run_single(
    shared: &Arc<Shared>,
    requests: Vec<super::workload::Request>,
    fleet: &Fleet,
) -> (Vec<RequestRecord>, Snapshot) {
    let (warmup, rate) = (shared.cfg.warmup, shared.cfg.rate);
    let units = requests
        .into_iter()
        .map(|r| (r.at / rate, r.index >= warmup, r.key, r));
    let start = |shared: Arc<Shared>, r: super::workload::Request, measured, due_sim, due| async move {
        let (lag, outcome) = shared.send(r.key, r.body, None, due, false).await;
        vec![RequestRecord {
            measured,
            key: r.key,
            due: due_sim,
            lag,
            outcome,
        }]
    };
    schedule(shared, fleet, units, start, shared.cfg.timeout).await
}

async fn run_sessions(
    shared: &Arc<Shared>,
    sessions: Vec<Session>,
    fleet: &Fleet,
) -> (Vec<RequestRecord>, Snapshot) {
    let warmup = shared.spec.sessions_for(shared.cfg.warmup);
    let rate = shared.cfg.rate;
    let units = sessions
        .into_iter()
        .map(|s| (s.at / rate, s.index >= warmup, u64::from(s.index), s));
    let start = |shared: Arc<Shared>, s: Session, measured, _due_sim, due| async move {
        run_session(&shared, &s, measured, due).await
    };
    // A session's turns each get the request timeout plus their think time.
    let turns = f64::from(shared.spec.turns.max(1));
    let tail = turns * (shared.cfg.timeout + shared.spec.think_max);
    schedule(shared, fleet, units, start, tail).await
}

/// The turns of one session, each after the previous answer plus its think time; stops at the
/// first failed turn (its later turns are not sent).
async fn run_session(
    shared: &Shared,
    session: &Session,
    measured: bool,
    first_due: Instant,
) -> Vec<RequestRecord> {
    let mut records = Vec::with_capacity(session.users.len());
    let mut answers: Vec<String> = Vec::with_capacity(session.users.len());
    let mut due = first_due;
    for turn in 0..session.users.len() {
        if turn > 0 {
            let think = session.think.get(turn - 1).copied().unwrap_or(0.0);
            due = Instant::now() + Duration::from_secs_f64(think * shared.cfg.scale);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        let body = session.body(&shared.spec, turn, &answers);
        let key = u64::from(session.index);
        let (lag, outcome) = shared.send(key, body, Some(&session.id), due, true).await;
        let failed = outcome.error.is_some();
        answers.push(outcome.text.clone());
        records.push(RequestRecord {
            measured,
            key,
            due: shared.sim_since_start(due),
            lag,
            outcome: Outcome {
                text: String::new(),
                ..outcome
            },
        });
        if failed {
            break;
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn units_past_the_deadline_are_recorded_as_aborted() {
        let mut running = Running::new();
        let mut records = Vec::new();
        let done = |key| async move {
            vec![RequestRecord {
                measured: true,
                key,
                due: 0.0,
                lag: 0.0,
                outcome: Outcome::default(),
            }]
        };
        running.spawn(done(1), true, 1, 0.0);
        running.spawn(
            async {
                std::future::pending::<()>().await;
                Vec::new()
            },
            true,
            2,
            0.5,
        );
        running.spawn(done(3), false, 3, 1.0);
        let deadline = Instant::now() + Duration::from_millis(50);
        running.finish(deadline, &mut records).await;
        records.sort_by_key(|r| r.key);
        let keys: Vec<(u64, Option<&str>)> = records
            .iter()
            .map(|r| (r.key, r.outcome.error.as_deref()))
            .collect();
        assert_eq!(keys, [(1, None), (2, Some("aborted")), (3, None)]);
        assert!(records[1].measured && records[1].due == 0.5);
    }
}
