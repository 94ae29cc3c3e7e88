//! The end of a request: metrics and the access-log line (request path, after the response).
//!
//! Everything here uses handles pre-resolved on the request's pool and backend; the only
//! allocations are the access-log line itself (skipped when `log.access_log` is off).

use std::time::Instant;

use pingora_proxy::Session;

use super::ctx::RequestCtx;
use crate::logging::{self, AccessRecord};
use crate::metrics::handles::FALLBACK;
use crate::metrics::{status_class, ModelMetrics};
use crate::telemetry::{AttrValue, Exporter, SpanRecord};

/// Longest `route` written to the access log.
const MAX_ROUTE: usize = 256;

/// What the end-of-request record needs from the client request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub client: Option<&'a std::net::SocketAddr>,
}

/// Record metrics and write the access-log line for a finished request.
pub fn finish(session: &Session, ctx: &mut RequestCtx, exporter: Option<&Exporter>) {
    let req = session.req_header();
    let info = RequestInfo {
        method: req.method.as_str(),
        path: req.uri.path(),
        client: session.client_addr().and_then(|a| a.as_inet()),
    };
    record(ctx, exporter, info);
}

/// [`finish`] without the Pingora session (benches call this directly).
pub fn record(ctx: &RequestCtx, exporter: Option<&Exporter>, info: RequestInfo<'_>) {
    let now = Instant::now();
    let duration = now.duration_since(ctx.started);
    let class = status_class(ctx.status);
    let model_metrics: &ModelMetrics = match ctx.pool.as_deref() {
        Some(pool) => &pool.metrics,
        None if ctx.unknown_model => &FALLBACK.unknown,
        None => &FALLBACK.none,
    };
    let backend = ctx
        .pool
        .as_deref()
        .zip(ctx.backend_index)
        .and_then(|(p, i)| p.backends.get(i));
    match backend {
        Some(b) => {
            let m = &b.metrics;
            m.request(ctx.endpoint, class);
            m.duration.observe(duration.as_secs_f64());
            if let Some(fb) = ctx.first_byte {
                m.ttfb.observe(fb.duration_since(ctx.started).as_secs_f64());
            }
            if ctx.cut {
                if let Some(cause) = ctx.cause {
                    m.cut(cause);
                }
            }
        }
        None => model_metrics.request(ctx.endpoint, class),
    }
    if !ctx.cut {
        if let Some(cause) = ctx.cause {
            model_metrics.gateway_error(ctx.status, cause);
        }
    }
    let usage = ctx.tail.as_deref().and_then(|t| t.usage());
    if let Some(u) = usage {
        model_metrics.prompt_tokens.inc_by(u.prompt_tokens);
        model_metrics.completion_tokens.inc_by(u.completion_tokens);
        if let Some(cached) = u.cached_tokens {
            model_metrics.cached_tokens.inc_by(cached);
        }
        if let Some(t) = &ctx.tenant {
            t.charge_tokens(u.prompt_tokens + u.completion_tokens);
        }
    }

    let path = info.path;
    let route = &path[..floor_char_boundary(path, MAX_ROUTE)];
    let backend_name = backend.map(|b| b.config.name.as_str());
    if let Some(exporter) = exporter.filter(|_| ctx.trace.is_sampled()) {
        export_span(exporter, ctx, info.method, route, backend_name, usage);
    }
    let access_log = ctx.snapshot.as_ref().is_none_or(|s| s.access_log);
    if !access_log {
        return;
    }
    let record = AccessRecord {
        ts: crate::logging::now_rfc3339(),
        request_id: &ctx.request_id,
        client: info.client.map(ToString::to_string),
        method: info.method,
        route,
        model: ctx.model.as_deref(),
        backend: backend_name,
        policy: ctx.pool.as_deref().map(|p| p.policy.as_str()),
        attempts: ctx.attempts,
        status: ctx.status,
        bytes_in: ctx.bytes_in,
        bytes_out: ctx.bytes_out,
        ttfb_ms: ctx
            .first_byte
            .map(|fb| millis(fb.duration_since(ctx.started))),
        duration_ms: millis(duration),
        stream: ctx.stream,
        cut: if ctx.cut { ctx.cause } else { None },
        error: if ctx.cut { None } else { ctx.cause },
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        cached_tokens: usage.and_then(|u| u.cached_tokens),
        pick: ctx.cache_pick.map(|c| c.reason.as_str()),
        pick_cached_tokens: ctx
            .cache_pick
            .zip(ctx.prompt.as_ref())
            .map(|(c, p)| p.tokens.saturating_sub(c.miss_tokens)),
        prefill_backend: ctx.prefill.as_ref().map(|p| p.backend.as_str()),
        prefill_ms: ctx.prefill.as_ref().map(|p| millis(p.duration)),
        prefill_attempts: ctx.prefill.as_ref().map(|p| p.attempts),
        trace_id: Some(ctx.trace.trace_id_hex()),
        tenant: ctx.tenant.as_deref().map(|t| t.name.as_str()),
    };
    logging::access(&record);
}

/// One SERVER span for the request (queued; never blocks).
fn export_span(
    exporter: &Exporter,
    ctx: &RequestCtx,
    method: &str,
    route: &str,
    backend: Option<&str>,
    usage: Option<crate::metrics::usage::Usage>,
) {
    let mut attributes: Vec<(&'static str, AttrValue)> = vec![
        ("http.request.method", method.into()),
        ("url.path", route.into()),
        (
            "http.response.status_code",
            AttrValue::Int(i64::from(ctx.status)),
        ),
        (
            "modelgate.attempts",
            AttrValue::Int(i64::from(ctx.attempts)),
        ),
        ("modelgate.stream", AttrValue::Bool(ctx.stream)),
    ];
    if let Some(model) = ctx.model.as_deref() {
        attributes.push(("modelgate.model", model.into()));
        attributes.push(("gen_ai.request.model", model.into()));
    }
    if let Some(b) = backend {
        attributes.push(("modelgate.backend", b.into()));
    }
    if let Some(cause) = ctx.cause {
        attributes.push(("modelgate.error", cause.into()));
    }
    if let Some(u) = usage {
        attributes.push(("gen_ai.usage.input_tokens", u.prompt_tokens.into()));
        attributes.push(("gen_ai.usage.output_tokens", u.completion_tokens.into()));
    }
    exporter.record(SpanRecord {
        trace: ctx.trace.clone(),
        name: format!("{method} {}", crate::metrics::endpoint_label(ctx.endpoint)).into(),
        start: ctx.started_at,
        end: std::time::SystemTime::now(),
        attributes,
        error: ctx.status >= 500 || ctx.cause.is_some(),
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
