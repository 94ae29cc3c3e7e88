//! Pre-resolved metric handles carried by pools and backends, so the request path increments
//! atomics instead of hashing label values.
//!
//! Series whose labels depend on the request are created on first use and cached in a
//! `OnceLock`; a configured model with 1,000 backends does not export thousands of zero series.

use std::sync::OnceLock;

use prometheus::{Histogram, IntCounter};

use super::{endpoint_label, CUT_CAUSES, METRICS, N_ENDPOINTS, RETRY_CAUSES, STATUS_CLASSES};

const N_CLASSES: usize = 5;

/// `requests_total` series of one (model, backend), by endpoint × status class.
struct RequestCounters {
    model: String,
    backend: String,
    cells: Vec<[OnceLock<IntCounter>; N_CLASSES]>,
}

impl RequestCounters {
    fn new(model: &str, backend: &str) -> Self {
        RequestCounters {
            model: model.to_string(),
            backend: backend.to_string(),
            cells: (0..N_ENDPOINTS).map(|_| Default::default()).collect(),
        }
    }

    fn inc(&self, endpoint: usize, class: usize) {
        let Some(cell) = self.cells.get(endpoint).and_then(|row| row.get(class)) else {
            return;
        };
        cell.get_or_init(|| {
            METRICS.requests.with_label_values(&[
                &self.model,
                &self.backend,
                endpoint_label(endpoint),
                STATUS_CLASSES[class],
            ])
        })
        .inc();
    }
}

/// Handles of one (model, backend).
pub struct BackendMetrics {
    requests: RequestCounters,
    pub duration: Histogram,
    pub ttfb: Histogram,
    pub chunk_gap: Histogram,
    pub attempts: IntCounter,
    pub probe_ok: IntCounter,
    pub probe_fail: IntCounter,
    pub probe_duration: Histogram,
    cut: [OnceLock<IntCounter>; 4],
}

impl BackendMetrics {
    pub fn new(model: &str, backend: &str) -> Self {
        let m = &*METRICS;
        let mb = [model, backend];
        BackendMetrics {
            requests: RequestCounters::new(model, backend),
            duration: m.duration.with_label_values(&mb),
            ttfb: m.ttfb.with_label_values(&mb),
            chunk_gap: m.chunk_gap.with_label_values(&mb),
            attempts: m.attempts.with_label_values(&mb),
            probe_ok: m.health_checks.with_label_values(&[model, backend, "ok"]),
            probe_fail: m.health_checks.with_label_values(&[model, backend, "fail"]),
            probe_duration: m.health_check_duration.with_label_values(&mb),
            cut: Default::default(),
        }
    }

    /// Count one answered request.
    pub fn request(&self, endpoint: usize, class: usize) {
        self.requests.inc(endpoint, class);
    }

    /// Count a response cut after it started (`cause` from [`CUT_CAUSES`]).
    pub fn cut(&self, cause: &str) {
        if let Some(i) = CUT_CAUSES.iter().position(|c| *c == cause) {
            self.cut[i]
                .get_or_init(|| {
                    METRICS.streams_cut.with_label_values(&[
                        &self.requests.model,
                        &self.requests.backend,
                        CUT_CAUSES[i],
                    ])
                })
                .inc();
        }
    }
}

impl std::fmt::Debug for BackendMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendMetrics")
    }
}

/// Handles of one model (pool-wide, or the `__unknown__` / `__none__` buckets).
pub struct ModelMetrics {
    /// `requests_total` with `backend="none"` (answered without reaching a backend).
    requests: RequestCounters,
    pub model: String,
    pub prompt_tokens: IntCounter,
    pub completion_tokens: IntCounter,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: IntCounter,
    pub failovers: IntCounter,
    retries: [OnceLock<IntCounter>; 4],
    /// `cache_aware` picks by reason ([`super::PICK_REASONS`]), resolved on first use.
    cache_picks: [OnceLock<IntCounter>; 3],
    cache_prompt_tokens: OnceLock<IntCounter>,
    cache_matched_tokens: OnceLock<IntCounter>,
}

impl ModelMetrics {
    pub fn new(model: &str) -> Self {
        let m = &*METRICS;
        ModelMetrics {
            requests: RequestCounters::new(model, super::NO_BACKEND),
            model: model.to_string(),
            prompt_tokens: m.prompt_tokens.with_label_values(&[model]),
            completion_tokens: m.completion_tokens.with_label_values(&[model]),
            cached_tokens: m.cached_tokens.with_label_values(&[model]),
            failovers: m.failovers.with_label_values(&[model]),
            retries: Default::default(),
            cache_picks: Default::default(),
            cache_prompt_tokens: OnceLock::new(),
            cache_matched_tokens: OnceLock::new(),
        }
    }

    /// `cache_aware` picks so far by reason, in [`super::PICK_REASONS`] order (`/status`).
    pub fn cache_pick_counts(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.cache_picks[i].get().map_or(0, IntCounter::get))
    }

    /// Count a `cache_aware` pick: its reason (from [`super::PICK_REASONS`]), the prompt's
    /// tokens and those the pick was believed to have cached.
    pub fn cache_pick(&self, reason: &str, prompt_tokens: u64, matched_tokens: u64) {
        let m = &*METRICS;
        if let Some(i) = super::PICK_REASONS.iter().position(|r| *r == reason) {
            self.cache_picks[i]
                .get_or_init(|| m.cache_picks.with_label_values(&[&self.model, reason]))
                .inc();
        }
        self.cache_prompt_tokens
            .get_or_init(|| m.cache_pick_prompt_tokens.with_label_values(&[&self.model]))
            .inc_by(prompt_tokens);
        self.cache_matched_tokens
            .get_or_init(|| {
                m.cache_pick_matched_tokens
                    .with_label_values(&[&self.model])
            })
            .inc_by(matched_tokens);
    }

    /// Count a request answered without a backend (gateway error, `/v1/models`).
    pub fn request(&self, endpoint: usize, class: usize) {
        self.requests.inc(endpoint, class);
    }

    /// Count a retry by cause (from [`RETRY_CAUSES`]).
    pub fn retry(&self, cause: &str) {
        if let Some(i) = RETRY_CAUSES.iter().position(|c| *c == cause) {
            self.retries[i]
                .get_or_init(|| {
                    METRICS
                        .retries
                        .with_label_values(&[&self.model, RETRY_CAUSES[i]])
                })
                .inc();
        }
    }

    /// Count a gateway-made error (rare path: resolved per call).
    pub fn gateway_error(&self, status: u16, cause: &str) {
        let status = status.to_string();
        METRICS
            .gateway_errors
            .with_label_values(&[&self.model, status.as_str(), cause])
            .inc();
    }
}

impl std::fmt::Debug for ModelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelMetrics({})", self.model)
    }
}

/// Handles for requests that name no configured model.
pub struct Fallback {
    pub unknown: ModelMetrics,
    pub none: ModelMetrics,
}

/// The `__unknown__` and `__none__` model handles.
pub static FALLBACK: std::sync::LazyLock<Fallback> = std::sync::LazyLock::new(|| Fallback {
    unknown: ModelMetrics::new(super::UNKNOWN_MODEL),
    none: ModelMetrics::new(super::NO_MODEL),
});
