//! Shadow traffic (request path hands off; the copy runs on its own task).
//!
//! For a model with `shadow: {model, percent}`, that share of requests is copied to the shadow
//! model's pool once the client's whole body has been sent to the primary: the copy gets the
//! same headers and body with `model` spliced to the shadow pool's served name. Its response is
//! read and discarded; it never delays or changes the client's response. Copies in flight per
//! model are capped (`max_concurrency`); above that a copy is skipped. Bodies too large to keep
//! for replay are not shadowed. Outcomes show only in `modelgate_shadow_requests_total`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_http::RequestHeader;
use rand::Rng;

use super::body::Upload;
use super::forward::Leg;
use super::headers;
use crate::metrics::METRICS;
use crate::oneshot;
use crate::routing::Pool;

/// Shared by every shadow copy of this process.
pub struct Shadows {
    connector: Arc<Connector>,
}

impl Default for Shadows {
    fn default() -> Self {
        Shadows {
            connector: Arc::new(Connector::new(None)),
        }
    }
}

/// Whether this request is in the shadow share of `pool`.
pub fn roll(pool: &Pool) -> bool {
    pool.shadow
        .as_ref()
        .is_some_and(|s| rand::thread_rng().gen_range(0.0..100.0) < s.percent)
}

fn count(model: &str, result: &str) {
    METRICS
        .shadow_requests
        .with_label_values(&[model, result])
        .inc();
}

/// Start the shadow copy of the request `leg` just sent: the client's header (without the
/// primary backend's path prefix) and the whole body with `model` spliced to the shadow pool's
/// served name. Skipped when the body was too large to keep, or over `max_concurrency`.
pub fn send(shadows: &Shadows, session: &ServerSession, leg: &Leg<'_>, upload: &Upload) {
    let source = leg.pool;
    let Some(cfg) = &source.shadow else { return };
    let Some(target) = leg.snapshot.pool(&cfg.model).cloned() else {
        return;
    };
    let served = target.served_model_name.as_deref().unwrap_or(&target.name);
    let Some(body) = upload.body_with_model(served) else {
        count(&target.name, "skipped");
        return;
    };
    let live = Arc::clone(&source.live);
    if live.shadows.fetch_add(1, Ordering::AcqRel) >= cfg.max_concurrency {
        live.shadows.fetch_sub(1, Ordering::AcqRel);
        count(&target.name, "skipped");
        return;
    }
    let client = session.client_addr().and_then(|a| a.as_inet()).copied();
    let mut header =
        headers::upstream_request(session.req_header(), "", &leg.head.request_id, client);
    let _ = header.insert_header("traceparent", leg.head.trace.header_value());
    // Same rules as the primary: the client's key stays at the gateway unless passed on.
    if leg.snapshot.strips_authorization() {
        header.remove_header("authorization");
        header.remove_header("api-key");
    }
    let _ = header.insert_header("content-length", body.len());
    header.remove_header("transfer-encoding");
    let _ = header.insert_header("x-modelgate-shadow", "1");
    let connector = Arc::clone(&shadows.connector);
    tokio::spawn(async move {
        let _slot = Slot(&live.shadows);
        let label = match exchange(&connector, &target, header, body).await {
            Ok(status) if status < 400 => "ok",
            Ok(_) => "error_status",
            Err(label) => label,
        };
        count(&target.name, label);
    });
}

struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One shadow exchange, within the shadow pool's request timeout: any eligible backend,
/// response read and dropped. Its status, or the result label of a failure.
async fn exchange(
    connector: &Connector,
    pool: &Pool,
    mut header: RequestHeader,
    body: Bytes,
) -> Result<u16, &'static str> {
    let index = pool.select(&[], None, true).ok_or("failed")?;
    let backend = &pool.backends[index];
    let _guard = backend.try_track().ok_or("failed")?;
    headers::set_credentials(&mut header, false, backend.config.api_key.as_deref());
    if !backend.config.path_prefix.is_empty() {
        let pq = header
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Ok(uri) = format!("{}{pq}", backend.config.path_prefix).parse::<http::Uri>() {
            header.set_uri(uri);
        }
    }
    let (keep, timeout) = (oneshot::Body::Discard, pool.timeouts.request);
    match oneshot::exchange(connector, &backend.peer, header, Some(&body), keep, timeout).await {
        Ok(answer) => Ok(answer.status),
        Err(oneshot::OneShotError::Timeout(_)) => Err("timeout"),
        Err(_) => Err("failed"),
    }
}
