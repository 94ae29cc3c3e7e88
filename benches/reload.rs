//! Does a hot reload of a 1,000-model config stall the request path?
//!
//! The config has 1,000 models × 2 backends (`http://127.0.0.1:PORT`, distinct ports, so no DNS).
//! A second variant adds one model, so every reload is a real change; the reloads alternate
//! between the two. Every model of the first variant is in both, so its backends keep their
//! (forced healthy) state across reloads and the hot path always finds a backend.
//!
//! Benchmarks (criterion):
//! - `control_plane/*`: what one reload costs the control plane: `config::parse` of the file,
//!   `Snapshot::build_from` with a previous snapshot (drop excluded), dropping a replaced
//!   snapshot (what the graveyard does off the request path), the full reload as done by hand
//!   (parse + build + publish + bury, which frees the snapshot replaced one reload earlier), and
//!   the production `reload::reload` (file read + parse + diff + build + publish + bury).
//! - `hot_path/idle` and `hot_path/during_reloads`: one request's reads (`state.load_full()`,
//!   `snapshot.pool(model)`, `pool.select(&[], None, true)`), cycling over the 1,000 models, alone and while
//!   a background thread reloads the 1,000-model config back to back for the whole measurement.
//!
//! A mean hides stalls, so `tail_latency` (printed, not a criterion benchmark) times every single
//! hot-path iteration for a fixed budget, idle, during back-to-back reloads, and idle again, and
//! prints p50/p99/p99.9/p99.99/max plus the timer's own floor. On a 2-core machine the reloader
//! owns one core, so OS preemption shows up in the max of both runs; compare them, not the
//! absolute numbers.
//!
//! Every loop is bounded (iterations and time) and the reloader thread is stopped and joined
//! before the next benchmark. Run: `cargo bench --bench reload` (about a minute after the build).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use modelgate::config::{self, Config};
use modelgate::reload::{self, BootSettings, Outcome, Trigger};
use modelgate::state::{Publisher, Snapshot};

/// Models in the base config.
const MODELS: usize = 1_000;
/// First backend port; model `i` uses `BASE_PORT + 2i` and `+ 2i + 1`.
const BASE_PORT: usize = 20_000;
/// The reloader thread stops after this many reloads even if nobody tells it to.
const MAX_RELOADS: u64 = 20_000;
/// ... or after this long.
const MAX_RELOADER_TIME: Duration = Duration::from_secs(120);

/// Model name `i`.
fn model_name(i: usize) -> String {
    format!("model-{i:04}")
}

/// The config YAML: `MODELS` models × 2 backends, plus `extra` more models after them.
fn config_yaml(extra: usize) -> String {
    let mut yaml = String::from(
        "listen: \"127.0.0.1:18000\"\nadmin:\n  listen: \"127.0.0.1:18001\"\nmodels:\n",
    );
    for i in 0..MODELS + extra {
        let port = BASE_PORT + 2 * i;
        yaml.push_str(&format!(
            "  {}:\n    backends:\n      - {{name: a, url: \"http://127.0.0.1:{}\"}}\n      - {{name: b, url: \"http://127.0.0.1:{}\"}}\n",
            model_name(i),
            port,
            port + 1
        ));
    }
    yaml
}

/// Both variants: the base file and the same with one model added.
fn variants() -> [Vec<u8>; 2] {
    [config_yaml(0).into_bytes(), config_yaml(1).into_bytes()]
}

/// Parse a variant; panics if the generated file is invalid (a bug in this bench).
fn parse(bytes: &[u8]) -> Config {
    config::parse(bytes).unwrap()
}

/// Mark every backend of the snapshot in force healthy (the live state is carried over by
/// reloads for backends that stay).
fn mark_all_healthy(control: &Publisher) {
    let snap = control.snapshot();
    for pool in &snap.pools {
        for backend in &pool.backends {
            backend.set_health(true);
        }
    }
}

/// A publisher with the base config in force and every backend healthy.
fn live_control(base: &Config) -> std::sync::Arc<Publisher> {
    let control = Publisher::new(base, "router.yaml".into());
    mark_all_healthy(&control);
    control
}

/// One reload as `reload::reload` does it, minus the file read, diff and log line.
fn reload_once(control: &Publisher, bytes: &[u8]) {
    control.apply_config(parse(bytes), |expanded, current| {
        Snapshot::build_from(expanded, current.generation + 1, Some(current))
    });
}

/// What one request reads: the snapshot, the model's pool, a backend pick.
#[inline]
fn hot_path(control: &Publisher, model: &str) -> Option<usize> {
    let snapshot = control.live().load_full();
    let pool = snapshot.pool(model)?;
    pool.select(&[], None, true)
}

/// What the background reloader did.
#[derive(Debug, Default)]
struct ReloadStats {
    reloads: u64,
    total: Duration,
    max: Duration,
}

impl ReloadStats {
    fn line(&self) -> String {
        let mean = if self.reloads == 0 {
            Duration::ZERO
        } else {
            self.total / self.reloads as u32
        };
        format!(
            "{} reloads, mean {:.2} ms, max {:.2} ms each",
            self.reloads,
            mean.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

/// Reload back to back, alternating the variants, until `stop` (or the bounds) say so.
fn reload_loop(control: &Publisher, variants: &[Vec<u8>; 2], stop: &AtomicBool) -> ReloadStats {
    let started = Instant::now();
    let mut stats = ReloadStats::default();
    while !stop.load(Ordering::Relaxed)
        && stats.reloads < MAX_RELOADS
        && started.elapsed() < MAX_RELOADER_TIME
    {
        let t0 = Instant::now();
        // Start from variant 1 so the first reload is a change from the base config in force.
        reload_once(control, &variants[(stats.reloads as usize + 1) % 2]);
        let took = t0.elapsed();
        stats.reloads += 1;
        stats.total += took;
        stats.max = stats.max.max(took);
    }
    stats
}

/// Run `body` while `work` runs on a background thread; stop and join that thread afterwards.
fn with_background<T: Send, R>(
    work: impl FnOnce(&AtomicBool) -> T + Send,
    body: impl FnOnce() -> R,
) -> (R, T) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let background = s.spawn(|| work(&stop));
        // Let the background work get going so the body never starts on a quiet machine.
        std::thread::sleep(Duration::from_millis(20));
        let result = body();
        stop.store(true, Ordering::Relaxed);
        (result, background.join().unwrap())
    })
}

/// Run `body` while a background thread reloads the 1,000-model config back to back.
fn with_reloads<R>(
    control: &Publisher,
    variants: &[Vec<u8>; 2],
    body: impl FnOnce() -> R,
) -> (R, ReloadStats) {
    with_background(|stop| reload_loop(control, variants, stop), body)
}

/// The control experiment: burn one core without touching the snapshot or the allocator, to
/// tell "a reload interferes" from "another busy thread shares the 2 cores".
fn spin_loop(stop: &AtomicBool) -> u64 {
    let started = Instant::now();
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RELOADER_TIME {
        for _ in 0..10_000 {
            x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    x
}

fn bench_control_plane(c: &mut Criterion) {
    let variants = variants();
    let base = parse(&variants[0]);
    let plus_one = parse(&variants[1]);
    assert_eq!(base.models.len(), MODELS);
    assert_eq!(plus_one.models.len(), MODELS + 1);
    let previous = Snapshot::build(&base, 1);

    let mut group = c.benchmark_group("control_plane");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    group.bench_function("parse_1000_models", |b| {
        b.iter_with_large_drop(|| config::parse(black_box(&variants[0])).unwrap())
    });
    group.bench_function("build_from_1000_models", |b| {
        b.iter_with_large_drop(|| Snapshot::build_from(black_box(&plus_one), 2, Some(&previous)))
    });
    group.bench_function("drop_1000_model_snapshot", |b| {
        b.iter_batched(
            || Snapshot::build_from(&plus_one, 2, Some(&previous)),
            drop,
            BatchSize::PerIteration,
        )
    });

    let control = live_control(&base);
    let mut n = 0usize;
    group.bench_function("full_reload_parse_build_publish_bury", |b| {
        b.iter(|| {
            n += 1;
            reload_once(&control, &variants[n % 2]);
        })
    });
    assert!(control.buried() <= 1, "the graveyard must not grow");

    // The production function, reading the file; the file is rewritten between iterations,
    // untimed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.yaml");
    std::fs::write(&path, &variants[0]).unwrap();
    let control = Publisher::new(&base, path.clone());
    let boot = BootSettings::of(&base);
    let mut n = 0usize;
    group.bench_function("reload_fn_from_file", |b| {
        b.iter_batched(
            || {
                n += 1;
                std::fs::write(&path, &variants[n % 2]).unwrap();
            },
            |()| {
                let outcome = reload::reload(&control, &boot, Trigger::Signal);
                assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench_hot_path(c: &mut Criterion) {
    let variants = variants();
    let base = parse(&variants[0]);
    let names: Vec<String> = (0..MODELS).map(model_name).collect();
    let control = live_control(&base);
    assert!(names.iter().all(|m| hot_path(&control, m).is_some()));

    let mut group = c.benchmark_group("hot_path");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    let mut i = 0usize;
    group.bench_function("idle", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            hot_path(&control, black_box(&names[i]))
        })
    });

    let ((), stats) = with_reloads(&control, &variants, || {
        group.bench_function("during_reloads", |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                hot_path(&control, black_box(&names[i]))
            })
        });
    });
    println!(
        "hot_path/during_reloads: background reloader did {}",
        stats.line()
    );

    with_background(spin_loop, || {
        group.bench_function("during_cpu_spin", |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                hot_path(&control, black_box(&names[i]))
            })
        });
    });
    group.finish();
}

/// Scheduler counters of the calling thread (Linux `/proc/thread-self`): time spent runnable
/// but waiting for a CPU, and context switches that were voluntary (the thread blocked: a lock,
/// a sleep, I/O) or involuntary (it was preempted). All zero where `/proc` is missing.
#[derive(Debug, Clone, Copy, Default)]
struct Sched {
    runqueue_wait_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

impl Sched {
    fn now() -> Sched {
        let runqueue_wait_ns = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        Sched {
            runqueue_wait_ns,
            voluntary: field("voluntary_ctxt_switches:"),
            involuntary: field("nonvoluntary_ctxt_switches:"),
        }
    }

    fn since(self, before: Sched) -> Sched {
        Sched {
            runqueue_wait_ns: self
                .runqueue_wait_ns
                .saturating_sub(before.runqueue_wait_ns),
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
        }
    }
}

/// Per-iteration latency distribution of one run, and what the scheduler did meanwhile.
struct Tail {
    misses: usize,
    sorted_ns: Vec<u32>,
    sched: Sched,
}

impl Tail {
    fn quantile(&self, q: f64) -> u32 {
        let last = self.sorted_ns.len().saturating_sub(1);
        self.sorted_ns
            .get(((last as f64) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    }

    fn max(&self) -> u32 {
        self.sorted_ns.last().copied().unwrap_or(0)
    }

    /// Iterations slower than `ns`, and the time they took together.
    fn over(&self, ns: u32) -> (usize, u64) {
        let slow = &self.sorted_ns[self.sorted_ns.partition_point(|&x| x <= ns)..];
        (slow.len(), slow.iter().map(|&x| u64::from(x)).sum())
    }

    fn row(&self, label: &str) -> String {
        let (over_100us, slow_ns) = self.over(100_000);
        format!(
            "{label:<15} {:>9} {:>6} {:>6} {:>7} {:>8} {:>9} {:>7} {:>6} {:>11.1} {:>9.1} {:>5} {:>6} {:>4}",
            self.sorted_ns.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
            self.quantile(0.9999),
            self.max(),
            over_100us,
            self.over(1_000_000).0,
            slow_ns as f64 / 1e6,
            self.sched.runqueue_wait_ns as f64 / 1e6,
            self.sched.voluntary,
            self.sched.involuntary,
            self.misses,
        )
    }
}

const TAIL_HEADER: &str = "run             iterations   p50    p99   p99.9   p99.99       max  >100us   >1ms  ms in >100us  rq-wait-ms  vol  invol miss";

/// Time every iteration of `step` separately, for `budget` or `cap` iterations.
fn time_each(budget: Duration, cap: usize, mut step: impl FnMut(usize) -> bool) -> Tail {
    let mut samples: Vec<u32> = Vec::with_capacity(cap);
    let mut misses = 0;
    let before = Sched::now();
    let started = Instant::now();
    while samples.len() < cap && (samples.len() % 4096 != 0 || started.elapsed() < budget) {
        let t0 = Instant::now();
        let hit = step(samples.len());
        let took = t0.elapsed();
        misses += usize::from(!hit);
        samples.push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
    }
    let sched = Sched::now().since(before);
    samples.sort_unstable();
    Tail {
        misses,
        sorted_ns: samples,
        sched,
    }
}

fn tail_latency(_: &mut Criterion) {
    // `cargo test --benches` runs benches without `--bench`: keep that run short.
    let full = std::env::args().any(|a| a == "--bench");
    let (budget, cap) = if full {
        (Duration::from_secs(3), 20_000_000)
    } else {
        (Duration::from_millis(50), 100_000)
    };
    let variants = variants();
    let base = parse(&variants[0]);
    let names: Vec<String> = (0..MODELS).map(model_name).collect();
    let control = live_control(&base);
    let run = || {
        time_each(budget, cap, |i| {
            black_box(hot_path(&control, black_box(&names[i % MODELS]))).is_some()
        })
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let floor = time_each(budget / 4, cap / 4, |i| black_box(i) != usize::MAX);
    let idle = run();
    let (reloading, stats) = with_reloads(&control, &variants, run);
    let (spinning, _) = with_background(spin_loop, run);
    let idle_again = run();

    println!();
    println!(
        "tail_latency: one hot-path iteration (load_full + pool lookup + select), each timed \
         alone, {budget:?} per run; times in ns unless marked; load average before: {}",
        loadavg.trim()
    );
    println!("{TAIL_HEADER}");
    println!("{}", floor.row("timer floor"));
    println!("{}", idle.row("idle"));
    println!("{}", reloading.row("during reloads"));
    println!("{}", spinning.row("during cpu spin"));
    println!("{}", idle_again.row("idle again"));
    println!("during reloads: background reloader did {}", stats.line());
    let ratio = |a: u32, b: u32| f64::from(a) / f64::from(b.max(1));
    println!(
        "during reloads / idle: p50 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
        ratio(reloading.quantile(0.5), idle.quantile(0.5)),
        ratio(reloading.quantile(0.99), idle.quantile(0.99)),
        ratio(reloading.quantile(0.999), idle.quantile(0.999)),
        ratio(reloading.max(), idle.max()),
    );
    println!(
        "(rq-wait-ms: time the measuring thread was runnable but had no CPU; vol: times it \
         blocked; invol: times it was preempted)"
    );
    println!();
    assert_eq!(
        reloading.misses, 0,
        "a reload must not make a healthy model unroutable"
    );
}

criterion_group! {
    name = benches;
    // Plots cost more time than the measurements; the numbers are in the terminal output.
    config = Criterion::default().without_plots();
    targets = bench_control_plane, bench_hot_path, tail_latency
}
criterion_main!(benches);
