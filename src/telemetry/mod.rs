//! Distributed tracing: W3C Trace Context propagation and an optional OTLP/HTTP span exporter.
//!
//! Owns trace identity per request and span export. [`TraceContext`] runs on the request path
//! (parse, render; no I/O, no locks, never panics). [`Exporter`] is built by the control plane
//! and only *queued into* from the request path; its network I/O happens on its own task.
//! Nothing here reads config files or touches Pingora types.
//!
//! # How the request path uses it
//!
//! 1. On arrival, build the request's identity from the client's headers:
//!    `TraceContext::from_headers(traceparent, tracestate)` with the raw header bytes (`None`
//!    when absent; when the request carries several `traceparent` headers, pass `None`, which
//!    starts a new trace). A valid `traceparent` continues the client's trace (same trace id and
//!    flags, the client's span becomes the parent, the gateway gets a fresh span id); anything
//!    else starts a new sampled trace. `tracestate` survives only with a valid `traceparent`.
//! 2. Upstream, set `traceparent: ctx.header_value()` (replacing the client's), and
//!    `tracestate` to `ctx.tracestate` when it is `Some` (removing it otherwise). The backend
//!    then sees the gateway's span as its parent. Retries to another backend reuse the same
//!    context: they are attempts within one gateway span.
//! 3. When the request ends (the `logging` phase) and an exporter is configured, record one
//!    SERVER span with [`Exporter::record`], which never blocks:
//!
//! ```ignore
//! exporter.record(SpanRecord {
//!     trace: ctx.trace.clone(),
//!     name: "POST /v1/chat/completions".into(), // method + route, never ids
//!     start, end,                               // SystemTime
//!     attributes: vec![
//!         ("http.request.method", "POST".into()),
//!         ("url.path", path.into()),
//!         ("http.response.status_code", AttrValue::Int(status.into())),
//!         ("modelgate.model", model.into()),
//!         ("modelgate.backend", backend.to_string().into()),
//!         ("modelgate.attempts", AttrValue::Int(attempts.into())),
//!         ("gen_ai.request.model", model.into()),
//!         // only when known:
//!         ("gen_ai.usage.input_tokens", AttrValue::Int(prompt_tokens)),
//!         ("gen_ai.usage.output_tokens", AttrValue::Int(completion_tokens)),
//!     ],
//!     error: status >= 500 || ctx.error.is_some(),
//! });
//! ```
//!
//! Only sampled traces (`flags` bit 0) are exported, as a parent-based sampler would: a client
//! that sends `-00` opts out; new traces are sampled.
//!
//! # Configuration and lifecycle
//!
//! Export is off by default. With `tracing: {otlp_endpoint: "http://host:4318",
//! service_name: "modelgate"}`, call [`Exporter::start`]`(endpoint, service_name)` from inside
//! a tokio runtime that lives as long as the exporter (the background task runs there; do not
//! start it from `--test` or from a short-lived startup runtime). Its `Err(String)` is a
//! one-line message suitable for a config issue. [`Spans`] holds the exporter in force:
//! [`Spans::configure`] keeps a running one whose [`Exporter::endpoint`] and
//! [`Exporter::service_name`] are unchanged (the reloader calls it); the request path reads
//! [`Spans::exporter`]. Dropping the last handle flushes queued spans and stops the task. [`Exporter::dropped`], [`Exporter::failed_batches`] and
//! [`Exporter::exported`] are counters for metrics.
//!
//! Propagation works whether or not an exporter is configured.

mod otlp;
mod traceparent;

pub use otlp::{AttrValue, Exporter, SpanRecord};
pub use traceparent::TraceContext;

/// The span exporter in force, if any: the control plane (re)configures it, the request path
/// reads it once per finished request.
#[derive(Debug, Default)]
pub struct Spans {
    exporter: arc_swap::ArcSwapOption<Exporter>,
}

impl Spans {
    /// Start, replace or stop the exporter: export to `endpoint` as `service_name`, or stop
    /// with `None`. Keeps a running exporter whose endpoint and service name are unchanged.
    /// Call from a long-lived runtime (the exporter's task runs there).
    pub fn configure(&self, endpoint: Option<&str>, service_name: &str) {
        let current = self.exporter.load_full();
        match (endpoint, current) {
            (None, None) => {}
            (None, Some(_)) => {
                self.exporter.store(None);
                tracing::info!("span export off");
            }
            (Some(endpoint), Some(cur))
                if cur.endpoint() == endpoint && cur.service_name() == service_name => {}
            (Some(endpoint), _) => match Exporter::start(endpoint, service_name) {
                Ok(e) => {
                    tracing::info!(endpoint = %endpoint, service_name = %service_name, "exporting spans over OTLP/HTTP");
                    self.exporter.store(Some(std::sync::Arc::new(e)));
                }
                Err(e) => tracing::warn!(error = %e, "cannot export spans"),
            },
        }
    }

    /// The exporter, if one is configured.
    pub fn exporter(&self) -> Option<std::sync::Arc<Exporter>> {
        self.exporter.load_full()
    }
}
