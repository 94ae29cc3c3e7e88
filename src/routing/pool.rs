//! One model's pool: its backends, policy, timeouts, retries, and per-backend live state.
//!
//! Built by the control plane and never mutated afterwards, except through the shared
//! [`BackendHealth`] (health, in-flight count, backend-reported model card), which the health
//! prober publishes lock-free and which outlives a reload for backends that stay. Selection runs on the request path: no locks, no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::selection::{Random, RoundRobin};
use pingora_load_balancing::{Backend, LoadBalancer};

use crate::config::{BackendConfig, HealthCheck, ModelConfig, Policy, Retries, Timeouts};
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
    /// Pre-resolved metric handles of this (model, backend).
    pub metrics: Arc<BackendMetrics>,
    live: Arc<BackendHealth>,
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
        BackendState {
            config,
            peer,
            metrics,
            live: live.unwrap_or_default(),
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

    /// Count a request as in flight until the guard drops (including on error and cancel).
    pub fn track(&self) -> InFlightGuard {
        self.live.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(&self.live))
    }
}

/// Decrements the in-flight count of a backend on drop.
#[derive(Debug)]
pub struct InFlightGuard(Arc<BackendHealth>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The selection algorithm, one pingora-load-balancing `LoadBalancer` per pool.
enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
}

/// One model's pool.
pub struct Pool {
    pub name: String,
    pub policy: Policy,
    pub timeouts: Timeouts,
    pub retries: Retries,
    pub health: HealthCheck,
    pub backends: Vec<Arc<BackendState>>,
    /// Pre-resolved model-level metric handles.
    pub metrics: Arc<ModelMetrics>,
    selector: Selector,
    by_addr: HashMap<SocketAddr, usize>,
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
    pub fn build(config: &ModelConfig) -> Pool {
        Pool::build_from(config, None)
    }

    /// Build a pool, carrying from `old` (the same model's pool before a reload): the live
    /// state of each backend with the same URL and address (health, streaks, in-flight count,
    /// card), and the metric handles of each backend with the same name. New backends start
    /// gated until their first passing probe.
    pub fn build_from(config: &ModelConfig, old: Option<&Pool>) -> Pool {
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
                Arc::new(BackendState::new(
                    &config.name,
                    b.clone(),
                    &config.timeouts,
                    live,
                    metrics,
                ))
            })
            .collect();
        let by_addr = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.config.addr, i))
            .collect();
        let set = config
            .backends
            .iter()
            .map(|b| Backend {
                addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(b.addr),
                weight: b.weight as usize,
                ext: Default::default(),
            })
            .collect();
        let selector = match config.policy {
            Policy::RoundRobin => Selector::RoundRobin(static_lb(set)),
            Policy::Random => Selector::Random(static_lb(set)),
        };
        let metrics = old
            .map(|o| Arc::clone(&o.metrics))
            .unwrap_or_else(|| Arc::new(ModelMetrics::new(&config.name)));
        Pool {
            metrics,
            name: config.name.clone(),
            policy: config.policy,
            timeouts: config.timeouts,
            retries: config.retries,
            health: config.health.clone(),
            backends,
            selector,
            by_addr,
        }
    }

    /// Pick a healthy backend per the policy, skipping `exclude` (backends that already failed
    /// this request) while another healthy one exists. Returns an index into `backends`.
    pub fn select(&self, exclude: &[usize]) -> Option<usize> {
        self.pick(|i, b| b.is_usable() && !exclude.contains(&i))
            .or_else(|| self.pick(|_, b| b.is_usable()))
    }

    /// Whether any backend may take a new request right now (healthy, not draining).
    pub fn has_healthy(&self) -> bool {
        self.backends.iter().any(|b| b.is_usable())
    }

    /// Whether every backend has had at least one probe.
    pub fn is_checked(&self) -> bool {
        self.backends.iter().all(|b| b.is_checked())
    }

    fn pick(&self, accept: impl Fn(usize, &BackendState) -> bool) -> Option<usize> {
        let filter = |b: &Backend, _lb_health: bool| {
            // The crate's own health is unused: ours is per (model, backend) and gated.
            let Some(addr) = b.addr.as_inet() else {
                return false;
            };
            self.by_addr
                .get(addr)
                .is_some_and(|&i| accept(i, &self.backends[i]))
        };
        let n = self.backends.len() * 4 + 8;
        let picked = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(b"", n, filter),
            Selector::Random(lb) => lb.select_with(b"", n, filter),
        };
        picked.and_then(|b| b.addr.as_inet().and_then(|a| self.by_addr.get(a).copied()))
    }
}

fn static_lb<S>(set: std::collections::BTreeSet<Backend>) -> LoadBalancer<S>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    let discovery = pingora_load_balancing::discovery::Static::new(set);
    let lb = LoadBalancer::from_backends(pingora_load_balancing::Backends::new(discovery));
    // Static discovery completes immediately and cannot fail; if it ever did, the selector
    // would be empty and every request would get a clean 503 instead of a crash.
    let _ = futures_util::FutureExt::now_or_never(lb.update());
    lb
}
