//! One soak run: start the fleet and the gateway, run the load and the schedule, watch the
//! gateway (pid, config in force, RSS, descriptors, metrics), stop everything, analyse.
//!
//! Bounded: the load runs `duration`; every wait after it is capped (streams 2 × their length
//! + 30 s, old processes 90 s, shutdown 40 s); every process started is stopped by PID.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;

use super::fleet::Fleet;
use super::gateway::{alive, cpu_seconds, rss_and_fds, signal, Gateway};
use super::load::{self, Clock, Load, Record};
use super::plan::{schedule, Action, ConfigState, Options, Step, FAULTY};
use super::report::{self, Report};

/// A config saved during the run.
#[derive(Serialize, Clone, Debug)]
pub struct ConfigWrite {
    pub k: u32,
    pub t_ms: f64,
    pub sha256: String,
    pub change: String,
    #[serde(skip)]
    pub state: ConfigState,
}

/// A backend down between `from_ms` and `until_ms` (killed, then restarted).
#[derive(Serialize, Clone, Debug)]
pub struct Outage {
    pub backend: &'static str,
    pub from_ms: f64,
    pub until_ms: f64,
}

/// A fault of [`FAULTY`] between `from_ms` and `until_ms`.
#[derive(Serialize, Clone, Debug)]
pub struct FaultWindow {
    pub backend: &'static str,
    pub fault: &'static str,
    pub replaces_process: bool,
    pub from_ms: f64,
    pub until_ms: f64,
    /// POSTs the raw responder answered (raw faults only).
    pub raw_posts: u64,
}

/// One binary upgrade.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Upgrade {
    pub signal_ms: f64,
    pub old_pid: u32,
    /// `/status` first reported the new process.
    pub new_pid: Option<u32>,
    pub handoff_ms: Option<f64>,
    /// The old process was gone.
    pub old_exit_ms: Option<f64>,
}

/// The schedule as it was carried out.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Executed {
    pub configs: Vec<ConfigWrite>,
    pub outages: Vec<Outage>,
    pub faults: Vec<FaultWindow>,
    pub upgrades: Vec<Upgrade>,
    /// Every action: when, what, and whether it went through.
    pub log: Vec<(f64, String)>,
}

/// One RSS / descriptor sample of a gateway process.
#[derive(Serialize, Clone, Debug)]
pub struct Sample {
    pub t_ms: f64,
    pub pid: u32,
    /// The process `/status` answers from (the others are draining after a hand-off).
    pub current: bool,
    pub rss_kib: u64,
    pub fds: u64,
    /// CPU seconds the process used so far.
    pub cpu_s: f64,
}

/// What the monitor saw.
#[derive(Default, Debug)]
pub struct Watched {
    pub samples: Vec<Sample>,
    /// (time, pid, generation, config sha256) each time one of them changed.
    pub status_changes: Vec<(f64, u32, u64, String)>,
    /// `/status` polls that got no answer, with their time.
    pub admin_failures: Vec<f64>,
    /// The last `/metrics` scrape of each process (time, text).
    pub metrics: HashMap<u32, (f64, String)>,
    /// Every gateway pid seen, in order.
    pub pids: Vec<u32>,
}

struct Shared {
    clock: Clock,
    current_pid: AtomicU32,
    stop: AtomicBool,
    watched: Mutex<Watched>,
    executed: Mutex<Executed>,
}

impl Shared {
    fn log(&self, what: String) {
        let t = self.clock.ms();
        eprintln!("soak {:7.1}s {what}", t / 1000.0);
        self.executed.lock().unwrap().log.push((t, what));
    }
}

/// Raise the open-file limit to the hard limit (children inherit it): 500 streams need
/// about 2,000 descriptors between the client, the gateway and the mocks.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Poll `/status` every 250 ms (pid, generation, config), sample RSS and descriptors of
/// every gateway process alive every `sample_every`, scrape `/metrics` every 5 s.
async fn monitor(shared: Arc<Shared>, gw: Arc<Gateway>, sample_every: Duration) {
    let mut last_sample = Instant::now() - sample_every;
    let mut last_scrape = Instant::now() - Duration::from_secs(5);
    let mut last_seen: Option<(u32, u64, String)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let t = shared.clock.ms();
        match gw.status().await {
            Some(status) => {
                let pid = status["pid"].as_u64().unwrap_or(0) as u32;
                let generation = status["generation"].as_u64().unwrap_or(0);
                let sha = status["config_sha256"].as_str().unwrap_or("").to_owned();
                shared.current_pid.store(pid, Ordering::Relaxed);
                let now = (pid, generation, sha);
                if last_seen.as_ref() != Some(&now) {
                    let mut w = shared.watched.lock().unwrap();
                    if !w.pids.contains(&pid) {
                        w.pids.push(pid);
                    }
                    w.status_changes.push((t, now.0, now.1, now.2.clone()));
                    last_seen = Some(now);
                }
            }
            None => shared.watched.lock().unwrap().admin_failures.push(t),
        }
        if last_sample.elapsed() >= sample_every {
            last_sample = Instant::now();
            let current = shared.current_pid.load(Ordering::Relaxed);
            let pids = shared.watched.lock().unwrap().pids.clone();
            let mut samples = Vec::new();
            for pid in pids {
                if !alive(pid) {
                    continue;
                }
                if let Some((rss_kib, fds)) = rss_and_fds(pid) {
                    samples.push(Sample {
                        t_ms: shared.clock.ms(),
                        pid,
                        current: pid == current,
                        rss_kib,
                        fds,
                        cpu_s: cpu_seconds(pid).unwrap_or(0.0),
                    });
                }
            }
            shared.watched.lock().unwrap().samples.extend(samples);
        }
        if last_scrape.elapsed() >= Duration::from_secs(5) {
            last_scrape = Instant::now();
            let pid = shared.current_pid.load(Ordering::Relaxed);
            if let Some(text) = gw.metrics().await {
                let t = shared.clock.ms();
                shared
                    .watched
                    .lock()
                    .unwrap()
                    .metrics
                    .insert(pid, (t, text));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pid `/status` answers from right now (falls back to the monitor's last view).
async fn current_pid(shared: &Shared, gw: &Gateway) -> u32 {
    match gw.status().await.and_then(|s| s["pid"].as_u64()) {
        Some(pid) => pid as u32,
        None => shared.current_pid.load(Ordering::Relaxed),
    }
}

/// After `SIGUSR2`: wait for `/status` to answer from another pid (at most 40 s), then for the
/// old process to exit (at most 90 s more); record both.
async fn follow_upgrade(shared: Arc<Shared>, gw: Arc<Gateway>, index: usize, old_pid: u32) {
    let until = Instant::now() + Duration::from_secs(40);
    let mut new_pid = None;
    while Instant::now() < until {
        if let Some(pid) = gw.status().await.and_then(|s| s["pid"].as_u64()) {
            if pid as u32 != old_pid {
                new_pid = Some(pid as u32);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handoff = shared.clock.ms();
    {
        let mut e = shared.executed.lock().unwrap();
        e.upgrades[index].new_pid = new_pid;
        e.upgrades[index].handoff_ms = new_pid.map(|_| handoff);
    }
    let Some(new_pid) = new_pid else {
        shared.log(format!("upgrade {index}: no new process within 40 s"));
        return;
    };
    {
        let mut w = shared.watched.lock().unwrap();
        if !w.pids.contains(&new_pid) {
            w.pids.push(new_pid);
        }
    }
    shared.log(format!("upgrade {index}: pid {old_pid} -> {new_pid}"));
    let until = Instant::now() + Duration::from_secs(90);
    while Instant::now() < until {
        if !alive(old_pid) {
            let t = shared.clock.ms();
            shared.executed.lock().unwrap().upgrades[index].old_exit_ms = Some(t);
            shared.log(format!("upgrade {index}: old pid {old_pid} exited"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared.log(format!(
        "upgrade {index}: old pid {old_pid} still running 90 s after the hand-off"
    ));
}

/// Carry out one step of the schedule.
async fn execute(
    step: &Step,
    shared: &Arc<Shared>,
    gw: &Arc<Gateway>,
    fleet: &mut Fleet,
    followers: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let t = shared.clock.ms();
    match &step.action {
        Action::Reload(k) => {
            let state = ConfigState::at(*k);
            let prev = ConfigState::at(k.saturating_sub(1));
            let change = state.describe(&prev);
            let text = gw.render(&state, fleet);
            match gw.write_config(&text) {
                Ok(sha256) => {
                    let pid = current_pid(shared, gw).await;
                    let sent = signal(pid, Signal::SIGHUP);
                    shared.executed.lock().unwrap().configs.push(ConfigWrite {
                        k: *k,
                        t_ms: t,
                        sha256,
                        change: change.clone(),
                        state,
                    });
                    shared.log(format!("reload {k} ({change}), SIGHUP {pid}: {sent:?}"));
                }
                Err(e) => shared.log(format!("reload {k}: cannot write the config: {e}")),
            }
        }
        Action::Upgrade => {
            let old_pid = current_pid(shared, gw).await;
            let sent = signal(old_pid, Signal::SIGUSR2);
            let index = {
                let mut e = shared.executed.lock().unwrap();
                e.upgrades.push(Upgrade {
                    signal_ms: t,
                    old_pid,
                    ..Upgrade::default()
                });
                e.upgrades.len() - 1
            };
            shared.log(format!("upgrade {index}: SIGUSR2 {old_pid}: {sent:?}"));
            followers.push(tokio::spawn(follow_upgrade(
                Arc::clone(shared),
                Arc::clone(gw),
                index,
                old_pid,
            )));
        }
        Action::Kill(name) => {
            fleet.kill(name);
            shared.executed.lock().unwrap().outages.push(Outage {
                backend: name,
                from_ms: t,
                until_ms: f64::INFINITY,
            });
            shared.log(format!("SIGKILL {name}"));
        }
        Action::Restart(name) => {
            let r = fleet.restart(name).await;
            let done = shared.clock.ms();
            if let Some(o) = shared
                .executed
                .lock()
                .unwrap()
                .outages
                .iter_mut()
                .rev()
                .find(|o| o.backend == *name)
            {
                o.until_ms = done;
            }
            shared.log(format!("restart {name}: {r:?}"));
        }
        Action::FaultStart(fault) => {
            let r = fleet.fault_start(FAULTY, *fault).await;
            shared.executed.lock().unwrap().faults.push(FaultWindow {
                backend: FAULTY,
                fault: fault.name(),
                replaces_process: fault.replaces_process(),
                from_ms: t,
                until_ms: f64::INFINITY,
                raw_posts: 0,
            });
            shared.log(format!("{FAULTY} starts {}: {r:?}", fault.name()));
        }
        Action::FaultEnd(fault) => {
            let r = fleet.fault_end(FAULTY, *fault).await;
            let done = shared.clock.ms();
            if let Some(w) = shared
                .executed
                .lock()
                .unwrap()
                .faults
                .iter_mut()
                .rev()
                .find(|w| w.fault == fault.name())
            {
                w.until_ms = done;
                w.raw_posts = *r.as_ref().unwrap_or(&0);
            }
            shared.log(format!("{FAULTY} ends {}: {r:?}", fault.name()));
        }
    }
}

/// Everything the analysis needs, as collected.
pub struct Collected {
    pub records: Vec<Record>,
    pub executed: Executed,
    pub watched: Watched,
    pub gateway_log: String,
    /// (rss KiB, fds) of the gateway before the load, and after it with nothing in flight.
    pub idle_before: Option<(u64, u64)>,
    pub idle_after: Option<(u64, u64)>,
    pub load_end_ms: f64,
    pub load_average: (String, String),
    /// CPU seconds: this driver (clients and analysis), the mock processes, and the gateway
    /// processes (last sample of each, so up to one sampling period short).
    pub cpu: (f64, f64, f64),
}

/// Run the soak and analyse it. Writes `report.md` and the raw data into `opts.out_dir`.
pub async fn run(opts: Options) -> Result<Report, String> {
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| format!("{}: {e}", opts.out_dir.display()))?;
    raise_nofile_limit();
    let load_average = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let load_start = load_average();
    let mut fleet = Fleet::start(&opts).await?;
    let mut gateway = Gateway::new(&opts);
    let state0 = ConfigState::at(0);
    let sha0 = gateway.write_config(&gateway.render(&state0, &fleet))?;
    let first_pid = gateway.start().await?;
    let idle_before = rss_and_fds(first_pid);
    let gw = Arc::new(gateway);

    let clock = Clock(Instant::now());
    let shared = Arc::new(Shared {
        clock,
        current_pid: AtomicU32::new(first_pid),
        stop: AtomicBool::new(false),
        watched: Mutex::new(Watched {
            pids: vec![first_pid],
            ..Watched::default()
        }),
        executed: Mutex::new(Executed::default()),
    });
    shared.executed.lock().unwrap().configs.push(ConfigWrite {
        k: 0,
        t_ms: 0.0,
        sha256: sha0,
        change: "initial".into(),
        state: state0,
    });
    shared.log(format!(
        "gateway pid {first_pid} on :{} (admin :{}), {} streams, {}/s short requests, {} s",
        gw.port,
        gw.admin_port,
        opts.streams,
        opts.short_rate,
        opts.duration.as_secs()
    ));
    let monitor_task = tokio::spawn(monitor(
        Arc::clone(&shared),
        Arc::clone(&gw),
        opts.sample_every,
    ));

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        records
    });
    let load = Arc::new(Load::new(
        clock,
        gw.port,
        opts.stream_tokens,
        opts.short_tokens,
        tx,
    ));
    let mut generators = Vec::new();
    for i in 0..opts.streams {
        generators.push(tokio::spawn(load::stream_worker(
            Arc::clone(&load),
            i,
            opts.streams,
            opts.stream_length(),
        )));
    }
    generators.push(tokio::spawn(load::short_generator(
        Arc::clone(&load),
        opts.short_rate,
    )));
    generators.push(tokio::spawn(load::hostile_generator(
        Arc::clone(&load),
        opts.hostile_every,
    )));

    let mut followers = Vec::new();
    for step in schedule(opts.mode, opts.duration) {
        tokio::time::sleep_until((clock.0 + step.at).into()).await;
        execute(&step, &shared, &gw, &mut fleet, &mut followers).await;
    }
    tokio::time::sleep_until((clock.0 + opts.duration).into()).await;
    load.stop.store(true, Ordering::Relaxed);
    let load_end_ms = clock.ms();
    shared.log("load stopped; waiting for requests in flight".into());
    let bound = opts.stream_length() * 2 + Duration::from_secs(30);
    let until = Instant::now() + bound;
    for mut g in generators {
        let left = until.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, &mut g).await.is_err() {
            // Its requests are lost from the records; the log says so.
            shared.log("a generator did not finish in time; aborted".into());
            g.abort();
        }
    }
    for f in followers {
        let _ = tokio::time::timeout(Duration::from_secs(100), f).await;
    }
    drop(load);
    // Idle after the load: nothing in flight, old processes gone, and the upstream keep-alive
    // pool expired (connections idle 4 s are closed by a sweep every second): wait 6 s.
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let idle = gw.status().await.is_some_and(|s| s["in_flight"] == 0);
        let pids = shared.watched.lock().unwrap().pids.clone();
        let current = current_pid(&shared, &gw).await;
        let others_alive = pids.iter().any(|&p| p != current && alive(p));
        if idle && !others_alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let last_pid = current_pid(&shared, &gw).await;
    let idle_after = rss_and_fds(last_pid);
    shared.stop.store(true, Ordering::Relaxed);
    let _ = monitor_task.await;
    let load_end = load_average();

    // Stop the gateway: every pid seen that still runs gets SIGTERM (drain.delay_ms is 0).
    let pids: BTreeSet<u32> = shared
        .watched
        .lock()
        .unwrap()
        .pids
        .iter()
        .copied()
        .collect();
    for &pid in &pids {
        if alive(pid) {
            let _ = signal(pid, Signal::SIGTERM);
        }
    }
    let until = Instant::now() + Duration::from_secs(40);
    while Instant::now() < until && pids.iter().any(|&p| alive(p)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &pid in &pids {
        if alive(pid) {
            shared.log(format!(
                "gateway pid {pid} ignored SIGTERM for 40 s; SIGKILL"
            ));
            let _ = signal(pid, Signal::SIGKILL);
        }
    }
    let mut gateway = Arc::try_unwrap(gw).map_err(|_| "gateway handle still shared".to_owned())?;
    gateway.reap();
    fleet.stop().await;
    let cpu = {
        use nix::sys::resource::{getrusage, UsageWho};
        let secs = |who| {
            getrusage(who).map_or(0.0, |u| {
                let t =
                    |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
                t(u.user_time()) + t(u.system_time())
            })
        };
        let mut last: HashMap<u32, f64> = HashMap::new();
        for s in &shared.watched.lock().unwrap().samples {
            last.insert(s.pid, s.cpu_s);
        }
        (
            secs(UsageWho::RUSAGE_SELF),
            // Reaped children: the mocks and the first gateway process, counted below.
            (secs(UsageWho::RUSAGE_CHILDREN) - last.get(&first_pid).copied().unwrap_or(0.0))
                .max(0.0),
            last.values().sum(),
        )
    };
    let records = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .map_err(|_| "the request records were not all handed in".to_owned())?
        .map_err(|e| e.to_string())?;
    let gateway_log = std::fs::read_to_string(&gateway.log_path).unwrap_or_default();
    let executed = std::mem::take(&mut *shared.executed.lock().unwrap());
    let watched = std::mem::take(&mut *shared.watched.lock().unwrap());
    let collected = Collected {
        records,
        executed,
        watched,
        gateway_log,
        idle_before,
        idle_after,
        load_end_ms,
        load_average: (load_start, load_end),
        cpu,
    };
    report::write_raw(&opts, &collected)?;
    let report = report::analyze(&opts, &collected);
    let markdown = report::markdown(&opts, &collected, &report);
    std::fs::write(opts.out_dir.join("report.md"), &markdown)
        .map_err(|e| format!("report.md: {e}"))?;
    Ok(report)
}
