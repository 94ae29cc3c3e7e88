//! The prefill leg of a disaggregated request (request path): the prefill body to a prefill
//! server, its whole (one-token) answer read back, its `kv_transfer_params` taken out.
//!
//! Retries follow the prefill side's `retries` exactly as a plain request's do (nothing has
//! reached the client yet, and the body is held): another prefill server after a connection
//! failure, a timeout, or a `retry_on` status. Any other non-200 answer is the client's (a 400
//! for a bad request, say) and is relayed as it is. The client going away closes the upstream
//! connection at once, so the prefill server aborts.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::protocols::http::ServerSession;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_timeout::fast_timeout::fast_timeout;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::warn;

use super::super::forward::{self, AttemptError, Exchanged, Leg};
use crate::error::GatewayError;
use crate::routing::{BackendState, Pool};

/// A prefill answer carries one token and the transfer parameters: far below this.
pub const MAX_PREFILL_ANSWER: usize = 1 << 20;

/// What the prefill leg did, for the receipt, the access log and the decode leg's deadline.
#[derive(Debug, Clone)]
pub struct PrefillLeg {
    /// The prefill backend that answered (or last failed).
    pub backend: String,
    pub attempts: u32,
    /// From the leg's start to its end.
    pub duration: Duration,
}

/// How the leg ended.
#[derive(Debug)]
pub enum End {
    /// The raw JSON of the answer's `kv_transfer_params`.
    Params(Bytes),
    /// An answer to relay to the client as it is (a non-retryable status).
    Answer(Box<ResponseHeader>, Bytes),
    Failed(GatewayError),
    ClientGone,
}

/// One finished exchange: status, header and the whole body.
type Answer = (Box<ResponseHeader>, Bytes);

/// Runs the prefill leg on `leg.pool` (the prefill side) with `body`; records it in
/// `out.prefill`.
pub async fn run(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    body: &Bytes,
    out: &mut Exchanged,
) -> End {
    let pool = leg.pool;
    let started = Instant::now();
    let deadline = started + pool.timeouts.request;
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut last: Option<GatewayError> = None;
    let mut leg_record = PrefillLeg {
        backend: String::new(),
        attempts: 0,
        duration: Duration::ZERO,
    };
    let end = loop {
        if leg_record.attempts >= pool.retries.max_attempts {
            break End::Failed(last.unwrap_or(GatewayError::Upstream));
        }
        let first = leg_record.attempts == 0;
        let acquired = forward::acquire(pool, &tried, &leg.affinity, first, deadline).await;
        let (pick, mut slot) = match acquired {
            Ok(picked) => picked,
            Err(e) => break End::Failed(last.filter(|_| !first).unwrap_or(e)),
        };
        let backend = &pool.backends[pick.index];
        tried.push(pick.index);
        leg_record.attempts += 1;
        leg_record.backend.clone_from(&backend.config.name);
        backend.metrics.attempts.inc();
        let req = forward::request_header(session, leg, backend, Some(body.len() as u64), 0);
        let t = Instant::now();
        let result = tokio::select! {
            r = exchange(leg, backend, req, body, deadline) => r,
            () = forward::client_gone(session) => break End::ClientGone,
        };
        slot.first_byte();
        record(leg.head.endpoint, backend, &result, t.elapsed());
        let more = leg_record.attempts < pool.retries.max_attempts && Instant::now() < deadline;
        match judge(pool, result, more) {
            Judged::Done(end) => break end,
            Judged::Retry(error, cause) => {
                warn!(model = %pool.name, backend = %backend.config.name, cause, "prefill attempt failed; trying another prefill server");
                pool.metrics.retry(cause);
                last = Some(error);
            }
        }
    };
    leg_record.duration = started.elapsed();
    out.prefill = Some(leg_record);
    end
}

/// What one attempt's result means for the leg.
enum Judged {
    Done(End),
    /// Try another prefill server: the error to answer if none is left, and the retry cause.
    Retry(GatewayError, &'static str),
}

fn judge(pool: &Pool, result: Result<Answer, AttemptError>, more: bool) -> Judged {
    let retry = |allowed: bool, error: GatewayError, cause| {
        if allowed && more {
            Judged::Retry(error, cause)
        } else {
            Judged::Done(End::Failed(error))
        }
    };
    let r = &pool.retries;
    match result {
        Ok((header, body)) => match header.status.as_u16() {
            200 => Judged::Done(params(&body)),
            429 if r.on_http_429 && more => Judged::Retry(GatewayError::Upstream, "http_429"),
            502..=504 if r.on_http_5xx && more => Judged::Retry(GatewayError::Upstream, "http_5xx"),
            _ => Judged::Done(End::Answer(header, body)),
        },
        Err(AttemptError::Timeout) => retry(r.on_timeout, GatewayError::Timeout, "timeout"),
        Err(_) => retry(
            r.on_connection_failure,
            GatewayError::Upstream,
            "connection_failure",
        ),
    }
}

/// The answer's `kv_transfer_params`, as raw JSON; an answer without them (or with `null`)
/// cannot be decoded elsewhere.
fn params(body: &[u8]) -> End {
    #[derive(Deserialize)]
    struct Prefilled<'a> {
        #[serde(borrow, default)]
        kv_transfer_params: Option<&'a RawValue>,
    }
    match serde_json::from_slice::<Prefilled<'_>>(body) {
        Ok(Prefilled {
            kv_transfer_params: Some(raw),
        }) => End::Params(Bytes::copy_from_slice(raw.get().as_bytes())),
        Ok(_) => End::Failed(GatewayError::BadPrefill(
            "The prefill server answered without kv_transfer_params: is it running vLLM with a KV connector (--kv-transfer-config)?",
        )),
        Err(_) => End::Failed(GatewayError::BadPrefill(
            "The prefill server's answer is not JSON",
        )),
    }
}

/// Per-backend metrics of the attempt (the prefill backend's series).
fn record(
    endpoint: usize,
    backend: &BackendState,
    result: &Result<Answer, AttemptError>,
    took: Duration,
) {
    let status = match result {
        Ok((h, _)) => h.status.as_u16(),
        Err(AttemptError::Timeout) => 504,
        Err(_) => 502,
    };
    let m = &backend.metrics;
    m.request(endpoint, crate::metrics::status_class(status));
    m.duration.observe(took.as_secs_f64());
}

/// Sends `body` with `req` to `backend` and reads the whole answer, within the side's connect,
/// first-byte and idle timeouts and the leg's deadline.
async fn exchange(
    leg: &Leg<'_>,
    backend: &BackendState,
    req: RequestHeader,
    body: &Bytes,
    deadline: Instant,
) -> Result<Answer, AttemptError> {
    let pool = leg.pool;
    let mut pooled = forward::connect(leg.upstream, pool, backend, deadline).await?;
    let up = &mut pooled.http;
    let send = async {
        up.write_request_header(Box::new(req)).await?;
        up.write_body(body).await?;
        up.finish_body().await
    };
    match fast_timeout(forward::remaining(deadline), send).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(AttemptError::Connection { stale: false }),
        Err(_) => return Err(AttemptError::Timeout),
    }
    let first = pool.timeouts.first_byte.min(forward::remaining(deadline));
    let header = match fast_timeout(first, up.read_resp_header_parts()).await {
        Ok(Ok(h)) => h,
        Ok(Err(_)) => return Err(AttemptError::Connection { stale: false }),
        Err(_) => return Err(AttemptError::Timeout),
    };
    let body = read_body(up, pool, deadline).await?;
    leg.upstream.release(pooled, backend.reuse_key).await;
    Ok((header, body))
}

/// The whole answer body, at most [`MAX_PREFILL_ANSWER`] bytes.
async fn read_body(
    up: &mut UpstreamSession,
    pool: &Pool,
    deadline: Instant,
) -> Result<Bytes, AttemptError> {
    let mut out = Vec::new();
    loop {
        let idle = pool.timeouts.idle.min(forward::remaining(deadline));
        match fast_timeout(idle, up.read_body_bytes()).await {
            Ok(Ok(Some(chunk))) if out.len() + chunk.len() <= MAX_PREFILL_ANSWER => {
                out.extend_from_slice(&chunk)
            }
            Ok(Ok(Some(_))) | Ok(Err(_)) => return Err(AttemptError::Connection { stale: false }),
            Ok(Ok(None)) => return Ok(Bytes::from(out)),
            Err(_) => return Err(AttemptError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_taken_raw_and_their_absence_is_a_bad_prefill() {
        let body = br#"{"id":"x","choices":[],"kv_transfer_params":{"remote_block_ids":[1, 2],"remote_engine_id":"e-1","remote_host":"10.0.0.1","remote_port":5600,"do_remote_prefill":true,"do_remote_decode":false}}"#;
        match params(body) {
            End::Params(p) => assert_eq!(
                &p[..],
                &br#"{"remote_block_ids":[1, 2],"remote_engine_id":"e-1","remote_host":"10.0.0.1","remote_port":5600,"do_remote_prefill":true,"do_remote_decode":false}"#[..]
            ),
            other => panic!("{other:?}"),
        }
        for bad in [
            &br#"{"id":"x"}"#[..],
            br#"{"kv_transfer_params":null}"#,
            b"not json",
        ] {
            match params(bad) {
                End::Failed(GatewayError::BadPrefill(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}
