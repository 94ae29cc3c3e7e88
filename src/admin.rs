//! The admin listener: `GET /health`, `GET /ready`, `GET /status`, `GET /config` (control
//! plane; never bound on the public address).
//!
//! `/health` = the process is alive. `/ready` = 200 only once every model has had its first
//! health-check round and at least one model has a healthy backend, else 503: the signal a cloud
//! load balancer uses before sending traffic; it turns 503 the moment a drain starts. `/status`
//! shows every backend's health and drain flag. `/config` shows the config in force: generation,
//! sha256 of the file, when it was loaded and the last rejected reload's error.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::discovery::Registry;
use crate::lifecycle::Traffic;
use crate::metrics::METRICS;
use crate::routing::Policy;
use crate::state::{Publisher, Snapshot};

/// The admin HTTP app.
pub struct AdminApp {
    publisher: Arc<Publisher>,
    readiness: Readiness,
}

impl AdminApp {
    pub fn new(publisher: Arc<Publisher>, discovery: Arc<Registry>, traffic: Arc<Traffic>) -> Self {
        AdminApp {
            readiness: Readiness {
                publisher: Arc::clone(&publisher),
                discovery,
                traffic,
                was_ready: AtomicBool::new(false),
            },
            publisher,
        }
    }
}

/// The readiness latch behind `/ready`.
struct Readiness {
    publisher: Arc<Publisher>,
    discovery: Arc<Registry>,
    traffic: Arc<Traffic>,
    /// Set once the first full probe round made us ready; from then on a reload that adds a
    /// not-yet-probed backend does not flip readiness.
    was_ready: AtomicBool,
}

impl Readiness {
    /// Ready for traffic: the public listener accepts, not draining, and some model servable —
    /// before the first time, also every `discover:` entry resolved once and every pool probed
    /// once (so a starting gateway is not sent traffic it would hold).
    fn is_ready(&self) -> bool {
        if self.traffic.is_draining() || !self.traffic.is_listening() {
            return false;
        }
        let snapshot = self.publisher.snapshot();
        if self.was_ready.load(Ordering::Acquire) {
            return snapshot.pools.iter().any(|p| p.has_healthy());
        }
        let ready = snapshot.is_ready() && self.discovery.is_settled(&self.publisher);
        if ready {
            self.was_ready.store(true, Ordering::Release);
        }
        ready
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .body(bytes)
        .unwrap_or_default()
}

/// Per-model, per-backend health as JSON: `models` is keyed by model name. A disaggregated
/// model shows its decode side at the top and its prefill side under `prefill`; each backend
/// says its `side`.
pub fn status(snapshot: &Snapshot) -> Value {
    let mut models = serde_json::Map::new();
    for p in &snapshot.pools {
        let mut model = pool_status(p, p.side_of(p));
        if let Some(prefill) = &p.prefill {
            model["prefill"] = pool_status(prefill, Some("prefill"));
        }
        models.insert(p.name.clone(), model);
    }
    json!({
        "generation": snapshot.generation,
        "config_sha256": snapshot.config_sha256,
        "models": models,
    })
}

/// One pool (or one side of a disaggregated model).
fn pool_status(p: &crate::routing::Pool, side: Option<&str>) -> Value {
    let backends: Vec<Value> = p
        .backends
        .iter()
        .map(|b| {
            let card = b.card();
            let (kv_cache_tokens, kv_cache_tokens_reported) = match &p.prefix {
                Some(_) => {
                    let (learnt, reported) = p.kv_cache_tokens(b);
                    (Some(learnt), reported)
                }
                None => (None, None),
            };
            let last_probe = b.last_probe().map(
                |r| json!({"at": r.at, "ok": r.ok, "error": r.error, "duration_ms": r.duration_ms}),
            );
            json!({
                "name": b.config.name,
                "url": b.config.url,
                "side": side,
                "weight": b.config.weight,
                "healthy": b.is_healthy(),
                "checked": b.is_checked(),
                "draining": b.config.drain,
                "in_flight": b.in_flight(),
                "prefill_backlog_tokens": p.prefix.as_ref().map(|_| b.prefill_backlog()),
                "cold_picks": p.prefix.as_ref().map(|_| b.cold_picks()),
                "ttfb_ms": (p.policy == Policy::LoadAware)
                    .then(|| b.ttfb().raw().map(|s| (s * 1e6).round() / 1e3))
                    .flatten(),
                "kv_cache_tokens": kv_cache_tokens,
                "kv_cache_tokens_reported": kv_cache_tokens_reported,
                "last_probe": last_probe,
                "root": card.as_ref().and_then(|c| c.get("root").cloned()),
                "max_model_len": card.as_ref().and_then(|c| c.get("max_model_len").cloned()),
            })
        })
        .collect();
    let mut model = json!({
        "policy": p.policy.as_str(),
        "healthy_backends": p.backends.iter().filter(|b| b.is_healthy()).count(),
        "usable_backends": p.backends.iter().filter(|b| b.is_usable()).count(),
        "backends": backends,
    });
    if let Some(index) = &p.prefix {
        model["cache_aware"] = cache_aware_status(p, index);
    }
    model
}

/// A `cache_aware` pool's picks so far and its prefix index.
fn cache_aware_status(
    p: &crate::routing::Pool,
    index: &crate::routing::prefix::PrefixIndex,
) -> Value {
    let [cold, hit, spill] = p.metrics.cache_pick_counts();
    json!({
        "picks": {"hit": hit, "spill": spill, "cold": cold},
        "index_entries": index.used(),
        "index_capacity": index.capacity(),
        "index_bytes": index.memory_bytes(),
        "block_bytes": p.lb.cache.block_bytes,
        "max_prefix_bytes": p.lb.cache.max_bytes,
        "miss_cost": p.lb.cache.miss_cost,
    })
}

/// Set the gauges that mirror live state (in flight, health, queue, generation) from `snapshot`,
/// rebuilt on every scrape so removed backends vanish.
fn refresh_gauges(snapshot: &Snapshot) {
    let m = &*METRICS;
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.config_generation.set(gauge(snapshot.generation));
    m.in_flight.reset();
    m.backend_healthy.reset();
    m.queued.reset();
    m.prefill_backlog.reset();
    m.kv_cache_tokens.reset();
    m.prefix_index_entries.reset();
    for pool in &snapshot.pools {
        let queued = pool.live.queued.load(std::sync::atomic::Ordering::Relaxed);
        m.queued
            .with_label_values(&[pool.name.as_str()])
            .set(gauge(queued as u64));
        if let Some(index) = &pool.prefix {
            m.prefix_index_entries
                .with_label_values(&[pool.name.as_str()])
                .set(gauge(index.used() as u64));
        }
        for side in pool.sides() {
            for b in &side.backends {
                let labels = [side.name.as_str(), b.config.name.as_str()];
                if side.prefix.is_some() {
                    m.prefill_backlog
                        .with_label_values(&labels)
                        .set(gauge(b.prefill_backlog()));
                    m.kv_cache_tokens
                        .with_label_values(&labels)
                        .set(gauge(side.kv_cache_tokens(b).0));
                }
                m.in_flight
                    .with_label_values(&labels)
                    .set(gauge(b.in_flight()));
                m.backend_healthy
                    .with_label_values(&labels)
                    .set(i64::from(b.is_healthy()));
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let is_get = session.req_header().method == http::Method::GET;
        let snapshot = self.publisher.snapshot();
        let guarded = matches!(path.as_str(), "/metrics" | "/status" | "/config");
        if guarded {
            if let Some(token) = snapshot.admin_token.as_deref() {
                let given = crate::auth::bearer(&session.req_header().headers).unwrap_or(b"");
                if !crate::auth::secret_eq(given, token.as_bytes()) {
                    let mut r = json_response(
                        StatusCode::UNAUTHORIZED,
                        &json!({"error": {"message": "admin token required: Authorization: Bearer <admin.token>", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
                    );
                    if let Ok(v) = http::HeaderValue::from_str("Bearer") {
                        r.headers_mut().insert("www-authenticate", v);
                    }
                    return r;
                }
            }
        }
        match (is_get, path.as_str()) {
            (true, "/health") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            (true, "/ready") => {
                let draining = self.readiness.traffic.is_draining();
                let ready = self.readiness.is_ready();
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(code, &json!({"ready": ready, "draining": draining}))
            }
            (true, "/status") => {
                let mut body = status(&snapshot);
                let traffic = &self.readiness.traffic;
                body["ready"] = json!(self.readiness.is_ready());
                body["draining"] = json!(traffic.is_draining());
                body["in_flight"] = json!(traffic.in_flight());
                body["pid"] = json!(std::process::id());
                body["discovery"] = self.readiness.discovery.status(&self.publisher);
                json_response(StatusCode::OK, &body)
            }
            (true, "/metrics") => {
                refresh_gauges(&snapshot);
                let body = crate::metrics::render();
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .header("content-length", body.len())
                    .body(body)
                    .unwrap_or_default()
            }
            (true, "/config") => json_response(
                StatusCode::OK,
                &serde_json::to_value(&*self.publisher.status()).unwrap_or_default(),
            ),
            (false, "/health" | "/ready" | "/status" | "/config" | "/metrics") => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": {"message": "use GET", "type": "invalid_request_error", "param": null, "code": "method_not_allowed"}}),
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": {"message": "unknown admin path; try /health, /ready, /status, /config, /metrics", "type": "invalid_request_error", "param": null, "code": "not_found"}}),
            ),
        }
    }
}
