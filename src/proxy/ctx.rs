//! Per-request state carried through Pingora's phases (request path).

use std::sync::Arc;
use std::time::Instant;

use super::disagg::prefill::PrefillLeg;
use crate::auth::{Tenant, TenantGuard};
use crate::lifecycle::RequestGuard;
use crate::metrics::usage::Tail;
use crate::routing::cache_aware::Choice;
use crate::routing::prefix::PromptBlocks;
use crate::routing::{InFlightGuard, Pool};
use crate::state::Snapshot;
use crate::telemetry::TraceContext;

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
    /// The pool serving the request, once the model is known.
    pub pool: Option<Arc<Pool>>,
    /// Index in `pool.backends` of the backend that served (or last failed).
    pub backend_index: Option<usize>,
    /// `model` named a model no pool serves.
    pub unknown_model: bool,
    /// `endpoint` label index ([`crate::metrics::endpoint_index`]).
    pub endpoint: usize,
    /// When the first response body byte went to the client.
    pub first_byte: Option<Instant>,
    /// When the previous body chunk went out (stream gap histogram).
    pub last_chunk: Option<Instant>,
    /// The response is an SSE stream.
    pub stream: bool,
    /// `cause` is a response cut after it started (not a gateway error).
    pub cut: bool,
    /// The end of a 200 response body, for `usage`.
    pub tail: Option<Box<Tail>>,
    /// W3C trace context: the client's trace (or a new one) and the gateway's span.
    pub trace: TraceContext,
    /// Wall-clock start, for the exported span.
    pub started_at: std::time::SystemTime,
    /// Hash of the sticky key (`consistent_hash`), when the request has one.
    pub sticky_key: Option<u64>,
    /// The prompt's block hashes (`cache_aware`).
    pub prompt: Option<PromptBlocks>,
    /// What `cache_aware` decided for the attempt that served (or last failed).
    pub cache_pick: Option<Choice>,
    /// The backend slot of the running attempt (its in-flight count and prefill backlog).
    pub slot: Option<InFlightGuard>,
    /// A disaggregated request's prefill leg, once run.
    pub prefill: Option<PrefillLeg>,
    /// A shadow copy is due once the body has been sent.
    pub shadow: bool,
    /// The API key's tenant, when authentication is on.
    pub tenant: Option<Arc<Tenant>>,
    /// The tenant's in-flight slot.
    pub tenant_slot: Option<TenantGuard>,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            request_id: String::new(),
            model: None,
            attempts: 0,
            status: 0,
            response_started: false,
            cause: None,
            bytes_in: 0,
            bytes_out: 0,
            in_flight: None,
            pool: None,
            backend_index: None,
            unknown_model: false,
            endpoint: 0,
            first_byte: None,
            last_chunk: None,
            stream: false,
            cut: false,
            tail: None,
            trace: TraceContext::EMPTY,
            started_at: std::time::SystemTime::now(),
            sticky_key: None,
            prompt: None,
            cache_pick: None,
            slot: None,
            prefill: None,
            shadow: false,
            tenant: None,
            tenant_slot: None,
        }
    }
}
