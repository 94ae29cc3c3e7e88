//! Backend selection policies (request path: no locks, no allocation, no I/O).
//!
//! Every policy sees only *eligible* backends (healthy, not draining, below `max_in_flight`,
//! not excluded by the caller) through the `eligible` predicate, and returns an index into the
//! pool's backend list.
//!
//! - `round_robin`: a precomputed smooth weighted sequence, walked with one atomic counter.
//! - `random`: weighted random.
//! - `least_connections`: fewest in-flight requests per unit of weight, ties broken randomly.
//! - `power_of_two`: two random eligible backends, the less loaded of them.
//! - `load_aware`: vLLM's own view (running, waiting, KV-cache use) plus what this gateway sent
//!   since the last scrape; falls back to least_connections when a report is stale.
//! - `consistent_hash`: weighted rendezvous hashing of the request key with a stable hash, so
//!   every replica picks the same backend for the same key without shared state and only keys
//!   of a removed backend move; bounded load skips a backend holding more than `bounded_load` ×
//!   the average in-flight count (and at least [`BOUND_FLOOR`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::BackendState;

/// Smooth weighted round-robin order of backend indices (nginx's algorithm), computed once.
pub fn weighted_sequence(weights: &[u32]) -> Vec<usize> {
    // Cap the period: weights are relative, so scale huge totals down.
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let scale = total.div_ceil(10_000).max(1);
    let w: Vec<i64> = weights
        .iter()
        .map(|&x| (u64::from(x.max(1)).div_ceil(scale)) as i64)
        .collect();
    let sum: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut seq = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        seq.push(best);
    }
    seq
}

/// Round robin over `seq` from the shared cursor; only first attempts move it, so a retry does
/// not shift the rotation (otherwise, with two backends, every request's first attempt would
/// land on the same one).
pub fn round_robin(
    seq: &[usize],
    cursor: &AtomicUsize,
    advance: bool,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    if seq.is_empty() {
        return None;
    }
    let start = if advance {
        cursor.fetch_add(1, Ordering::Relaxed)
    } else {
        cursor.load(Ordering::Relaxed)
    };
    (0..seq.len())
        .map(|i| seq[(start.wrapping_add(i)) % seq.len()])
        .find(|&b| eligible(b))
}

/// Weighted random among eligible backends.
pub fn random(
    backends: &[std::sync::Arc<BackendState>],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = (0..backends.len())
        .filter(|&i| eligible(i))
        .map(|i| u64::from(backends[i].config.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rand::thread_rng().gen_range(0..total);
    for i in (0..backends.len()).filter(|&i| eligible(i)) {
        let w = u64::from(backends[i].config.weight);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// How much more a request that has no response byte yet weighs than one that streams: it is
/// waiting or in prefill on the backend, and a new request's first token queues behind it, while
/// a decoding request only slows each step a little. Counting both alike (plain least
/// connections) sent bursts to a backend whose streams had just ended although its queue was
/// full of unstarted prefills; on the simulated fleet, with no prefix reuse, that made TTFT
/// p99 2× round-robin's (loadtest/ROUTING.md).
pub const AWAITING_WEIGHT: u64 = 8;

/// Requests in flight, those without a response byte yet counted [`AWAITING_WEIGHT`] times, per
/// unit of weight, scaled to integers.
fn load_of(b: &BackendState) -> u64 {
    let load = b.in_flight() + (AWAITING_WEIGHT - 1) * b.awaiting();
    load.saturating_mul(1000) / u64::from(b.config.weight.max(1))
}

/// Lowest `score`, ties broken uniformly at random (reservoir sampling, no allocation).
fn min_by_score(
    n: usize,
    eligible: impl Fn(usize) -> bool,
    score: impl Fn(usize) -> f64,
) -> Option<usize> {
    let mut rng = rand::thread_rng();
    let mut best: Option<(usize, f64)> = None;
    let mut ties = 0u32;
    for i in (0..n).filter(|&i| eligible(i)) {
        let s = score(i);
        match best {
            None => {
                best = Some((i, s));
                ties = 1;
            }
            Some((_, b)) if s < b => {
                best = Some((i, s));
                ties = 1;
            }
            Some((_, b)) if s == b => {
                ties += 1;
                if rng.gen_range(0..ties) == 0 {
                    best = Some((i, s));
                }
            }
            Some(_) => {}
        }
    }
    best.map(|(i, _)| i)
}

/// Fewest in-flight requests (per weight), ties random.
pub fn least_connections(
    backends: &[std::sync::Arc<BackendState>],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    min_by_score(backends.len(), eligible, |i| load_of(&backends[i]) as f64)
}

/// Two distinct random eligible backends; the less loaded (ties: the first drawn).
pub fn power_of_two(
    backends: &[std::sync::Arc<BackendState>],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = (0..backends.len()).filter(|&i| eligible(i)).count();
    let nth = |k: usize| (0..backends.len()).filter(|&i| eligible(i)).nth(k);
    match n {
        0 => None,
        1 => nth(0),
        _ => {
            let mut rng = rand::thread_rng();
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth(a)?, nth(b)?);
            Some(if load_of(&backends[b]) < load_of(&backends[a]) {
                b
            } else {
                a
            })
        }
    }
}

/// Least loaded by the backends' own metrics when every eligible backend has a fresh report
/// (`score` returns `None` for a stale one), else least_connections.
///
/// One pass, each eligible backend scored once: a score reads the backend's report and the
/// clock, so the former check-then-pick (two scores per backend) cost twice that.
pub fn load_aware(
    backends: &[std::sync::Arc<BackendState>],
    eligible: impl Fn(usize) -> bool + Copy,
    score: impl Fn(&BackendState) -> Option<f64>,
) -> Option<usize> {
    let stale = std::cell::Cell::new(false);
    let best = min_by_score(backends.len(), eligible, |i| {
        if stale.get() {
            return 0.0;
        }
        score(&backends[i]).unwrap_or_else(|| {
            stale.set(true);
            0.0
        })
    });
    if stale.get() {
        return least_connections(backends, eligible);
    }
    best
}

/// Stable 64-bit hash of a sticky key (xxh3, fixed seed: identical on every replica).
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, 0x6d6f_6465_6c67_6174)
}

/// Weighted rendezvous score of (key, backend): higher wins.
pub(super) fn rendezvous(key: u64, backend: &BackendState) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(backend.config.name.as_bytes(), key);
    // Uniform in (0, 1): 53 random bits, never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(backend.config.weight.max(1)) / u.ln()
}

/// A backend with fewer requests than this in flight is never skipped for load.
pub const BOUND_FLOOR: u64 = 8;

/// Highest rendezvous score among eligible backends below the load bound.
pub fn consistent_hash(
    backends: &[std::sync::Arc<BackendState>],
    key: u64,
    bounded_load: f64,
    eligible: impl Fn(usize) -> bool + Copy,
) -> Option<usize> {
    let (n, total) = (0..backends.len())
        .filter(|&i| eligible(i))
        .fold((0u64, 0u64), |(n, t), i| {
            (n + 1, t + backends[i].in_flight())
        });
    if n == 0 {
        return None;
    }
    // Bounded load: room for this request too, as in "consistent hashing with bounded loads",
    // but never below a floor: at low load the bound would otherwise move keys on transient
    // in-flight counts, and replicas (each with its own counts) would disagree.
    let cap = (((total + 1) as f64 / n as f64 * bounded_load).ceil() as u64).max(BOUND_FLOOR);
    let best = |within_bound: bool| {
        (0..backends.len())
            .filter(|&i| eligible(i))
            .filter(|&i| !within_bound || backends[i].in_flight() < cap.max(1))
            .map(|i| (i, rendezvous(key, &backends[i])))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    };
    best(true).or_else(|| best(false))
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::config::parse;
    use crate::routing::Pool;
    use std::time::Duration;

    use super::*;

    /// A pool of healthy backends b0..bn with these weights, under `policy`.
    pub(crate) fn pool(policy: &str, weights: &[u32], extra: &str) -> Pool {
        let backends: String = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                format!(
                    "      - {{name: b{i}, url: \"http://127.0.0.1:{}\", weight: {w}}}\n",
                    9000 + i
                )
            })
            .collect();
        let yaml = format!(
            "models:\n  m:\n    load_balancer: {{policy: {policy}{extra}}}\n    backends:\n{backends}"
        );
        let config = parse(yaml.as_bytes()).unwrap();
        let p = Pool::build(&config.models[0].pool_config());
        for b in &p.backends {
            b.set_health(true);
        }
        p
    }

    fn counts(p: &Pool, n: usize, key: impl Fn(usize) -> Option<u64>) -> Vec<usize> {
        let mut c = vec![0; p.backends.len()];
        for i in 0..n {
            c[p.select(&[], key(i), true).unwrap()] += 1;
        }
        c
    }

    fn near(got: usize, want: f64, tolerance: f64) -> bool {
        (got as f64 - want).abs() <= want * tolerance
    }

    #[test]
    fn smooth_weighted_sequence_interleaves() {
        assert_eq!(weighted_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(weighted_sequence(&[1, 1]).len(), 2);
        assert!(weighted_sequence(&[u32::MAX, u32::MAX]).len() <= 10_002);
    }

    #[test]
    fn round_robin_honours_weights_exactly() {
        let p = pool("round_robin", &[1, 2, 3], "");
        assert_eq!(counts(&p, 6000, |_| None), vec![1000, 2000, 3000]);
    }

    #[test]
    fn retries_do_not_move_the_round_robin_cursor() {
        let p = pool("round_robin", &[1, 1], "");
        // Every request fails over once: first attempts must still alternate.
        let mut first = [0; 2];
        for _ in 0..100 {
            let a = p.select(&[], None, true).unwrap();
            first[a] += 1;
            let b = p.select(&[a], None, false).unwrap();
            assert_ne!(a, b);
        }
        assert_eq!(first, [50, 50]);
    }

    #[test]
    fn random_honours_weights() {
        let p = pool("random", &[1, 3], "");
        let c = counts(&p, 20_000, |_| None);
        assert!(
            near(c[0], 5000.0, 0.1) && near(c[1], 15_000.0, 0.1),
            "{c:?}"
        );
    }

    #[test]
    fn least_connections_picks_the_idlest_and_breaks_ties_randomly() {
        let p = pool("least_connections", &[1, 1, 1], "");
        let _busy: Vec<_> = (0..3).map(|_| p.backends[0].track()).collect();
        let _one = p.backends[1].track();
        assert_eq!(counts(&p, 100, |_| None), vec![0, 0, 100]);
        let _two = p.backends[2].track();
        let c = counts(&p, 2000, |_| None);
        assert_eq!(c[0], 0);
        assert!(
            near(c[1], 1000.0, 0.15) && near(c[2], 1000.0, 0.15),
            "{c:?}"
        );
        // least_outstanding is the same policy.
        assert_eq!(
            pool("least_outstanding", &[1], "").policy,
            crate::routing::Policy::LeastConnections
        );
    }

    #[test]
    fn least_connections_weighs_load_per_unit_of_weight() {
        let p = pool("least_connections", &[1, 4], "");
        let _a = p.backends[0].track();
        let _b: Vec<_> = (0..3).map(|_| p.backends[1].track()).collect();
        // 1/1 vs 3/4: the heavier backend is less loaded per weight.
        assert_eq!(counts(&p, 50, |_| None), vec![0, 50]);
    }

    #[test]
    fn power_of_two_prefers_the_less_loaded_of_two() {
        let p = pool("power_of_two", &[1, 1, 1], "");
        let _b1: Vec<_> = (0..10).map(|_| p.backends[1].track()).collect();
        let _b2: Vec<_> = (0..10).map(|_| p.backends[2].track()).collect();
        // b0 wins whenever it is drawn: 2 of the 3 possible pairs.
        let c = counts(&p, 30_000, |_| None);
        assert!(near(c[0], 20_000.0, 0.05), "{c:?}");
        let one = pool("power_of_two", &[1], "");
        assert_eq!(counts(&one, 10, |_| None), vec![10]);
    }

    #[test]
    fn consistent_hash_is_stable_spreads_by_weight_and_moves_only_removed_keys() {
        let p = pool(
            "consistent_hash",
            &[1, 1, 2],
            ", hash_on: \"header:x-user\"",
        );
        let keys: Vec<u64> = (0..20_000u64).map(|k| key_hash(&k.to_le_bytes())).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|&k| p.select(&[], Some(k), true).unwrap())
            .collect();
        // Deterministic: a second pool built from the same config (another replica) agrees.
        let replica = pool(
            "consistent_hash",
            &[1, 1, 2],
            ", hash_on: \"header:x-user\"",
        );
        assert!(keys
            .iter()
            .zip(&before)
            .all(|(&k, &b)| replica.select(&[], Some(k), true) == Some(b)));
        let mut c = vec![0; 3];
        for &b in &before {
            c[b] += 1;
        }
        assert!(
            near(c[0], 5000.0, 0.1) && near(c[1], 5000.0, 0.1) && near(c[2], 10_000.0, 0.1),
            "{c:?}"
        );
        // b1 goes away (unhealthy): only its keys move.
        p.backends[1].set_health(false);
        let mut moved_others = 0;
        for (&k, &b) in keys.iter().zip(&before) {
            let now = p.select(&[], Some(k), true).unwrap();
            assert_ne!(now, 1);
            if b != 1 && now != b {
                moved_others += 1;
            }
        }
        assert_eq!(moved_others, 0);
    }

    #[test]
    fn consistent_hash_bounded_load_spills_a_hot_key() {
        let p = pool(
            "consistent_hash",
            &[1, 1, 1, 1],
            ", hash_on: \"header:x-user\", bounded_load: 1.25",
        );
        let hot = key_hash(b"hot");
        let home = p.select(&[], Some(hot), true).unwrap();
        let _few: Vec<_> = (0..7).map(|_| p.backends[home].track()).collect();
        // Below the floor: no spill, whatever the average.
        assert_eq!(p.select(&[], Some(hot), true), Some(home));
        let _more: Vec<_> = (0..13).map(|_| p.backends[home].track()).collect();
        // 20 in flight over 4 backends: cap = max(ceil(21/4 × 1.25), 8) = 8; home holds 20.
        let next = p.select(&[], Some(hot), true).unwrap();
        assert_ne!(next, home);
        // Same spill target on every call (deterministic second choice).
        assert!((0..10).all(|_| p.select(&[], Some(hot), true) == Some(next)));
    }

    #[test]
    fn load_aware_uses_fresh_reports_and_falls_back_when_stale() {
        let p = pool("load_aware", &[1, 1, 1], ", load_poll_ms: 60000");
        p.backends[0].set_load(10.0, 5.0, Some(0.5));
        p.backends[1].set_load(2.0, 0.0, Some(0.5));
        p.backends[2].set_load(1.0, 0.0, Some(0.99)); // KV cache nearly full: penalised
        assert_eq!(counts(&p, 50, |_| None), vec![0, 50, 0]);
        // Requests sent since the report count too.
        let _sent: Vec<_> = (0..20).map(|_| p.backends[1].track()).collect();
        assert_eq!(counts(&p, 10, |_| None), vec![0, 0, 10]);
        // A backend without a report: least_connections for the whole pool.
        let q = pool("load_aware", &[1, 1], "");
        q.backends[0].set_load(0.0, 0.0, None);
        let _busy = q.backends[0].track();
        assert_eq!(counts(&q, 10, |_| None), vec![0, 10]);
    }

    /// A `load_aware` pool whose backends all report 10 requests running, each with one
    /// time-to-first-token sample of these milliseconds.
    fn reported_alike_answering_in(ttfb_ms: &[u64]) -> Pool {
        let p = pool(
            "load_aware",
            &vec![1; ttfb_ms.len()],
            ", load_poll_ms: 60000",
        );
        let now = std::time::Instant::now();
        for (b, &ms) in p.backends.iter().zip(ttfb_ms) {
            b.set_load(10.0, 0.0, Some(0.5));
            b.ttfb().observe(Duration::from_millis(ms), now);
        }
        p
    }

    #[test]
    fn load_aware_weighs_each_backends_load_by_how_much_slower_it_answers() {
        let p = reported_alike_answering_in(&[100, 200]);
        // b1 counts 0.2 / (1.25 × 0.1) = 1.6 times its load. Same load: (10 + 8 for this
        // request) × 1 against × 1.6.
        assert_eq!(counts(&p, 20, |_| None), vec![20, 0]);
        // b0 takes requests until its load is 1.6 times b1's: 10 + 8 awaiting + 8 = 26 < 28.8 ...
        let _one = p.backends[0].track();
        assert_eq!(counts(&p, 20, |_| None), vec![20, 0]);
        // ... 34 > 28.8.
        let _two = p.backends[0].track();
        assert_eq!(counts(&p, 20, |_| None), vec![0, 20]);
    }

    #[test]
    fn load_aware_counts_backends_within_a_quarter_of_the_fastest_as_fast() {
        let p = reported_alike_answering_in(&[100, 124]);
        // The same load: a tie, at random, as if both answered alike.
        let c = counts(&p, 200, |_| None);
        assert!(c.iter().all(|&n| n >= 50), "{c:?}");
    }

    #[test]
    fn only_healthy_undrained_backends_below_their_limit_are_picked() {
        for policy in [
            "round_robin",
            "random",
            "least_connections",
            "power_of_two",
            "load_aware",
        ] {
            let p = pool(policy, &[1, 1, 1], "");
            p.backends[0].set_health(false);
            let c = counts(&p, 300, |_| None);
            assert_eq!(c[0], 0, "{policy}: {c:?}");
        }
        let yaml = "models:\n  m:\n    backends:\n      - {name: a, url: \"http://127.0.0.1:9001\", max_in_flight: 2}\n      - {name: d, url: \"http://127.0.0.1:9002\", drain: true}\n";
        let p = Pool::build(&parse(yaml.as_bytes()).unwrap().models[0].pool_config());
        for b in &p.backends {
            b.set_health(true);
        }
        let g1 = p.backends[0].try_track().unwrap();
        let _g2 = p.backends[0].try_track().unwrap();
        assert!(p.backends[0].try_track().is_none(), "limit is 2");
        assert_eq!(p.select(&[], None, true), None, "full and draining");
        drop(g1);
        assert_eq!(p.select(&[], None, true), Some(0));
    }
}
