//! Stage 1, read the head (request path): read the request header with Pingora's parser and
//! answer what cannot be a request with the gateway's own JSON error.
//!
//! `ServerSession::read_request` is called here, not inside Pingora's proxy loop, so a request
//! Pingora cannot parse (`InvalidHTTPHeader`) or a `CONNECT` is answered through the error
//! renderer like every other gateway error: no bare `400`/`405` from Pingora, no rewriting of
//! its bytes. A header the connection guard refused has been answered by the guard already
//! (the read fails after its 431/408): nothing more is written then. Those answers close the
//! connection lingering; they are counted in `modelgate_connections_rejected_total` and logged
//! nowhere else (there is no request to log).

use std::time::{Instant, SystemTime};

use http::Method;
use pingora_core::protocols::http::ServerSession;
use pingora_error::ErrorType;

use super::headers;
use crate::error::GatewayError;
use crate::metrics::METRICS;
use crate::state::SharedState;
use crate::telemetry::TraceContext;

/// What the request header says, read once (stage 1's output; never written afterwards).
#[derive(Debug)]
pub struct Head {
    /// When the request header was read.
    pub started: Instant,
    /// Wall-clock start, for the exported span.
    pub started_at: SystemTime,
    /// `x-request-id` sent upstream and returned to the client.
    pub request_id: String,
    /// W3C trace context: the client's trace (or a new one) and the gateway's span.
    pub trace: TraceContext,
    /// `endpoint` label index ([`crate::api::endpoint_index`]).
    pub endpoint: usize,
}

/// Read the request header. `None`: no request to serve (the client left, or the request was
/// answered here and the connection closed).
pub async fn read(session: &mut ServerSession, live: &SharedState) -> Option<Head> {
    let refused = match session.read_request().await {
        Ok(true) => None,
        Ok(false) => return None,
        Err(e) if *e.etype() == ErrorType::InvalidHTTPHeader => {
            Some(GatewayError::BadRequest("malformed request"))
        }
        // The connection broke, or the guard refused the header and has answered.
        Err(_) => return None,
    };
    let refused = refused.or_else(|| {
        (session.req_header().method == Method::CONNECT)
            .then_some(GatewayError::MethodNotAllowed { allow: "GET, POST" })
    });
    if let Some(error) = refused {
        METRICS
            .connections_rejected
            .with_label_values(&["malformed"])
            .inc();
        let server = live.load().server_header.clone();
        let (mut header, body) = error.response(None);
        headers::set_server(&mut header, server.as_deref());
        session.set_keepalive(None);
        if session
            .write_response_header(Box::new(header))
            .await
            .is_ok()
        {
            let _ = session.write_response_body(body, true).await;
        }
        // Lingering close (the guard's): the client reads the answer before the connection goes.
        session.shutdown().await;
        return None;
    }
    let req = session.req_header();
    Some(Head {
        started: Instant::now(),
        started_at: SystemTime::now(),
        request_id: headers::request_id(req),
        trace: trace_context(req),
        endpoint: crate::api::endpoint_index(req.uri.path()),
    })
}

/// The request's trace context from its `traceparent` / `tracestate` (several `traceparent`
/// headers: start a new trace).
fn trace_context(req: &pingora_http::RequestHeader) -> TraceContext {
    let mut parents = req.headers.get_all("traceparent").iter();
    let parent = match (parents.next(), parents.next()) {
        (Some(one), None) => Some(one.as_bytes()),
        _ => None,
    };
    let state = req.headers.get("tracestate").map(|v| v.as_bytes());
    TraceContext::from_headers(parent, state)
}
