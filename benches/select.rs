//! The per-request routing reads, in isolation: a backend pick by every policy over pools of 2,
//! 16 and 256 backends, and the snapshot load the proxy does once per request.
//!
//! Benchmarks (criterion):
//! - `select/<policy>/<n>`: `Pool::select(&[], key, true)` on a pool of `n` healthy backends
//!   (every 4th one with a request in flight, so the load-based policies have something to
//!   compare). `consistent_hash` gets a different key hash each iteration (a fixed key would
//!   let the branch predictor learn the answer); `load_aware` has a fresh report per backend.
//! - `pick_and_track/<policy>/16`: what `forward::try_pick` does: select plus taking the
//!   backend's in-flight slot, and dropping it again (the request's RAII guard).
//! - `snapshot/*`: `ArcSwap::load` (a guard, what a short read needs), `load_full` (an owned
//!   `Arc`, what the proxy keeps in the request context), and the whole per-request read:
//!   `load_full` + `Snapshot::pool(model)` + `select`.
//!
//! Sample times are small so the whole run stays under a minute. Not on any request path;
//! nothing here is asserted.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use modelgate::config::{self, Config};
use modelgate::routing::Pool;
use modelgate::state::Publisher;

const POLICIES: [&str; 6] = [
    "round_robin",
    "random",
    "least_connections",
    "power_of_two",
    "load_aware",
    "consistent_hash",
];

const SIZES: [usize; 3] = [2, 16, 256];

/// A one-model config with `n` backends under `policy`.
fn config(policy: &str, n: usize) -> Config {
    let extra = match policy {
        "consistent_hash" => ", hash_on: \"header:x-user\"",
        "load_aware" => ", load_poll_ms: 3600000",
        _ => "",
    };
    let mut yaml = format!(
        "listen: \"127.0.0.1:18000\"\nadmin:\n  listen: \"127.0.0.1:18001\"\nmodels:\n  m:\n    load_balancer: {{policy: {policy}{extra}}}\n    backends:\n"
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "      - {{name: b{i}, url: \"http://127.0.0.1:{}\"}}\n",
            20_000 + i
        ));
    }
    config::parse(yaml.as_bytes()).expect("bench config must be valid")
}

/// A pool of `n` healthy backends, every 4th one busy, each with a fresh load report.
/// Returns the in-flight guards too: they must live as long as the pool is measured.
fn pool(policy: &str, n: usize) -> (Pool, Vec<modelgate::routing::InFlightGuard>) {
    let p = Pool::build(&config(policy, n).models[0].pool_config());
    let mut busy = Vec::new();
    for (i, b) in p.backends.iter().enumerate() {
        b.set_health(true);
        b.set_load((i % 7) as f64, (i % 3) as f64, Some(0.5));
        if i % 4 == 0 {
            busy.push(b.track());
        }
    }
    (p, busy)
}

fn bench_select(c: &mut Criterion) {
    for policy in POLICIES {
        let mut group = c.benchmark_group(format!("select/{policy}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500));
        for n in SIZES {
            let (p, _busy) = pool(policy, n);
            assert!(p.select(&[], Some(1), true).is_some(), "bench pool picks");
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::from_parameter(n), &p, |b, p| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    p.select(black_box(&[]), Some(key), true)
                })
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("pick_and_track");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
    for policy in ["round_robin", "least_connections"] {
        let (p, _busy) = pool(policy, 16);
        group.bench_with_input(BenchmarkId::new(policy, 16), &p, |b, p| {
            b.iter(|| {
                let i = p.select(&[], None, true)?;
                let guard = p.backends[i].try_track();
                black_box(&guard);
                Some(i)
            })
        });
    }
    group.finish();
}

fn bench_snapshot(c: &mut Criterion) {
    let control = Publisher::new(&config("round_robin", 2), "router.yaml".into());
    for b in &control.live().load().pools[0].backends {
        b.set_health(true);
    }
    let mut group = c.benchmark_group("snapshot");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
    group.bench_function("arcswap_load_guard", |b| {
        b.iter(|| black_box(control.live().load()).generation)
    });
    group.bench_function("arcswap_load_full", |b| {
        b.iter(|| black_box(control.live().load_full()).generation)
    });
    group.bench_function("load_full_pool_select", |b| {
        b.iter(|| {
            let snapshot = control.live().load_full();
            let pool = snapshot.pool(black_box("m"))?;
            pool.select(&[], None, true)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Plots cost more time than the measurements; the numbers are in the terminal output.
    config = Criterion::default().without_plots();
    targets = bench_select, bench_snapshot
}
criterion_main!(benches);
