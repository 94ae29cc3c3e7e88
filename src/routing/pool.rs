//! One model's pool: its backends, policy, timeouts, retries, and per-backend live state.
//!
//! Built by the control plane and never mutated afterwards, except through the shared
//! [`BackendHealth`] (health, in-flight count, backend-reported model card), which the health
//! prober publishes lock-free and which outlives a reload for backends that stay. Selection runs on the request path: no locks, no I/O.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora_core::upstreams::peer::HttpPeer;

use super::cache_aware::{self, Choice, PickReason};
use super::prefix::{CacheClock, PrefixIndex, PromptBlocks};
use super::select;
use super::settings::{
    BackendConfig, CacheAwareOptions, Canary, HealthCheck, LbOptions, Policy, PoolConfig, Retries,
    Shadow, Timeouts, DEFAULT_KV_CACHE_TOKENS,
};
use super::ttfb::{self, TtfbAverage};
use crate::metrics::{BackendMetrics, ModelMetrics};

/// How long an idle upstream keep-alive connection stays pooled. vLLM (uvicorn) closes idle
/// connections after 5 s by default; staying below that avoids reusing a closing socket.
pub const UPSTREAM_IDLE_POOL: Duration = Duration::from_secs(4);

/// The live, mutable part of one (model, backend): health, probe streaks, in-flight count and
/// the backend-reported model card. Shared by every snapshot in which the backend keeps the same
/// model, URL and address, so a reload neither flaps nor re-gates it, and requests started on an
/// old snapshot still count toward the new one's in-flight numbers.
#[derive(Debug, Default)]
pub struct BackendHealth {
    healthy: AtomicBool,
    checked: AtomicBool,
    in_flight: AtomicU64,
    passes: AtomicU32,
    failures: AtomicU32,
    /// The backend's own `/v1/models` entry for this pool's model, from the last good probe.
    card: ArcSwapOption<serde_json::Value>,
    /// The last probe's time and result.
    last_probe: ArcSwapOption<ProbeRecord>,
    /// The last `/metrics` load report (`load_aware`).
    load: ArcSwapOption<LoadSample>,
    /// Prompt tokens this gateway sent that the backend has not prefilled yet (`cache_aware`):
    /// added at the pick, removed at the first response byte or when the request ends.
    prefill: AtomicU64,
    /// Requests of this gateway in flight there without a response byte yet (waiting or in
    /// prefill on the backend).
    awaiting: AtomicU64,
    /// What the `cache_aware` index believes the backend's prefix cache has churned through.
    cache: CacheClock,
    /// Prompts `cache_aware` sent here that no backend had any of (cold picks), lifted to stay
    /// within a round of the others (see `cache_aware`'s module doc).
    cold_picks: AtomicU64,
    /// Time to first token of this gateway's streamed requests there (`load_aware`).
    ttfb: TtfbAverage,
}

/// A backend's own load, from its vLLM `/metrics`.
#[derive(Debug, Clone)]
pub struct LoadSample {
    pub running: f64,
    pub waiting: f64,
    pub kv_cache_usage: Option<f64>,
    pub at: std::time::Instant,
    /// This gateway's in-flight count to it when the report arrived.
    pub local_at_report: u64,
    /// Of those, the ones without a response byte yet.
    pub awaiting_at_report: u64,
}

/// A backend's load as vLLM's `/metrics` last reported it, beyond this gateway's own requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported {
    /// Requests in vLLM's waiting queue that are not this gateway's.
    pub others_waiting: f64,
    /// Requests running or waiting there that are not this gateway's, and all of them.
    pub others: f64,
    pub total: f64,
    /// vLLM's KV-cache use, 0 to 1.
    pub kv_cache_usage: f64,
}

/// One probe's outcome, for `/status`.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    /// RFC 3339 time the probe finished.
    pub at: String,
    pub ok: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: f64,
}

/// Live state of one backend within one pool. Health is per (model, backend): the same URL in
/// two pools has two independent states, because it may serve one model and not the other.
#[derive(Debug)]
pub struct BackendState {
    pub config: BackendConfig,
    /// Pre-built peer (address + connect timeout); the request path only clones it.
    pub peer: HttpPeer,
    /// `peer.reuse_hash()`, computed once: the key of this backend's idle upstream connections.
    pub reuse_key: u64,
    /// Pre-resolved metric handles of this (model, backend).
    pub metrics: Arc<BackendMetrics>,
    /// This backend's id in the `cache_aware` prefix index: a hash of its URL and address, so
    /// it is the same across reloads and on every replica.
    pub cache_id: u64,
    live: Arc<BackendHealth>,
    /// The pool's queue signal, when the pool limits concurrency.
    released: Option<Arc<tokio::sync::Notify>>,
}

impl BackendState {
    /// A backend with fresh state: unhealthy (gated) until its first passing probe.
    fn new(
        model: &str,
        config: BackendConfig,
        timeouts: &Timeouts,
        live: Option<Arc<BackendHealth>>,
        metrics: Option<Arc<BackendMetrics>>,
    ) -> Self {
        let mut peer = HttpPeer::new(config.addr, false, String::new());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.total_connection_timeout = Some(timeouts.connect);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_POOL);
        let metrics = metrics.unwrap_or_else(|| Arc::new(BackendMetrics::new(model, &config.name)));
        let cache_id = select::key_hash(format!("{}|{}", config.url, config.addr).as_bytes());
        BackendState {
            config,
            cache_id,
            reuse_key: pingora_core::upstreams::peer::Peer::reuse_hash(&peer),
            peer,
            metrics,
            live: live.unwrap_or_default(),
            released: None,
        }
    }

    /// The shared live state (for carrying it into the next snapshot).
    pub fn live(&self) -> &Arc<BackendHealth> {
        &self.live
    }

    /// Whether the last probes passed (per the thresholds).
    pub fn is_healthy(&self) -> bool {
        self.live.healthy.load(Ordering::Acquire)
    }

    /// Healthy and not draining: may get new requests.
    pub fn is_usable(&self) -> bool {
        !self.config.drain && self.is_healthy()
    }

    /// Whether at least one probe has completed.
    pub fn is_checked(&self) -> bool {
        self.live.checked.load(Ordering::Acquire)
    }

    /// Publish a health decision (control plane).
    pub fn set_health(&self, healthy: bool) {
        self.live.healthy.store(healthy, Ordering::Release);
        self.live.checked.store(true, Ordering::Release);
    }

    /// Count a probe result; returns the (passes, failures) streak after it (control plane).
    pub fn record_probe(&self, passed: bool) -> (u32, u32) {
        let (grow, reset) = if passed {
            (&self.live.passes, &self.live.failures)
        } else {
            (&self.live.failures, &self.live.passes)
        };
        reset.store(0, Ordering::Relaxed);
        let n = grow.load(Ordering::Relaxed).saturating_add(1);
        grow.store(n, Ordering::Relaxed);
        if passed {
            (n, 0)
        } else {
            (0, n)
        }
    }

    /// Publish the backend-reported model card (control plane).
    pub fn set_card(&self, card: Option<serde_json::Value>) {
        self.live.card.store(card.map(Arc::new));
    }

    /// Publish the last probe's outcome (control plane).
    pub fn set_last_probe(&self, record: ProbeRecord) {
        self.live.last_probe.store(Some(Arc::new(record)));
    }

    /// The last probe's outcome, if any.
    pub fn last_probe(&self) -> Option<Arc<ProbeRecord>> {
        self.live.last_probe.load_full()
    }

    /// The backend-reported model card, if a probe has seen one.
    pub fn card(&self) -> Option<Arc<serde_json::Value>> {
        self.live.card.load_full()
    }

    /// Requests currently proxied to this backend through this gateway.
    pub fn in_flight(&self) -> u64 {
        self.live.in_flight.load(Ordering::Relaxed)
    }

    /// Count a request as in flight until the guard drops (including on error and cancel),
    /// unless that would exceed `max_in_flight` (checked and counted in one atomic step).
    pub fn try_track(&self) -> Option<InFlightGuard> {
        match self.config.max_in_flight {
            None => {
                self.live.in_flight.fetch_add(1, Ordering::AcqRel);
            }
            Some(max) => {
                let max = u64::from(max);
                self.live
                    .in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max).then_some(n + 1)
                    })
                    .ok()?;
            }
        }
        Some(InFlightGuard::new(&self.live, self.released.clone()))
    }

    /// Count a request as in flight whatever the limit (tests, benches).
    pub fn track(&self) -> InFlightGuard {
        self.live.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard::new(&self.live, self.released.clone())
    }

    /// Requests of this gateway there without a response byte yet.
    pub fn awaiting(&self) -> u64 {
        self.live.awaiting.load(Ordering::Relaxed)
    }

    /// Prompt tokens this gateway sent that the backend has not prefilled yet.
    pub fn prefill_backlog(&self) -> u64 {
        self.live.prefill.load(Ordering::Relaxed)
    }

    /// Cold `cache_aware` picks sent here (new prefixes), as lifted by [`Self::lift_cold_picks`].
    pub fn cold_picks(&self) -> u64 {
        self.live.cold_picks.load(Ordering::Relaxed)
    }

    /// Raise the cold-pick count to at least `floor` (a backend back after an outage, or new,
    /// takes at most a round of new prefixes more than the others, not its whole deficit).
    pub fn lift_cold_picks(&self, floor: u64) {
        self.live.cold_picks.fetch_max(floor, Ordering::Relaxed);
    }

    /// Time to first token of this gateway's streamed requests there, averaged.
    pub fn ttfb(&self) -> &TtfbAverage {
        &self.live.ttfb
    }

    /// The backend's prefix-cache clock (`cache_aware`).
    pub fn cache_clock(&self) -> &CacheClock {
        &self.live.cache
    }

    /// Below `max_in_flight` (always, without a limit).
    pub fn has_capacity(&self) -> bool {
        self.config
            .max_in_flight
            .is_none_or(|m| self.in_flight() < u64::from(m))
    }

    /// Usable and below its limit: may be picked for a new request.
    pub fn is_eligible(&self) -> bool {
        self.is_usable() && self.has_capacity()
    }

    /// Publish a `/metrics` load report (control plane).
    pub fn set_load(&self, running: f64, waiting: f64, kv_cache_usage: Option<f64>) {
        self.live.load.store(Some(Arc::new(LoadSample {
            running,
            waiting,
            kv_cache_usage,
            at: std::time::Instant::now(),
            local_at_report: self.in_flight(),
            awaiting_at_report: self.awaiting(),
        })));
    }

    /// The last load report, if any.
    pub fn load(&self) -> Option<Arc<LoadSample>> {
        self.live.load.load_full()
    }

    /// What vLLM's last report, if younger than `stale_after`, adds to this gateway's own view
    /// of the backend (`cache_aware`): the requests waiting, and running or waiting, that are
    /// not this gateway's (as of the report), all of them, and the KV-cache use. Zero without a
    /// fresh report.
    pub fn reported_at(&self, now: std::time::Instant, stale_after: Duration) -> Reported {
        self.with_fresh_report(now, stale_after, |r| Reported {
            others_waiting: (r.waiting - r.awaiting_at_report as f64).max(0.0),
            others: (r.running + r.waiting - r.local_at_report as f64).max(0.0),
            total: r.running + r.waiting,
            kv_cache_usage: r.kv_cache_usage.unwrap_or(0.0),
        })
        .unwrap_or_default()
    }

    /// `f` of the last load report, if there is one no older than `stale_after` at `now`
    /// (borrowed from the swap, no reference count taken).
    fn with_fresh_report<T>(
        &self,
        now: std::time::Instant,
        stale_after: Duration,
        f: impl FnOnce(&LoadSample) -> T,
    ) -> Option<T> {
        let g = self.live.load.load();
        let r = g.as_deref()?;
        (now.saturating_duration_since(r.at) <= stale_after).then(|| f(r))
    }

    /// `load_aware` score (lower is better), `None` when the report is older than
    /// `stale_after` or missing: the load once this request is added, times `slowness` (how
    /// much slower than the fastest this backend answers its first tokens, at least 1), per
    /// unit of weight.
    ///
    /// vLLM's running + 8 × waiting as of the report, less this gateway's own share of it then,
    /// is the other replicas' load; this gateway's own share is counted now, fresh: its
    /// requests in flight there, each without a response byte yet (waiting or in prefill, like
    /// vLLM's waiting) weighing [`select::AWAITING_WEIGHT`], as does the new request. A penalty
    /// is added as the KV cache nears full (preemption ahead). Counting its own requests from
    /// the report instead (stale by up to a poll interval) sent bursts to whichever backend
    /// looked idlest when the report was taken, and kept the score of a backend whose requests
    /// had since finished high. Weighing by slowness, a backend that prefills twice as slowly
    /// takes a request only when the others hold 1.6 times its load (the slow server of the
    /// simulated fleet, loadtest/ROUTING.md). `now` is read once per pick by the caller (a clock
    /// read per backend costs more than the rest of the score).
    pub fn load_score_at(
        &self,
        now: std::time::Instant,
        stale_after: Duration,
        slowness: f64,
    ) -> Option<f64> {
        let weight = select::AWAITING_WEIGHT as f64;
        let ours =
            |in_flight: u64, awaiting: u64| in_flight as f64 + (weight - 1.0) * awaiting as f64;
        let (others, kv) = self.with_fresh_report(now, stale_after, |r| {
            let ours_then = ours(r.local_at_report, r.awaiting_at_report);
            let others = (r.running + weight * r.waiting - ours_then).max(0.0);
            (others, r.kv_cache_usage.unwrap_or(0.0))
        })?;
        let ours_now = ours(self.in_flight(), self.awaiting());
        let kv_penalty = ((kv - 0.9).max(0.0) / 0.1) * 8.0;
        let load = others + ours_now + kv_penalty + weight;
        Some(load * slowness / f64::from(self.config.weight.max(1)))
    }
}

/// Decrements the in-flight count of a backend on drop, and wakes one request queued for a
/// free slot of its pool.
#[derive(Debug)]
pub struct InFlightGuard {
    live: Arc<BackendHealth>,
    released: Option<Arc<tokio::sync::Notify>>,
    /// Prompt tokens counted in the backend's prefill backlog for this request.
    prefill: u64,
    /// Counted in the backend's `awaiting` (no response byte yet).
    awaiting: bool,
    /// When the request was sent there, if its time to first token is wanted
    /// ([`time_first_token`](Self::time_first_token)).
    since: Option<std::time::Instant>,
}

impl InFlightGuard {
    /// Counts an in-flight request (already added to `in_flight`) as awaiting its first byte.
    fn new(live: &Arc<BackendHealth>, released: Option<Arc<tokio::sync::Notify>>) -> Self {
        live.awaiting.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            live: Arc::clone(live),
            released,
            prefill: 0,
            awaiting: true,
            since: None,
        }
    }

    /// Counts `tokens` in the backend's prefill backlog until [`first_byte`](Self::first_byte)
    /// or the drop.
    pub fn add_prefill(&mut self, tokens: u64) {
        self.live.prefill.fetch_add(tokens, Ordering::Relaxed);
        self.prefill += tokens;
    }

    /// Times this request's first token from now (`load_aware` weighs backends by it; other
    /// policies spare the clock read).
    fn time_first_token(&mut self) {
        self.since = Some(std::time::Instant::now());
    }

    /// A streamed response's first token arrived at `now`: one sample of the backend's time to
    /// first token, if the request is timed. (Not for a whole response in one piece: its first
    /// byte is its last.)
    pub fn first_token(&self, now: std::time::Instant) {
        if let Some(since) = self.since {
            self.live
                .ttfb
                .observe(now.saturating_duration_since(since), now);
        }
    }

    /// The backend answered its first byte: the request left its queue and its prompt is
    /// prefilled. Idempotent.
    pub fn first_byte(&mut self) {
        if self.prefill > 0 {
            self.live.prefill.fetch_sub(self.prefill, Ordering::Relaxed);
            self.prefill = 0;
        }
        if std::mem::take(&mut self.awaiting) {
            self.live.awaiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.first_byte();
        self.live.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(n) = &self.released {
            n.notify_one();
        }
    }
}

/// The lowest time-to-first-token average among the eligible backends, 1 s when none has one
/// yet (every backend then weighs the same).
fn fastest_ttfb(backends: &[Arc<BackendState>], eligible: impl Fn(usize) -> bool) -> f64 {
    (0..backends.len())
        .filter(|&i| eligible(i))
        .filter_map(|i| backends[i].ttfb().raw())
        .min_by(f64::total_cmp)
        .unwrap_or(1.0)
}

/// What a request offers for sticky picks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Affinity<'a> {
    /// Hash of the `consistent_hash` key.
    pub key: Option<u64>,
    /// The prompt's blocks (`cache_aware`).
    pub prompt: Option<&'a PromptBlocks>,
}

/// One pick: the backend, and for `cache_aware` what it decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub index: usize,
    pub cache: Option<Choice>,
}

/// The `cache_aware` index of a pool: the old pool's when its size is unchanged (entries carry
/// over a reload), else a new one sized for twice what the backends' caches hold, and at least
/// twice the default (a `kv_cache_tokens` set too low is learnt past, and the table must
/// remember that far).
fn prefix_index(config: &PoolConfig, old: Option<&Pool>) -> Arc<PrefixIndex> {
    let default = DEFAULT_KV_CACHE_TOKENS.div_ceil(block_tokens(&config.lb.cache));
    let per_backend = cache_blocks(config).max(default) as usize;
    let entries = (2 * per_backend * config.backends.len().max(1)).clamp(4096, MAX_INDEX_ENTRIES);
    let want = PrefixIndex::new(entries).capacity();
    match old.and_then(|o| o.prefix.as_ref()) {
        Some(index) if index.capacity() == want => Arc::clone(index),
        _ => Arc::new(PrefixIndex::new(entries)),
    }
}

/// Most `cache_aware` index entries per pool (16 bytes each: 256 MiB).
pub const MAX_INDEX_ENTRIES: usize = 1 << 24;

/// A backend's KV cache in index blocks, from the configured (or default) token count.
fn cache_blocks(config: &PoolConfig) -> u64 {
    let tokens = config
        .lb
        .cache
        .kv_cache_tokens
        .unwrap_or(DEFAULT_KV_CACHE_TOKENS);
    tokens.div_ceil(block_tokens(&config.lb.cache))
}

/// Estimated tokens per index block.
fn block_tokens(cache: &CacheAwareOptions) -> u64 {
    (cache.block_bytes / super::prefix::BYTES_PER_TOKEN).max(1) as u64
}

/// Live, pool-wide state carried across reloads by model name: the round-robin cursor and the
/// backpressure queue.
#[derive(Debug, Default)]
pub struct PoolLive {
    cursor: AtomicUsize,
    /// Requests waiting for a free slot.
    pub queued: AtomicUsize,
    /// Notified once per finished request when the pool limits concurrency.
    pub released: Arc<tokio::sync::Notify>,
    /// Shadow copies of this pool's requests in flight.
    pub shadows: AtomicUsize,
}

/// One model's pool.
pub struct Pool {
    pub name: String,
    pub policy: Policy,
    pub lb: LbOptions,
    pub timeouts: Timeouts,
    pub retries: Retries,
    pub health: HealthCheck,
    pub backends: Vec<Arc<BackendState>>,
    /// Pre-resolved model-level metric handles.
    pub metrics: Arc<ModelMetrics>,
    /// The id the backends expect in `model`, when it differs from `name`.
    pub served_model_name: Option<String>,
    /// Queue bound and wait when every backend is at `max_in_flight`.
    pub max_queue: usize,
    pub queue_timeout: Duration,
    /// Whether any backend has `max_in_flight`.
    pub limited: bool,
    pub canary: Option<Canary>,
    pub shadow: Option<Shadow>,
    pub live: Arc<PoolLive>,
    /// `cache_aware`: which backend was sent which prompt blocks (kept across reloads).
    pub prefix: Option<Arc<PrefixIndex>>,
    /// Prefill/decode disaggregation: this pool is the decode side, and this the prefill side
    /// (its own backends, policy and live state; same name, timeouts and health check).
    pub prefill: Option<Arc<Pool>>,
    /// Smooth weighted round-robin order.
    sequence: Vec<usize>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("backends", &self.backends.len())
            .finish()
    }
}

impl Pool {
    /// Build a pool from its validated config; every backend starts gated.
    pub fn build(config: &PoolConfig) -> Pool {
        Pool::build_from(config, None)
    }

    /// Build a pool, carrying from `old` (the same model's pool before a reload): the live
    /// state of each backend with the same URL and address (health, streaks, in-flight count,
    /// card), the metric handles of each backend with the same name, and the pool's cursor and
    /// queue. New backends start gated until their first passing probe.
    pub fn build_from(config: &PoolConfig, old: Option<&Pool>) -> Pool {
        let live_pool = old.map(|o| Arc::clone(&o.live)).unwrap_or_default();
        let limited = config.backends.iter().any(|b| b.max_in_flight.is_some());
        let backends: Vec<Arc<BackendState>> = config
            .backends
            .iter()
            .map(|b| {
                let live = old.and_then(|o| {
                    o.backends
                        .iter()
                        .find(|x| x.config.url == b.url && x.config.addr == b.addr)
                        .map(|x| Arc::clone(&x.live))
                });
                let metrics = old.and_then(|o| {
                    o.backends
                        .iter()
                        .find(|x| x.config.name == b.name)
                        .map(|x| Arc::clone(&x.metrics))
                });
                let mut state =
                    BackendState::new(&config.name, b.clone(), &config.timeouts, live, metrics);
                if limited {
                    state.released = Some(Arc::clone(&live_pool.released));
                }
                Arc::new(state)
            })
            .collect();
        let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
        let metrics = old
            .map(|o| Arc::clone(&o.metrics))
            .unwrap_or_else(|| Arc::new(ModelMetrics::new(&config.name)));
        let prefix = (config.policy == Policy::CacheAware).then(|| prefix_index(config, old));
        let prefill = config.prefill.as_deref().map(|side| {
            let old_side = old.and_then(|o| o.prefill.as_deref());
            Arc::new(Pool::build_from(side, old_side))
        });
        for b in &backends {
            match config.lb.cache.kv_cache_tokens {
                Some(_) => b.cache_clock().set_reported(cache_blocks(config)),
                // Until the backend reports its own (vLLM's cache_config_info).
                None => b
                    .cache_clock()
                    .set_reported_if_unknown(cache_blocks(config)),
            }
        }
        Pool {
            metrics,
            prefix,
            prefill,
            name: config.name.clone(),
            policy: config.policy,
            lb: config.lb.clone(),
            timeouts: config.timeouts,
            retries: config.retries,
            health: config.health.clone(),
            backends,
            served_model_name: config.served_model_name.clone(),
            max_queue: config.max_queue,
            queue_timeout: config.queue_timeout,
            limited,
            canary: config.canary.clone(),
            shadow: config.shadow.clone(),
            live: live_pool,
            sequence: select::weighted_sequence(&weights),
        }
    }

    /// Pick a backend per the policy among the eligible ones (healthy, not draining, below
    /// `max_in_flight`), skipping `exclude` (backends that already failed this request) while
    /// another eligible one exists. `key` is the sticky key's hash for `consistent_hash`;
    /// `first` is false for retries (they do not move the round-robin cursor).
    pub fn select(&self, exclude: &[usize], key: Option<u64>, first: bool) -> Option<usize> {
        let affinity = Affinity { key, prompt: None };
        self.choose(exclude, &affinity, first).map(|p| p.index)
    }

    /// [`select`](Self::select) with everything the request offers for affinity; for
    /// `cache_aware` the pick also says how much of the prompt it is believed to cache.
    pub fn choose(&self, exclude: &[usize], affinity: &Affinity<'_>, first: bool) -> Option<Pick> {
        let base = |i: usize| self.backends[i].is_eligible();
        self.pick(|i| base(i) && !exclude.contains(&i), affinity, first)
            .or_else(|| self.pick(base, affinity, first))
    }

    fn pick(
        &self,
        eligible: impl Fn(usize) -> bool + Copy,
        affinity: &Affinity<'_>,
        first: bool,
    ) -> Option<Pick> {
        let Affinity { key, prompt } = *affinity;
        let b = &self.backends;
        let index = match self.policy {
            Policy::RoundRobin => {
                select::round_robin(&self.sequence, &self.live.cursor, first, eligible)
            }
            Policy::Random => select::random(b, eligible),
            Policy::LeastConnections => select::least_connections(b, eligible),
            Policy::PowerOfTwo => select::power_of_two(b, eligible),
            Policy::LoadAware => {
                let (now, stale_after) = self.report_clock();
                let fastest = fastest_ttfb(b, eligible);
                select::load_aware(b, eligible, |s| {
                    let slowness = ttfb::slowness(s.ttfb().at(now, fastest), fastest);
                    s.load_score_at(now, stale_after, slowness)
                })
            }
            Policy::ConsistentHash => match key {
                Some(k) => select::consistent_hash(b, k, self.lb.bounded_load, eligible),
                // No key in this request: spread it by load instead.
                None => select::least_connections(b, eligible),
            },
            Policy::CacheAware => {
                let index = self.prefix.as_deref()?;
                // No prompt (embeddings, a body without messages): the shortest queue.
                let empty = PromptBlocks::default();
                let prompt = prompt.unwrap_or(&empty);
                let (now, stale_after) = self.report_clock();
                let reported = |i: usize| b[i].reported_at(now, stale_after);
                let choice = cache_aware::choose(
                    b,
                    eligible,
                    prompt,
                    index,
                    self.lb.cache.miss_cost,
                    reported,
                )?;
                return Some(Pick {
                    index: choice.index,
                    cache: Some(choice),
                });
            }
        }?;
        Some(Pick { index, cache: None })
    }

    /// The time to judge load reports by, read once per pick (a clock read per backend costs
    /// more than the rest of a score), and the age past which a report is stale.
    fn report_clock(&self) -> (std::time::Instant, Duration) {
        (std::time::Instant::now(), self.lb.load_poll * 3)
    }

    /// Once `pick` holds a slot (`guard`): `load_aware` times the request's first token;
    /// `cache_aware` records the prompt's blocks under the backend and counts its uncached
    /// tokens in the backend's prefill backlog until the first response byte.
    pub fn record_pick(&self, pick: &Pick, affinity: &Affinity<'_>, guard: &mut InFlightGuard) {
        if self.policy == Policy::LoadAware {
            guard.time_first_token();
        }
        let prompt = affinity.prompt;
        let (Some(choice), Some(index)) = (pick.cache, self.prefix.as_deref()) else {
            return;
        };
        let backend = &self.backends[choice.index];
        if let Some(p) = prompt {
            let new_blocks = choice.miss_tokens.div_ceil(p.block_tokens.max(1));
            index.record(
                &p.hashes,
                backend.cache_id,
                backend.cache_clock(),
                new_blocks,
            );
        }
        guard.add_prefill(choice.miss_tokens);
        if choice.reason == PickReason::Cold {
            backend.live.cold_picks.fetch_add(1, Ordering::Relaxed);
        }
        let tokens = prompt.map_or(0, |p| p.tokens);
        self.metrics.cache_pick(
            choice.reason.as_str(),
            tokens,
            tokens.saturating_sub(choice.miss_tokens),
        );
    }

    /// After a `cache_aware` response, what its `usage` says was cached corrects the picked
    /// backend's cache size ([`cache_aware::lesson`], [`CacheClock::learn`]). `estimated`: the
    /// prompt's tokens as estimated at the pick. Not on a disaggregated model's decode side,
    /// whose cached tokens count what the prefill side sent it.
    pub fn learn_cache(&self, choice: &Choice, estimated: u64, prompt: u64, cached: u64) {
        if !self.lb.cache.learn_kv_cache || self.prefill.is_some() {
            return;
        }
        let Some(backend) = self.backends.get(choice.index) else {
            return;
        };
        let block_tokens = block_tokens(&self.lb.cache);
        if let Some((age, cached)) =
            cache_aware::lesson(choice, block_tokens, estimated, prompt, cached)
        {
            backend.cache_clock().learn(age, cached);
        }
    }

    /// `cache_aware`: `backend`'s KV-cache size in tokens as the index believes it, and as
    /// reported (or configured), if it was.
    pub fn kv_cache_tokens(&self, backend: &BackendState) -> (u64, Option<u64>) {
        let tokens = |blocks: u32| u64::from(blocks) * block_tokens(&self.lb.cache);
        let clock = backend.cache_clock();
        (tokens(clock.capacity()), clock.reported().map(tokens))
    }

    /// `cache_aware` without a configured `kv_cache_tokens`: `backend` reports its KV cache
    /// holds `tokens` (vLLM's `cache_config_info`).
    pub fn report_kv_cache_tokens(&self, backend: &BackendState, tokens: u64) {
        if self.prefix.is_some() && self.lb.cache.kv_cache_tokens.is_none() {
            let blocks = tokens.div_ceil(block_tokens(&self.lb.cache));
            backend.cache_clock().set_reported(blocks);
        }
    }

    /// This pool and, for a disaggregated model, its prefill side.
    pub fn sides(&self) -> impl Iterator<Item = &Pool> {
        std::iter::once(self).chain(self.prefill.as_deref())
    }

    /// `prefill` or `decode` for a disaggregated model's sides, `None` for a plain pool.
    pub fn side_of(&self, pool: &Pool) -> Option<&'static str> {
        self.prefill.as_ref()?;
        Some(if std::ptr::eq(self, pool) {
            "decode"
        } else {
            "prefill"
        })
    }

    /// Whether any backend may take a new request right now (healthy, not draining).
    pub fn has_healthy(&self) -> bool {
        self.backends.iter().any(|b| b.is_usable())
    }

    /// Whether every backend has had at least one probe.
    pub fn is_checked(&self) -> bool {
        self.backends.iter().all(|b| b.is_checked())
    }
}
