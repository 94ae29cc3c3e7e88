//! Active health checks that prove identity (control plane).
//!
//! Every (model, backend) is probed with `GET <health_check.path>` (default `/v1/models`). A
//! backend is healthy only if it answers 200 with JSON whose `data` lists the pool's model id: a
//! server on the right port serving the wrong model is unhealthy. Thresholds decide flips; the
//! very first passing probe opens the gate at once so startup is fast, and nothing gets traffic
//! before it. Results are published through the atomics on [`BackendState`]; the request path
//! never waits for a probe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::connectors::http::v1::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use crate::oneshot::{self, OneShotError};
use crate::routing::{BackendState, Pool, ProbeRecord};
use crate::state::Publisher;

/// Cap on a probe's response body: a `/v1/models` list is a few KiB.
const MAX_PROBE_BODY: usize = 1024 * 1024;

/// Why a probe failed (logged; never sent to clients).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Io(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered invalid JSON: {0}")]
    Json(String),
    #[error("serves {served:?}, not {expected:?}")]
    WrongModel {
        expected: String,
        served: Vec<String>,
    },
}

/// Result of one probe: the backend's own model card on success.
pub type ProbeResult = Result<Option<serde_json::Value>, ProbeError>;

/// Probe one backend once: GET the health path, check it lists `model`.
pub async fn probe(
    connector: &Connector,
    backend: &BackendState,
    path: &str,
    model: &str,
    timeout: Duration,
) -> ProbeResult {
    let full_path = format!("{}{}", backend.config.path_prefix, path);
    let mut req = RequestHeader::build("GET", full_path.as_bytes(), Some(3))
        .map_err(|e| ProbeError::Io(e.to_string()))?;
    let _ = req.insert_header("host", backend.config.authority.as_str());
    let _ = req.insert_header("user-agent", "modelgate-health");
    if let Some(key) = &backend.config.api_key {
        // vLLM started with --api-key wants it on /v1/models too.
        let _ = req.insert_header("authorization", format!("Bearer {key}"));
    }
    let _ = req.insert_header("accept", "application/json");
    let keep = oneshot::Body::Keep(MAX_PROBE_BODY);
    let answer = oneshot::exchange(connector, &backend.peer, req, None, keep, timeout)
        .await
        .map_err(|e| match e {
            OneShotError::Connect(e) => ProbeError::Connect(e),
            OneShotError::Timeout(t) => ProbeError::Timeout(t),
            OneShotError::TooLarge(_) => ProbeError::Json("body larger than 1 MiB".into()),
            other => ProbeError::Io(other.to_string()),
        })?;
    if answer.status != 200 {
        return Err(ProbeError::Status(answer.status));
    }
    if path != crate::config::DEFAULT_HEALTH_PATH {
        // A custom path (e.g. vLLM's /health) proves liveness only.
        return Ok(None);
    }
    model_card(&answer.body, model)
}

/// Find `model` in an OpenAI model list; the entry is the backend's card for it.
pub fn model_card(body: &[u8], model: &str) -> ProbeResult {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProbeError::Json(e.to_string()))?;
    let data = v
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or_else(|| ProbeError::Json("no `data` list".into()))?;
    if let Some(card) = data
        .iter()
        .find(|e| e.get("id").and_then(|i| i.as_str()) == Some(model))
    {
        return Ok(Some(card.clone()));
    }
    Err(ProbeError::WrongModel {
        expected: model.to_string(),
        served: data
            .iter()
            .filter_map(|e| e.get("id").and_then(|i| i.as_str()).map(String::from))
            .collect(),
    })
}

/// Probes every pool of the current snapshot and follows reloads. Runs as a Pingora background
/// service.
pub struct HealthService {
    publisher: Arc<Publisher>,
    connector: Arc<Connector>,
}

impl HealthService {
    pub fn new(publisher: Arc<Publisher>) -> Self {
        HealthService {
            publisher,
            connector: Arc::new(Connector::new(None)),
        }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloads = self.publisher.subscribe();
        let mut tasks = tokio::task::JoinSet::new();
        // Pool name → (what its probes depend on, its tasks).
        let mut running: HashMap<String, (String, Vec<AbortHandle>)> = HashMap::new();
        loop {
            // One task per pool of the snapshot in force. A pool whose probing is unchanged
            // (same backends, addresses, health settings) keeps its task: the task probes the
            // previous snapshot's pool, whose backends share their live state with this one's,
            // and its rhythm is not reset. Discovery republishes often, and restarting every
            // pool on each change would postpone every other pool's next round each time. A
            // changed or new pool gets fresh tasks (new backends are probed at once); tasks of
            // removed pools stop.
            let snapshot = self.publisher.snapshot();
            let mut next = HashMap::with_capacity(snapshot.pools.len());
            let sides = snapshot.pools.iter().flat_map(|p| {
                let prefill = p.prefill.iter().map(|s| (format!("{}#prefill", p.name), s));
                std::iter::once((p.name.clone(), p)).chain(prefill)
            });
            for (key, pool) in sides {
                let signature = probe_signature(pool);
                if let Some((old, handles)) = running.remove(&key) {
                    if old == signature {
                        next.insert(key, (old, handles));
                        continue;
                    }
                    handles.iter().for_each(AbortHandle::abort);
                }
                let mut handles =
                    vec![tasks.spawn(run_pool(Arc::clone(pool), Arc::clone(&self.connector)))];
                if matches!(
                    pool.policy,
                    crate::routing::Policy::LoadAware | crate::routing::Policy::CacheAware
                ) {
                    handles
                        .push(tasks.spawn(run_load(Arc::clone(pool), Arc::clone(&self.connector))));
                }
                next.insert(key, (signature, handles));
            }
            for (_, handles) in running.into_values() {
                handles.iter().for_each(AbortHandle::abort);
            }
            running = next;
            drop(snapshot);
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = reloads.changed() => if changed.is_err() { break },
                // Reap stopped tasks so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.abort_all();
    }
}

/// Everything a pool's probe and load tasks read: equal signatures probe identically.
fn probe_signature(pool: &Pool) -> String {
    let backends: Vec<&crate::routing::BackendConfig> =
        pool.backends.iter().map(|b| &b.config).collect();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        pool.health, pool.served_model_name, pool.policy, pool.lb, pool.timeouts, backends
    )
}

/// Probe one pool's backends forever, every `interval`, all backends concurrently. A pool whose
/// backends all carry state from before a reload waits one interval before its first round;
/// a pool with any new backend probes at once, so new backends are gated as briefly as possible.
pub async fn run_pool(pool: Arc<Pool>, connector: Arc<Connector>) {
    let mut warned_mixed = false;
    let first = if pool.backends.iter().all(|b| b.is_checked()) {
        tokio::time::Instant::now() + pool.health.interval
    } else {
        tokio::time::Instant::now()
    };
    let mut ticker = tokio::time::interval_at(first, pool.health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let results = futures_util::future::join_all(pool.backends.iter().map(|b| async {
            let t = Instant::now();
            let r = probe(
                &connector,
                b,
                &pool.health.path,
                pool.served_model_name.as_deref().unwrap_or(&pool.name),
                pool.health.timeout,
            )
            .await;
            (r, t.elapsed())
        }))
        .await;
        for (backend, (result, took)) in pool.backends.iter().zip(results) {
            record(backend, &result, took);
            apply(&pool, backend, result);
        }
        if !warned_mixed {
            warned_mixed = warn_if_mixed(&pool);
        }
        tracing::trace!(model = %pool.name, elapsed_ms = started.elapsed().as_millis() as u64, "probe round done");
    }
}

/// Per-probe metrics and the `/status` record.
fn record(backend: &BackendState, result: &ProbeResult, took: Duration) {
    let m = &backend.metrics;
    m.probe_duration.observe(took.as_secs_f64());
    match result {
        Ok(_) => m.probe_ok.inc(),
        Err(_) => m.probe_fail.inc(),
    }
    backend.set_last_probe(ProbeRecord {
        at: crate::logging::now_rfc3339(),
        ok: result.is_ok(),
        error: result.as_ref().err().map(ToString::to_string),
        duration_ms: took.as_secs_f64() * 1000.0,
    });
}

/// `load_aware` pools: read every backend's vLLM `/metrics` every `load_poll_ms` and publish
/// the load on its live state. A failed read leaves the old report to go stale, and selection
/// falls back to least_connections.
pub async fn run_load(pool: Arc<Pool>, connector: Arc<Connector>) {
    let mut ticker = tokio::time::interval(pool.lb.load_poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = pool.lb.load_poll.min(pool.health.timeout);
    loop {
        ticker.tick().await;
        let reports = futures_util::future::join_all(pool.backends.iter().map(|b| {
            crate::routing::vllm_load::fetch(
                &connector,
                &b.peer,
                &b.config.authority,
                &b.config.path_prefix,
                timeout,
            )
        }))
        .await;
        for (backend, report) in pool.backends.iter().zip(reports) {
            match report {
                Ok(r) => {
                    backend.set_load(r.running, r.waiting, r.kv_cache_usage);
                    if let Some(tokens) = r.kv_cache_tokens {
                        pool.report_kv_cache_tokens(backend, tokens);
                    }
                }
                Err(e) => {
                    tracing::debug!(model = %pool.name, backend = %backend.config.name, error = %e, "load report failed")
                }
            }
        }
    }
}

/// Fold one probe result into the backend's health, logging each flip.
fn apply(pool: &Pool, backend: &BackendState, result: ProbeResult) {
    let was_checked = backend.is_checked();
    let was_healthy = backend.is_healthy();
    match result {
        Ok(card) => {
            let (passes, _) = backend.record_probe(true);
            backend.set_card(card);
            // First probe ever: open the gate at once. Later: wait for the threshold.
            let healthy = was_healthy || !was_checked || passes >= pool.health.healthy_threshold;
            backend.set_health(healthy);
            if healthy && !was_healthy {
                info!(model = %pool.name, backend = %backend.config.name, url = %backend.config.url, "backend healthy");
                // Back from a failure (often a restart): whatever its cache held is gone.
                if was_checked {
                    backend.cache_clock().forget();
                }
            }
        }
        Err(e) => {
            let (_, failures) = backend.record_probe(false);
            let healthy = was_healthy && failures < pool.health.unhealthy_threshold;
            backend.set_health(healthy);
            if was_healthy && !healthy || !was_checked {
                warn!(model = %pool.name, backend = %backend.config.name, url = %backend.config.url, reason = %e, "backend unhealthy");
            }
        }
    }
}

/// Warn when backends of one pool report different `root` or `max_model_len`: a pool must be
/// homogeneous or clients see different behaviour per backend. Returns whether it warned.
fn warn_if_mixed(pool: &Pool) -> bool {
    let cards: Vec<(&str, Arc<serde_json::Value>)> = pool
        .backends
        .iter()
        .filter_map(|b| b.card().map(|c| (b.config.name.as_str(), c)))
        .collect();
    for field in ["root", "max_model_len"] {
        let mut values: Vec<(String, &str)> = cards
            .iter()
            .map(|(name, c)| {
                (
                    c.get(field).map(|v| v.to_string()).unwrap_or_default(),
                    *name,
                )
            })
            .collect();
        values.sort();
        values.dedup_by(|a, b| a.0 == b.0);
        if values.len() > 1 {
            let detail = values
                .iter()
                .map(|(v, n)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            warn!(model = %pool.name, field, backends = %detail, "pool mixes backends that report different values; keep pools homogeneous");
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_is_found_by_id() {
        let body =
            br#"{"object":"list","data":[{"id":"a","max_model_len":8},{"id":"m","root":"r"}]}"#;
        let card = model_card(body, "m").unwrap().unwrap();
        assert_eq!(card["root"], "r");
    }

    #[test]
    fn wrong_model_lists_what_is_served() {
        let body = br#"{"object":"list","data":[{"id":"llama"}]}"#;
        let err = model_card(body, "mistral").unwrap_err().to_string();
        assert!(err.contains("llama") && err.contains("mistral"), "{err}");
        assert!(model_card(b"not json", "m").is_err());
        assert!(model_card(b"{}", "m").is_err());
    }
}
