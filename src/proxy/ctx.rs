//! Per-request state carried through Pingora's phases (request path).

use std::sync::Arc;
use std::time::Instant;

use crate::control::RequestGuard;
use crate::state::Snapshot;

/// What one request has learned and done so far.
#[derive(Debug)]
pub struct RequestCtx {
    /// When the request header arrived.
    pub started: Instant,
    /// The snapshot this request was routed with (loaded once).
    pub snapshot: Option<Arc<Snapshot>>,
    /// `x-request-id` sent upstream and returned to the client.
    pub request_id: String,
    /// The model named by the body.
    pub model: Option<String>,
    /// Backend that served (or last failed) the request.
    pub backend: Option<String>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Status sent to the client (0 = none).
    pub status: u16,
    /// Whether any response byte reached the client: from then on no retry, no error body.
    pub response_started: bool,
    /// Why the request failed or was cut, if it did.
    pub cause: Option<&'static str>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes written to the client.
    pub bytes_out: u64,
    /// Holds the process-wide in-flight count up while the request lives.
    pub in_flight: Option<RequestGuard>,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            request_id: String::new(),
            model: None,
            backend: None,
            attempts: 0,
            status: 0,
            response_started: false,
            cause: None,
            bytes_in: 0,
            bytes_out: 0,
            in_flight: None,
        }
    }
}
