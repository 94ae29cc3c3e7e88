//! Stage 5, the exchange (request path): pick a backend, send the request, relay the response
//! chunk by chunk, retry only while nothing has reached the client.
//!
//! Timeouts: `connect` per connection attempt; `first_byte` from the request being sent to the
//! response header (TTFT for streams); `idle` between response chunks; `request` for the whole
//! exchange. A failure after the first response byte ends the response without its terminator
//! (a stream is cut without `data: [DONE]`) so the client sees an error, never a short answer.
//! While waiting, the client connection is watched: if the client goes away the upstream
//! connection is closed at once so vLLM aborts the generation. What the exchange did is written
//! to its [`Exchanged`] record only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;
use pingora_timeout::fast_timeout::fast_timeout;
use tracing::{debug, warn};

use super::body::Upload;
use super::disagg::prefill::PrefillLeg;
use super::head::Head;
use super::headers;
use super::shadow::{self, Shadows};
use super::upstream::{Pooled, Upstream};
use crate::error::GatewayError;
use crate::metrics::usage::Tail;
use crate::oneshot::STALE_RETRIES;
use crate::routing::cache_aware::Choice;
use crate::routing::{Affinity, BackendState, InFlightGuard, Pick, Pool};
use crate::state::Snapshot;

/// Extra wait beyond the probe timeout for a never-probed pool's first round.
const FIRST_PROBE_SLACK: Duration = Duration::from_millis(500);
/// Poll step while waiting for it.
const FIRST_PROBE_POLL: Duration = Duration::from_millis(5);

/// How an exchange ended, for the caller's answer and log.
#[derive(Debug)]
pub enum Outcome {
    /// The whole response was relayed.
    Complete,
    /// Nothing was relayed; answer the client with this error.
    Failed(GatewayError),
    /// The response started and was cut; `cause` says why. The connection must be closed.
    Cut(&'static str),
}

/// What the exchange did, for the end record: written by the exchange (and the gateway's own
/// answers), read when the request ends.
#[derive(Debug, Default)]
pub struct Exchanged {
    /// Upstream attempts made (the decode leg's, for a disaggregated request).
    pub attempts: u32,
    /// Index in the pool's backends of the backend that served (or last failed).
    pub backend: Option<usize>,
    /// What `cache_aware` decided for that attempt.
    pub cache_pick: Option<Choice>,
    /// A disaggregated request's prefill leg, once run.
    pub prefill: Option<PrefillLeg>,
    /// Status sent to the client (0 = none).
    pub status: u16,
    /// Whether any response byte reached the client: from then on no retry, no error body.
    pub response_started: bool,
    /// The response is an SSE stream.
    pub stream: bool,
    /// When the first response body byte went to the client.
    pub first_byte: Option<Instant>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes written to the client.
    pub bytes_out: u64,
    /// The end of a 200 response body, for `usage`.
    pub tail: Option<Box<Tail>>,
}

/// One exchange with one pool (a request, or a disaggregated request's decode leg): what every
/// attempt reads.
#[derive(Clone, Copy)]
pub struct Leg<'a> {
    pub head: &'a Head,
    pub snapshot: &'a Snapshot,
    pub pool: &'a Arc<Pool>,
    pub upstream: &'a Upstream,
    pub shadows: &'a Shadows,
    /// What the request offers for sticky picks.
    pub affinity: Affinity<'a>,
    /// A shadow copy of the request is due.
    pub shadow: bool,
    /// The end of the leg's `timeouts.request`.
    pub deadline: Instant,
}

/// Why one attempt failed before anything reached the client.
#[derive(Debug)]
pub(super) enum AttemptError {
    /// Could not connect, or the connection broke before a response header.
    Connection { stale: bool },
    /// Connect or first-byte timeout.
    Timeout,
    /// The backend answered a status the pool retries on (`http_5xx` / `http_429`); the
    /// response was not relayed.
    RetryableStatus(&'static str),
    /// Not retryable: answer with this error.
    Fatal(GatewayError),
    /// The response started and was then cut.
    Cut(&'static str),
    /// The client went away.
    ClientGone,
}

/// One attempt on one backend.
struct Attempt<'a> {
    backend: &'a BackendState,
    /// The backend slot (its in-flight count and prefill backlog), released when it drops.
    slot: InFlightGuard,
    /// Another attempt may follow this one.
    more_allowed: bool,
    /// The shadow copy is still due (it goes once, after the first complete send).
    shadow_due: &'a mut bool,
}

/// Forward the request to `leg.pool`, retrying per its policy.
pub async fn forward(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    upload: &mut Upload,
    out: &mut Exchanged,
) -> Outcome {
    let pool = leg.pool;
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    // The error of the last failed attempt; none yet means no backend was ever picked.
    let mut last: Option<GatewayError> = None;
    let mut shadow_due = leg.shadow;
    while out.attempts < pool.retries.max_attempts {
        let first = out.attempts == 0;
        let (pick, slot) = match acquire(pool, &tried, &leg.affinity, first, leg.deadline).await {
            Ok(picked) => picked,
            Err(e) => {
                // The first attempt's error (503/429) or, for a retry, the failure before.
                if last.is_none() || first {
                    last = Some(e);
                }
                break;
            }
        };
        if tried.last().is_some_and(|&prev| prev != pick.index) {
            pool.metrics.failovers.inc();
        }
        tried.push(pick.index);
        let backend = &pool.backends[pick.index];
        backend.metrics.attempts.inc();
        (out.backend, out.cache_pick) = (Some(pick.index), pick.cache);
        out.attempts += 1;
        let mut attempt = Attempt {
            backend,
            slot,
            more_allowed: out.attempts < pool.retries.max_attempts,
            shadow_due: &mut shadow_due,
        };
        let result = attempt_fresh(session, leg, upload, out, &mut attempt).await;
        drop(attempt);
        let (retry, error, cause) = match judge(pool, backend, out.attempts, result) {
            Ok(done) => return done,
            Err(failed) => failed,
        };
        last = Some(error);
        if !retry
            || !upload.can_replay()
            || Instant::now() >= leg.deadline
            || out.attempts >= pool.retries.max_attempts
        {
            break;
        }
        pool.metrics.retry(cause);
    }
    Outcome::Failed(last.unwrap_or_else(|| GatewayError::NoHealthyBackend {
        model: pool.name.clone(),
    }))
}

/// What an attempt's result means: `Ok`, the exchange is over; `Err`, whether the pool retries
/// this failure, the error to answer if none is left, and the retry cause.
fn judge(
    pool: &Pool,
    backend: &BackendState,
    attempt: u32,
    result: Result<(), AttemptError>,
) -> Result<Outcome, (bool, GatewayError, &'static str)> {
    let name = &backend.config.name;
    match result {
        Ok(()) => Ok(Outcome::Complete),
        Err(AttemptError::Cut(cause)) => Ok(Outcome::Cut(cause)),
        Err(AttemptError::ClientGone) => Ok(Outcome::Cut("client_gone")),
        Err(AttemptError::Fatal(e)) => Ok(Outcome::Failed(e)),
        Err(AttemptError::Connection { .. }) => {
            warn!(model = %pool.name, backend = %name, attempt, "upstream connection failed");
            let retry = pool.retries.on_connection_failure;
            Err((retry, GatewayError::Upstream, "connection_failure"))
        }
        Err(AttemptError::Timeout) => {
            warn!(model = %pool.name, backend = %name, attempt, "upstream timed out before the first byte");
            Err((pool.retries.on_timeout, GatewayError::Timeout, "timeout"))
        }
        Err(AttemptError::RetryableStatus(cause)) => Err((true, GatewayError::Upstream, cause)),
    }
}

/// Pick a backend and take one of its in-flight slots.
///
/// - A pool none of whose backends has been probed yet (a process that just started, e.g. the
///   new binary of an upgrade, or a model a reload just added) waits for its first probe round,
///   bounded by the probe timeout, instead of failing with 503.
/// - When every healthy backend is at `max_in_flight`, a first attempt waits in the model's
///   bounded FIFO queue (`max_queue`, `queue_timeout_ms`) for a slot; a full queue or a
///   timeout sheds it with 429 at once. Retries never queue.
pub(super) async fn acquire(
    pool: &Pool,
    tried: &[usize],
    key: &Affinity<'_>,
    first: bool,
    deadline: Instant,
) -> Result<(Pick, InFlightGuard), GatewayError> {
    // Arrivals do not overtake requests already queued (unless a reload lifted the limits).
    if !first || !pool.limited || pool.live.queued.load(Ordering::Acquire) == 0 {
        if let Some(picked) = try_pick(pool, tried, key, first) {
            return Ok(picked);
        }
    }
    if first && !pool.is_checked() && !pool.has_healthy() {
        let until = deadline.min(Instant::now() + pool.health.timeout + FIRST_PROBE_SLACK);
        while Instant::now() < until && !pool.is_checked() {
            tokio::time::sleep(FIRST_PROBE_POLL).await;
            if let Some(picked) = try_pick(pool, tried, key, first) {
                return Ok(picked);
            }
        }
    }
    let no_backend = || GatewayError::NoHealthyBackend {
        model: pool.name.clone(),
    };
    if !pool.has_healthy() || !pool.limited {
        return Err(no_backend());
    }
    let overloaded = || GatewayError::Overloaded {
        model: pool.name.clone(),
    };
    if !first {
        return Err(overloaded());
    }
    // Queue: bounded, FIFO (tokio's Notify wakes waiters in order), one wake per freed slot.
    let live = &pool.live;
    let position = live.queued.fetch_add(1, Ordering::AcqRel);
    let _leave = QueueSlot(&live.queued);
    if position >= pool.max_queue {
        return Err(overloaded());
    }
    let until = deadline.min(Instant::now() + pool.queue_timeout);
    loop {
        let notified = live.released.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(picked) = try_pick(pool, tried, key, first) {
            return Ok(picked);
        }
        if !pool.has_healthy() {
            return Err(no_backend());
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(until.into()) => return Err(overloaded()),
        }
    }
}

/// Leaves the queue on drop (served, shed or cancelled).
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Select and reserve a slot; a backend that filled up between the pick and the reservation
/// is skipped.
fn try_pick(
    pool: &Pool,
    tried: &[usize],
    key: &Affinity<'_>,
    first: bool,
) -> Option<(Pick, InFlightGuard)> {
    for _ in 0..=pool.backends.len() {
        let pick = pool.choose(tried, key, first)?;
        if let Some(mut guard) = pool.backends[pick.index].try_track() {
            pool.record_pick(&pick, key, &mut guard);
            return Some((pick, guard));
        }
    }
    None
}

pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Resolves when the client closes its connection (the body has been read completely).
pub(super) async fn client_gone(session: &mut ServerSession) {
    loop {
        match session.read_body_or_idle(true).await {
            Err(_) => return,
            // Pipelined bytes are not a close; keep waiting.
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

/// A session to `backend` (pooled when possible), within the pool's connect timeout and the
/// request's deadline.
pub(super) async fn connect(
    connector: &Upstream,
    pool: &Pool,
    backend: &BackendState,
    deadline: Instant,
) -> Result<Pooled, AttemptError> {
    let connect_budget = pool.timeouts.connect.min(remaining(deadline));
    let connecting = connector.session(&backend.peer, backend.reuse_key);
    match fast_timeout(connect_budget, connecting).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            debug!(backend = %backend.config.name, error = %e, "connect failed");
            Err(match e.etype() {
                pingora_error::ErrorType::ConnectTimedout => AttemptError::Timeout,
                _ => AttemptError::Connection { stale: false },
            })
        }
        Err(_) => Err(AttemptError::Timeout),
    }
}

/// The request header sent to `backend`: the client's, without hop-by-hop headers, with the
/// backend's path prefix, request id, forwarding and trace headers, and its own API key. The
/// body's length is `fixed` when the gateway sends a body of its own (the framing becomes
/// `Content-Length`), else the client's adjusted by `delta` (a spliced `model`).
pub(super) fn request_header(
    session: &ServerSession,
    leg: &Leg<'_>,
    backend: &BackendState,
    fixed: Option<u64>,
    delta: i64,
) -> pingora_http::RequestHeader {
    let client = session.client_addr().and_then(|a| a.as_inet()).copied();
    let (head, prefix) = (leg.head, &backend.config.path_prefix);
    let mut req = headers::upstream_request(session.req_header(), prefix, &head.request_id, client);
    if let Some(len) = fixed {
        req.remove_header("transfer-encoding");
        let _ = req.insert_header("content-length", len);
    } else if delta != 0 {
        // `model` was spliced: the body's length changed by exactly that much.
        let len = req
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        if let Some(len) = len {
            let _ = req.insert_header("content-length", (len + delta).max(0));
        }
    }
    // The client's API key is the gateway's business: strip it unless told to pass it; a
    // backend's own `api_key` (vLLM --api-key) replaces it.
    let strip = leg.snapshot.strips_authorization();
    headers::set_credentials(&mut req, strip, backend.config.api_key.as_deref());
    headers::set_trace(&mut req, &head.trace);
    req
}

/// One attempt, on a fresh connection again when a pooled one turns out to have been closed
/// by the backend (at most [`STALE_RETRIES`] times: that is not the backend failing).
async fn attempt_fresh(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    upload: &mut Upload,
    out: &mut Exchanged,
    attempt: &mut Attempt<'_>,
) -> Result<(), AttemptError> {
    let mut stale_left = STALE_RETRIES;
    loop {
        match attempt_once(session, leg, upload, out, attempt).await {
            Err(AttemptError::Connection { stale: true }) if stale_left > 0 => {
                stale_left -= 1;
                debug!(backend = %attempt.backend.config.name, "pooled connection was closed; retrying on a fresh one");
            }
            other => return other,
        }
    }
}

/// Send the request, wait for the response header, relay the response.
async fn attempt_once(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    upload: &mut Upload,
    out: &mut Exchanged,
    attempt: &mut Attempt<'_>,
) -> Result<(), AttemptError> {
    let mut up = send_request(session, leg, upload, attempt).await?;
    // (A body of the gateway's own, a disaggregated leg, is not what the client sent.)
    if upload.fixed_length.is_none() {
        out.bytes_in = upload.read;
    }
    let resp = response_header(session, leg, attempt, &mut up).await?;
    if is_retryable(leg.pool, attempt, upload, &resp) {
        let status = resp.status.as_u16();
        warn!(model = %leg.pool.name, backend = %attempt.backend.config.name, status, "backend answered a retryable status; trying another backend");
        let cause = if status == 429 {
            "http_429"
        } else {
            "http_5xx"
        };
        return Err(AttemptError::RetryableStatus(cause));
    }
    // From here on bytes reach the client: no retry.
    upload.release();
    relay_header(session, leg, attempt, resp, up.http.is_body_done(), out).await?;
    relay_body(session, leg, attempt, &mut up, out).await?;
    leg.upstream.release(up, attempt.backend.reuse_key).await;
    Ok(())
}

/// Connect and send the request header and the whole body (then the shadow copy, if due).
async fn send_request(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    upload: &mut Upload,
    attempt: &mut Attempt<'_>,
) -> Result<Pooled, AttemptError> {
    let backend = attempt.backend;
    let mut up = connect(leg.upstream, leg.pool, backend, leg.deadline).await?;
    let req = request_header(
        session,
        leg,
        backend,
        upload.fixed_length,
        upload.length_delta,
    );
    let sent = fast_timeout(remaining(leg.deadline), send(session, &mut up, req, upload)).await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(SendError::Upstream)) => return Err(AttemptError::Connection { stale: up.reused }),
        Ok(Err(SendError::Client(e))) => return Err(AttemptError::Fatal(e)),
        Err(_) => return Err(AttemptError::Timeout),
    }
    if std::mem::take(attempt.shadow_due) {
        shadow::send(leg.shadows, session, leg, upload);
    }
    Ok(up)
}

/// Wait for the response header (the first byte), watching the client.
async fn response_header(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    attempt: &Attempt<'_>,
    up: &mut Pooled,
) -> Result<Box<ResponseHeader>, AttemptError> {
    let first_byte_budget = leg.pool.timeouts.first_byte.min(remaining(leg.deadline));
    let header = tokio::select! {
        r = fast_timeout(first_byte_budget, up.http.read_resp_header_parts()) => r,
        () = client_gone(session) => return Err(AttemptError::ClientGone),
    };
    match header {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => {
            debug!(backend = %attempt.backend.config.name, error = %e, "reading response header failed");
            Err(AttemptError::Connection {
                stale: up.reused && up.http.body_bytes_received() == 0,
            })
        }
        Err(_) => Err(AttemptError::Timeout),
    }
}

/// Whether the pool retries this answer on another backend instead of relaying it.
fn is_retryable(
    pool: &Pool,
    attempt: &Attempt<'_>,
    upload: &Upload,
    resp: &ResponseHeader,
) -> bool {
    let status = resp.status.as_u16();
    let retryable = (pool.retries.on_http_5xx && matches!(status, 502..=504))
        || (pool.retries.on_http_429 && status == 429);
    retryable && attempt.more_allowed && upload.can_replay()
}

/// Relay the response header with the route receipt.
async fn relay_header(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    attempt: &Attempt<'_>,
    mut resp: Box<ResponseHeader>,
    end: bool,
    out: &mut Exchanged,
) -> Result<(), AttemptError> {
    let name = &attempt.backend.config.name;
    let both = super::disagg::receipt(out, name);
    let backend = both.as_deref().unwrap_or(name);
    headers::downstream_response(&mut resp, backend, out.attempts, &leg.head.request_id);
    headers::set_server(&mut resp, leg.snapshot.server_header.as_deref());
    let policy = http::HeaderValue::from_static(leg.pool.policy.as_str());
    let _ = resp.insert_header("x-modelgate-policy", policy);
    let _ = resp.insert_header("x-modelgate-model", leg.pool.name.as_str());
    let status = resp.status.as_u16();
    out.status = status;
    out.response_started = true;
    out.stream = resp
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if status == 200 {
        out.tail = Some(Box::default());
    }
    if session.write_response_header(resp).await.is_err() {
        return Err(AttemptError::ClientGone);
    }
    if end {
        out.first_byte = Some(Instant::now());
    }
    Ok(())
}

enum SendError {
    Upstream,
    Client(GatewayError),
}

/// Write the request header and the whole body upstream.
async fn send(
    session: &mut ServerSession,
    up: &mut Pooled,
    req: pingora_http::RequestHeader,
    upload: &mut Upload,
) -> Result<(), SendError> {
    // The client's body is all read (the usual small request): header and body leave upstream
    // in one `send` instead of two.
    let hold = session.is_body_done().then(|| up.hold());
    let up = &mut up.http;
    up.write_request_header(Box::new(req))
        .await
        .map_err(|_| SendError::Upstream)?;
    for chunk in upload.held() {
        up.write_body(chunk)
            .await
            .map_err(|_| SendError::Upstream)?;
    }
    while let Some(chunk) = upload
        .next_for_upstream(session)
        .await
        .map_err(SendError::Client)?
    {
        up.write_body(&chunk)
            .await
            .map_err(|_| SendError::Upstream)?;
    }
    drop(hold);
    up.finish_body().await.map_err(|_| SendError::Upstream)?;
    Ok(())
}

/// Relay the response body chunk by chunk, unbuffered.
async fn relay_body(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    attempt: &mut Attempt<'_>,
    up: &mut Pooled,
    out: &mut Exchanged,
) -> Result<(), AttemptError> {
    let up = &mut up.http;
    let idle_timeout = leg.pool.timeouts.idle;
    let mut last_chunk: Option<Instant> = None;
    while !up.is_body_done() {
        let idle = idle_timeout.min(remaining(leg.deadline));
        let next = tokio::select! {
            r = fast_timeout(idle, up.read_body_bytes()) => r,
            () = client_gone(session) => return Err(AttemptError::ClientGone),
        };
        let chunk = match next {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) if up.is_body_done() => break,
            Ok(Ok(None)) => return Err(AttemptError::Cut("backend_error")),
            Ok(Err(e)) => {
                debug!(error = %e, "upstream body read failed");
                return Err(AttemptError::Cut("backend_error"));
            }
            Err(_) if idle < idle_timeout => return Err(AttemptError::Cut("request_timeout")),
            Err(_) => return Err(AttemptError::Cut("idle_timeout")),
        };
        let now = Instant::now();
        match last_chunk {
            None => {
                out.first_byte = Some(now);
                // The first token: the backend has prefilled the prompt.
                attempt.slot.first_byte();
                // A time-to-first-token sample (a timed request's: `load_aware`).
                if out.stream {
                    attempt.slot.first_token(now);
                }
            }
            Some(prev) if out.stream => attempt
                .backend
                .metrics
                .chunk_gap
                .observe(now.duration_since(prev).as_secs_f64()),
            Some(_) => {}
        }
        last_chunk = Some(now);
        out.bytes_out += chunk.len() as u64;
        if let Some(tail) = out.tail.as_mut() {
            tail.feed(&chunk);
        }
        let end = up.is_body_done();
        if session.write_response_body(chunk, end).await.is_err() {
            return Err(AttemptError::ClientGone);
        }
        if end {
            return Ok(());
        }
    }
    match session.write_response_body(Bytes::new(), true).await {
        Ok(()) => Ok(()),
        Err(_) => Err(AttemptError::ClientGone),
    }
}
