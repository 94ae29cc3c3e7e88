//! Stage 6, finish (request path, after the response): metrics, the exported span and the
//! access-log line, from the [`Finished`] record the stages' outputs make up.
//!
//! Everything here uses handles pre-resolved on the request's pool and backend; the only
//! allocations are the access-log line itself (skipped when `log.access_log` is off).

use std::sync::Arc;
use std::time::Instant;

use pingora_core::protocols::http::ServerSession;

use super::forward::Exchanged;
use super::head::Head;
use crate::auth::Tenant;
use crate::logging::{self, AccessRecord};
use crate::metrics::handles::FALLBACK;
use crate::metrics::usage::Usage;
use crate::metrics::{status_class, ModelMetrics};
use crate::routing::{BackendState, Pool};
use crate::telemetry::{AttrValue, Exporter, SpanRecord};

/// Longest `route` written to the access log.
const MAX_ROUTE: usize = 256;

/// What the stages learnt about the request, for its end record (written by the pipeline as
/// each stage returns).
#[derive(Debug, Default)]
pub struct Routed {
    /// The API key's tenant, when authentication is on.
    pub tenant: Option<Arc<Tenant>>,
    /// The model the request named (clipped when no pool serves it).
    pub model: Option<String>,
    /// `model` named a model no pool serves (or the API key may not use).
    pub unknown_model: bool,
    /// The pool serving the request, once the model is known.
    pub pool: Option<Arc<Pool>>,
    /// The prompt's estimated tokens (`cache_aware`).
    pub prompt_tokens: Option<u64>,
}

/// Why the request failed or was cut, if it did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending {
    pub cause: Option<&'static str>,
    /// `cause` is a response cut after it started (not a gateway error).
    pub cut: bool,
}

/// Everything a finished request is recorded from.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub head: &'a Head,
    pub routed: &'a Routed,
    pub out: &'a Exchanged,
    pub ending: Ending,
    /// `log.access_log` of the request's snapshot.
    pub access_log: bool,
}

impl Finished<'_> {
    /// The backend that served (or last failed).
    fn backend(&self) -> Option<&BackendState> {
        let pool = self.routed.pool.as_deref()?;
        pool.backends.get(self.out.backend?).map(|b| &**b)
    }

    /// The model-level metric handles (a fallback label without a pool).
    fn model_metrics(&self) -> &ModelMetrics {
        match self.routed.pool.as_deref() {
            Some(pool) => &pool.metrics,
            None if self.routed.unknown_model => &FALLBACK.unknown,
            None => &FALLBACK.none,
        }
    }
}

/// What the end-of-request record needs from the client request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub client: Option<&'a std::net::SocketAddr>,
}

/// Record metrics, the span and the access-log line for a finished request.
pub fn finish(session: &ServerSession, finished: &Finished<'_>, exporter: Option<&Exporter>) {
    let req = session.req_header();
    let info = RequestInfo {
        method: req.method.as_str(),
        path: req.uri.path(),
        client: session.client_addr().and_then(|a| a.as_inet()),
    };
    record(finished, exporter, info);
}

/// [`finish`] without the Pingora session (benches call this directly).
pub fn record(f: &Finished<'_>, exporter: Option<&Exporter>, info: RequestInfo<'_>) {
    let duration = Instant::now().duration_since(f.head.started);
    let usage = count(f, duration);
    let path = info.path;
    let route = &path[..floor_char_boundary(path, MAX_ROUTE)];
    let backend = f.backend().map(|b| b.config.name.as_str());
    if let Some(exporter) = exporter.filter(|_| f.head.trace.is_sampled()) {
        export_span(exporter, f, info.method, route, backend, usage);
    }
    if f.access_log {
        access_line(f, info, route, backend, usage, duration);
    }
}

/// The request's metrics and its tenant's token charge; returns the response's `usage`.
fn count(f: &Finished<'_>, duration: std::time::Duration) -> Option<Usage> {
    let (out, ending) = (f.out, f.ending);
    let class = status_class(out.status);
    let model_metrics = f.model_metrics();
    match f.backend() {
        Some(b) => {
            let m = &b.metrics;
            m.request(f.head.endpoint, class);
            m.duration.observe(duration.as_secs_f64());
            if let Some(fb) = out.first_byte {
                m.ttfb
                    .observe(fb.duration_since(f.head.started).as_secs_f64());
            }
            if let Some(cause) = ending.cause.filter(|_| ending.cut) {
                m.cut(cause);
            }
        }
        None => model_metrics.request(f.head.endpoint, class),
    }
    if let Some(cause) = ending.cause.filter(|_| !ending.cut) {
        model_metrics.gateway_error(out.status, cause);
    }
    let usage = out.tail.as_deref().and_then(|t| t.usage());
    if let Some(u) = usage {
        model_metrics.prompt_tokens.inc_by(u.prompt_tokens);
        model_metrics.completion_tokens.inc_by(u.completion_tokens);
        if let Some(cached) = u.cached_tokens {
            model_metrics.cached_tokens.inc_by(cached);
            learn_cache(f, u.prompt_tokens, cached);
        }
        if let Some(t) = &f.routed.tenant {
            t.charge_tokens(u.prompt_tokens + u.completion_tokens);
        }
    }
    usage
}

/// A `cache_aware` pick's response: its cached tokens correct the backend's cache size.
fn learn_cache(f: &Finished<'_>, prompt: u64, cached: u64) {
    let (Some(pool), Some(choice), Some(estimated)) = (
        f.routed.pool.as_deref(),
        f.out.cache_pick.as_ref(),
        f.routed.prompt_tokens,
    ) else {
        return;
    };
    pool.learn_cache(choice, estimated, prompt, cached);
}

/// Queue the access-log line.
fn access_line(
    f: &Finished<'_>,
    info: RequestInfo<'_>,
    route: &str,
    backend: Option<&str>,
    usage: Option<Usage>,
    duration: std::time::Duration,
) {
    let (head, routed, out, ending) = (f.head, f.routed, f.out, f.ending);
    let prefill = out.prefill.as_ref();
    logging::access(&AccessRecord {
        ts: logging::now_rfc3339(),
        request_id: &head.request_id,
        client: info.client.map(ToString::to_string),
        method: info.method,
        route,
        model: routed.model.as_deref(),
        backend,
        policy: routed.pool.as_deref().map(|p| p.policy.as_str()),
        attempts: out.attempts,
        status: out.status,
        bytes_in: out.bytes_in,
        bytes_out: out.bytes_out,
        ttfb_ms: out
            .first_byte
            .map(|fb| millis(fb.duration_since(head.started))),
        duration_ms: millis(duration),
        stream: out.stream,
        cut: ending.cause.filter(|_| ending.cut),
        error: ending.cause.filter(|_| !ending.cut),
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        cached_tokens: usage.and_then(|u| u.cached_tokens),
        pick: out.cache_pick.map(|c| c.reason.as_str()),
        pick_cached_tokens: out
            .cache_pick
            .zip(routed.prompt_tokens)
            .map(|(c, tokens)| tokens.saturating_sub(c.miss_tokens)),
        prefill_backend: prefill.map(|p| p.backend.as_str()),
        prefill_ms: prefill.map(|p| millis(p.duration)),
        prefill_attempts: prefill.map(|p| p.attempts),
        trace_id: Some(head.trace.trace_id_hex()),
        tenant: routed.tenant.as_deref().map(|t| t.name.as_str()),
    });
}

/// One SERVER span for the request (queued; never blocks).
fn export_span(
    exporter: &Exporter,
    f: &Finished<'_>,
    method: &str,
    route: &str,
    backend: Option<&str>,
    usage: Option<Usage>,
) {
    let (head, out, cause) = (f.head, f.out, f.ending.cause);
    let mut attributes: Vec<(&'static str, AttrValue)> = vec![
        ("http.request.method", method.into()),
        ("url.path", route.into()),
        (
            "http.response.status_code",
            AttrValue::Int(i64::from(out.status)),
        ),
        (
            "modelgate.attempts",
            AttrValue::Int(i64::from(out.attempts)),
        ),
        ("modelgate.stream", AttrValue::Bool(out.stream)),
    ];
    if let Some(model) = f.routed.model.as_deref() {
        attributes.push(("modelgate.model", model.into()));
        attributes.push(("gen_ai.request.model", model.into()));
    }
    if let Some(b) = backend {
        attributes.push(("modelgate.backend", b.into()));
    }
    if let Some(cause) = cause {
        attributes.push(("modelgate.error", cause.into()));
    }
    if let Some(u) = usage {
        attributes.push(("gen_ai.usage.input_tokens", u.prompt_tokens.into()));
        attributes.push(("gen_ai.usage.output_tokens", u.completion_tokens.into()));
    }
    exporter.record(SpanRecord {
        trace: head.trace.clone(),
        name: format!("{method} {}", crate::api::endpoint_label(head.endpoint)).into(),
        start: head.started_at,
        end: std::time::SystemTime::now(),
        attributes,
        error: out.status >= 500 || cause.is_some(),
    });
}

/// Milliseconds with microsecond precision.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Largest index ≤ `max` on a char boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}
