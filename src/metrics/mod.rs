//! Prometheus metrics (prometheus 0.14, the version Pingora 0.9 uses), served by the admin
//! listener at `GET /metrics`.
//!
//! One process-wide [`Registry`] holds every family. The request path never looks a label set
//! up by hashing strings: each pool and backend of a snapshot carries pre-resolved handles
//! ([`handles::ModelMetrics`], [`handles::BackendMetrics`]); series that depend on the request
//! (endpoint × status class, cut cause, retry cause) are resolved once on first use and cached
//! in the handle. Gauges that mirror live state (in-flight, health, config generation) are set
//! by admin at scrape time from the snapshot, so they never drift and removed backends vanish.
//! Imports nothing from the crate but `api` (endpoint labels).
//!
//! Labels are bounded: `model` is a configured model name, `__unknown__` (a name no pool
//! serves) or `__none__` (no model in the request); `backend` is a configured backend name or
//! `none`; `endpoint` is a known route ([`endpoint_label`]) or `other`; `status` is a class
//! (`2xx`…).

pub mod handles;
pub mod usage;

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use crate::api::{endpoint_index, endpoint_label, N_ENDPOINTS};

pub use handles::{BackendMetrics, ModelMetrics};

/// `model` label for a name no pool serves.
pub const UNKNOWN_MODEL: &str = "__unknown__";
/// `model` label for a request that names no model.
pub const NO_MODEL: &str = "__none__";
/// `backend` label when no backend was picked.
pub const NO_BACKEND: &str = "none";

/// Status classes, indexed by `status / 100 - 1`.
pub const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index of a status code's class (anything odd counts as 5xx).
pub fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 4,
    }
}

/// Why `cache_aware` picked a backend (label `reason` of `modelgate_cache_aware_picks_total`).
pub const PICK_REASONS: &[&str] = &["cold", "hit", "spill"];

/// Why a started response was cut (label `cause` of `modelgate_streams_cut_total`).
pub const CUT_CAUSES: &[&str] = &[
    "client_gone",
    "backend_error",
    "idle_timeout",
    "request_timeout",
];

/// Retry causes (label `cause` of `modelgate_upstream_retries_total`).
pub const RETRY_CAUSES: &[&str] = &["connection_failure", "timeout", "http_5xx", "http_429"];

/// Request and TTFB latencies: 5 ms to 10 min (a long generation).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];
/// Gaps between stream chunks: 1 ms to 30 s.
const GAP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Health probes: 1 ms to 5 s.
const PROBE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric family.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub ttfb: HistogramVec,
    pub chunk_gap: HistogramVec,
    pub streams_cut: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub attempts: IntCounterVec,
    pub retries: IntCounterVec,
    pub failovers: IntCounterVec,
    pub backend_healthy: IntGaugeVec,
    pub health_checks: IntCounterVec,
    pub health_check_duration: HistogramVec,
    pub gateway_errors: IntCounterVec,
    pub prompt_tokens: IntCounterVec,
    pub completion_tokens: IntCounterVec,
    pub cached_tokens: IntCounterVec,
    pub cache_picks: IntCounterVec,
    pub cache_pick_prompt_tokens: IntCounterVec,
    pub cache_pick_matched_tokens: IntCounterVec,
    pub prefill_backlog: IntGaugeVec,
    pub kv_cache_tokens: IntGaugeVec,
    pub prefix_index_entries: IntGaugeVec,
    pub config_generation: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_last_reload: Gauge,
    pub build_info: IntGaugeVec,
    pub shadow_requests: IntCounterVec,
    pub queued: IntGaugeVec,
    pub connections_rejected: IntCounterVec,
    pub open_connections: IntGauge,
    pub discovery_resolutions: IntCounterVec,
    pub discovery_addresses: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], b: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(b.to_vec()), labels)
        .expect("valid metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    /// Every definition below is static and registered once, so `expect` cannot fire.
    fn new() -> Metrics {
        let r = Registry::new();
        let mb = &["model", "backend"];
        let config_generation = IntGauge::new(
            "modelgate_config_generation",
            "Generation of the config in force (1 at start, +1 per applied reload).",
        )
        .expect("valid metric definition");
        r.register(Box::new(config_generation.clone()))
            .expect("metric registered once");
        let config_last_reload = Gauge::new(
            "modelgate_config_last_reload_timestamp_seconds",
            "Unix time of the last applied config (start or reload).",
        )
        .expect("valid metric definition");
        r.register(Box::new(config_last_reload.clone()))
            .expect("metric registered once");
        let open_connections = IntGauge::new(
            "modelgate_open_connections",
            "Client connections open on the public listener.",
        )
        .expect("valid metric definition");
        r.register(Box::new(open_connections.clone()))
            .expect("metric registered once");
        let m = Metrics {
            requests: counter(&r, "modelgate_requests_total", "Requests answered, by model, backend, normalised endpoint and status class.", &["model", "backend", "endpoint", "status"]),
            duration: histogram(&r, "modelgate_request_duration_seconds", "From the request's arrival to the response's last byte.", mb, LATENCY_BUCKETS),
            ttfb: histogram(&r, "modelgate_time_to_first_byte_seconds", "From the request's arrival to the first response body byte sent to the client (time to first token for streams).", mb, LATENCY_BUCKETS),
            chunk_gap: histogram(&r, "modelgate_stream_chunk_gap_seconds", "Gap between consecutive chunks of a streamed response.", mb, GAP_BUCKETS),
            streams_cut: counter(&r, "modelgate_streams_cut_total", "Responses cut after they started, by cause.", &["model", "backend", "cause"]),
            in_flight: gauge(&r, "modelgate_in_flight_requests", "Requests being served right now, per backend.", mb),
            attempts: counter(&r, "modelgate_upstream_attempts_total", "Upstream attempts (the first one and every retry).", mb),
            retries: counter(&r, "modelgate_upstream_retries_total", "Attempts that failed and were retried, by cause.", &["model", "cause"]),
            failovers: counter(&r, "modelgate_upstream_failovers_total", "Retries that went to a different backend than the failed attempt.", &["model"]),
            backend_healthy: gauge(&r, "modelgate_backend_healthy", "1 if the backend passes its health checks for this model, else 0.", mb),
            health_checks: counter(&r, "modelgate_health_checks_total", "Health probes by result (ok, fail).", &["model", "backend", "result"]),
            health_check_duration: histogram(&r, "modelgate_health_check_duration_seconds", "Health probe latency.", mb, PROBE_BUCKETS),
            gateway_errors: counter(&r, "modelgate_gateway_errors_total", "Error responses made by the gateway itself, by status and cause.", &["model", "status", "cause"]),
            prompt_tokens: counter(&r, "modelgate_prompt_tokens_total", "Prompt tokens reported by backends in `usage`.", &["model"]),
            completion_tokens: counter(&r, "modelgate_completion_tokens_total", "Completion tokens reported by backends in `usage`.", &["model"]),
            cached_tokens: counter(&r, "modelgate_prompt_cached_tokens_total", "Prompt tokens the backends reported served from their prefix cache (`usage.prompt_tokens_details.cached_tokens`).", &["model"]),
            cache_picks: counter(&r, "modelgate_cache_aware_picks_total", "cache_aware picks by reason: hit (the backend with the longest cached prefix), spill (another had a longer one but a longer queue), cold (none had any).", &["model", "reason"]),
            cache_pick_prompt_tokens: counter(&r, "modelgate_cache_aware_prompt_tokens_total", "Prompt tokens (estimated, 4 bytes each) of cache_aware picks.", &["model"]),
            cache_pick_matched_tokens: counter(&r, "modelgate_cache_aware_matched_tokens_total", "Of those, tokens the picked backend was believed to have cached: divided by the prompt tokens, the hit ratio the picks expected.", &["model"]),
            prefill_backlog: gauge(&r, "modelgate_backend_prefill_backlog_tokens", "cache_aware: prompt tokens sent to the backend, not cached there, and not answered yet.", mb),
            kv_cache_tokens: gauge(&r, "modelgate_backend_kv_cache_tokens", "cache_aware: the backend's KV-cache size as the prefix index believes it, in tokens (vLLM's report or the config, corrected by the cached tokens its responses report).", mb),
            prefix_index_entries: gauge(&r, "modelgate_cache_aware_index_entries", "cache_aware: entries in use in the model's prefix index (16 bytes each).", &["model"]),
            config_generation,
            config_reloads: counter(&r, "modelgate_config_reloads_total", "Reload attempts by result (ok, error).", &["result"]),
            config_last_reload,
            build_info: gauge(&r, "modelgate_build_info", "Always 1; the labels say which build runs.", &["version"]),
            shadow_requests: counter(&r, "modelgate_shadow_requests_total", "Shadow copies by target model and result (ok, error_status, failed, timeout, skipped).", &["model", "result"]),
            queued: gauge(&r, "modelgate_queued_requests", "Requests waiting for a free backend slot (max_in_flight), per model.", &["model"]),
            connections_rejected: counter(&r, "modelgate_connections_rejected_total", "Client connections ended by the gateway before a request was routed, by reason (header_timeout, header_too_large, too_many_headers, per_ip_limit, malformed).", &["reason"]),
            open_connections,
            discovery_resolutions: counter(&r, "modelgate_discovery_resolutions_total", "DNS resolutions of discover entries by result (ok, error, empty); error and empty keep the last good set.", &["model", "entry", "result"]),
            discovery_addresses: gauge(&r, "modelgate_discovery_addresses", "Addresses in a discover entry's last good set (its backends).", &["model", "entry"]),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Record a reload attempt (control plane).
pub fn record_reload(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    METRICS.config_reloads.with_label_values(&[result]).inc();
    if ok {
        METRICS.config_last_reload.set(unix_now());
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Count one resolution of a discover entry (control plane).
pub fn record_discovery(model: &str, entry: &str, result: &str) {
    METRICS
        .discovery_resolutions
        .with_label_values(&[model, entry, result])
        .inc();
}

/// Publish a discover entry's address count (control plane).
pub fn set_discovery_addresses(model: &str, entry: &str, n: usize) {
    METRICS
        .discovery_addresses
        .with_label_values(&[model, entry])
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// Drop the series of a discover entry a reload removed.
pub fn forget_discovery_entry(model: &str, entry: &str) {
    let _ = METRICS
        .discovery_addresses
        .remove_label_values(&[model, entry]);
    for result in ["ok", "error", "empty"] {
        let _ = METRICS
            .discovery_resolutions
            .remove_label_values(&[model, entry, result]);
    }
}

/// Drop every series of a (model, backend) that left for good (a discovered address that
/// was removed and has drained), so address churn does not grow the registry forever.
pub fn forget_backend(model: &str, backend: &str) {
    let m = &*METRICS;
    let mb = [model, backend];
    for i in 0..N_ENDPOINTS {
        for class in STATUS_CLASSES {
            let _ = m
                .requests
                .remove_label_values(&[model, backend, endpoint_label(i), class]);
        }
    }
    for cause in CUT_CAUSES {
        let _ = m.streams_cut.remove_label_values(&[model, backend, cause]);
    }
    for result in ["ok", "fail"] {
        let _ = m
            .health_checks
            .remove_label_values(&[model, backend, result]);
    }
    for h in [&m.duration, &m.ttfb, &m.chunk_gap, &m.health_check_duration] {
        let _ = h.remove_label_values(&mb);
    }
    let _ = m.attempts.remove_label_values(&mb);
}

/// Mark the config applied at start.
pub fn record_start() {
    METRICS.config_last_reload.set(unix_now());
}

/// Render every family in the Prometheus text format. The live gauges (in flight, health,
/// queue, generation) are set from the snapshot by the caller first (admin `/metrics`).
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_are_bounded() {
        assert_eq!(status_class(204), 1);
        assert_eq!(status_class(499), 3);
        assert_eq!(status_class(0), 4);
    }
}
