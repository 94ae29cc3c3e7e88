//! The upstream exchange: pick a backend, send the request, relay the response chunk by chunk,
//! retry only while nothing has reached the client (request path).
//!
//! Timeouts: `connect` per connection attempt; `first_byte` from the request being sent to the
//! response header (TTFT for streams); `idle` between response chunks; `request` for the whole
//! exchange. A failure after the first response byte ends the response without its terminator
//! (a stream is cut without `data: [DONE]`) so the client sees an error, never a short answer.
//! While waiting, the client connection is watched: if the client goes away the upstream
//! connection is closed at once so vLLM aborts the generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use pingora_timeout::fast_timeout::fast_timeout;
use tracing::{debug, warn};

use super::body::Upload;
use super::ctx::RequestCtx;
use super::headers;
use super::shadow::{self, Shadows};
use super::upstream::{self, Upstream};
use crate::error::GatewayError;
use crate::routing::{Affinity, BackendState, InFlightGuard, Pick, Pool};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fresh-connection retries after a pooled keep-alive connection turned out to be closed by the
/// backend; these do not count as attempts (nothing reached the backend's application).
const STALE_RETRIES: u32 = 2;

/// Extra wait beyond the probe timeout for a never-probed pool's first round.
const FIRST_PROBE_SLACK: Duration = Duration::from_millis(500);
/// Poll step while waiting for it.
const FIRST_PROBE_POLL: Duration = Duration::from_millis(5);

/// How an exchange ended, for the caller's logging.
#[derive(Debug)]
pub enum Outcome {
    /// The whole response was relayed.
    Complete,
    /// Nothing was relayed; answer the client with this error.
    Failed(GatewayError),
    /// The response started and was cut; `cause` says why. The connection must be closed.
    Cut(&'static str),
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
    let overloaded = || GatewayError::Overloaded {
        model: pool.name.clone(),
    };
    if !pool.has_healthy() {
        return Err(no_backend());
    }
    if !pool.limited {
        return Err(no_backend());
    }
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

/// Forward the request to `pool`, retrying per its policy.
pub async fn forward(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
    upload: &mut Upload,
    connector: &Upstream,
    shadows: &Shadows,
) -> Outcome {
    // A disaggregated request's decode leg has its own budget, from the prefill leg's end.
    let leg_start = ctx.started + ctx.prefill.as_ref().map_or(Duration::ZERO, |p| p.duration);
    let deadline = leg_start + pool.timeouts.request;
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    // The error of the last failed attempt; none yet means no backend was ever picked.
    let mut last: Option<GatewayError> = None;
    while ctx.attempts < pool.retries.max_attempts {
        let prompt = ctx.prompt.take();
        let affinity = Affinity {
            key: ctx.sticky_key,
            prompt: prompt.as_ref(),
        };
        let acquired = acquire(pool, &tried, &affinity, ctx.attempts == 0, deadline).await;
        ctx.prompt = prompt;
        let (pick, slot) = match acquired {
            Ok(picked) => picked,
            Err(e) => {
                // The first attempt's error (503/429) or, for a retry, the failure before.
                if last.is_none() || ctx.attempts == 0 {
                    last = Some(e);
                }
                break;
            }
        };
        let index = pick.index;
        ctx.cache_pick = pick.cache;
        // Dropped (in flight and prefill backlog released) when the attempt ends.
        ctx.slot = Some(slot);
        if tried.last().is_some_and(|&prev| prev != index) {
            pool.metrics.failovers.inc();
        }
        tried.push(index);
        let backend = &pool.backends[index];
        backend.metrics.attempts.inc();
        ctx.backend_index = Some(index);
        ctx.attempts += 1;
        let more_allowed = ctx.attempts < pool.retries.max_attempts;
        let mut stale_left = STALE_RETRIES;
        let result = loop {
            let r = attempt(
                session,
                ctx,
                pool,
                backend,
                upload,
                connector,
                shadows,
                deadline,
                more_allowed,
            )
            .await;
            match r {
                Err(AttemptError::Connection { stale: true }) if stale_left > 0 => {
                    stale_left -= 1;
                    debug!(backend = %backend.config.name, "pooled connection was closed; retrying on a fresh one");
                }
                other => break other,
            }
        };
        ctx.slot = None;
        let (retry, error, cause) = match result {
            Ok(()) => return Outcome::Complete,
            Err(AttemptError::Cut(cause)) => return Outcome::Cut(cause),
            Err(AttemptError::ClientGone) => return Outcome::Cut("client_gone"),
            Err(AttemptError::Fatal(e)) => return Outcome::Failed(e),
            Err(AttemptError::Connection { .. }) => {
                warn!(model = %pool.name, backend = %backend.config.name, attempt = ctx.attempts, "upstream connection failed");
                (
                    pool.retries.on_connection_failure,
                    GatewayError::Upstream,
                    "connection_failure",
                )
            }
            Err(AttemptError::Timeout) => {
                warn!(model = %pool.name, backend = %backend.config.name, attempt = ctx.attempts, "upstream timed out before the first byte");
                (pool.retries.on_timeout, GatewayError::Timeout, "timeout")
            }
            Err(AttemptError::RetryableStatus(cause)) => (true, GatewayError::Upstream, cause),
        };
        last = Some(error);
        if !retry
            || !upload.can_replay()
            || Instant::now() >= deadline
            || ctx.attempts >= pool.retries.max_attempts
        {
            break;
        }
        pool.metrics.retry(cause);
    }
    Outcome::Failed(last.unwrap_or_else(|| GatewayError::NoHealthyBackend {
        model: pool.name.clone(),
    }))
}

pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Resolves when the client closes its connection (the body has been read completely).
pub(super) async fn client_gone(session: &mut Session) {
    loop {
        match session.downstream_session.read_body_or_idle(true).await {
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
) -> Result<(UpstreamSession, bool), AttemptError> {
    let connect_budget = pool.timeouts.connect.min(remaining(deadline));
    match fast_timeout(
        connect_budget,
        connector.session(&backend.peer, backend.reuse_key),
    )
    .await
    {
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
    session: &Session,
    ctx: &RequestCtx,
    backend: &BackendState,
    fixed: Option<u64>,
    delta: i64,
) -> pingora_http::RequestHeader {
    let mut req = headers::upstream_request(
        session.req_header(),
        &backend.config.path_prefix,
        &ctx.request_id,
        session.client_addr().and_then(|a| a.as_inet()).copied(),
    );
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
    let strip = ctx
        .snapshot
        .as_ref()
        .and_then(|s| s.tenants.as_ref())
        .is_some_and(|t| !t.pass_authorization);
    if strip {
        req.remove_header("authorization");
        req.remove_header("api-key");
    }
    if let Some(key) = &backend.config.api_key {
        let _ = req.insert_header("authorization", format!("Bearer {key}"));
    }
    // W3C Trace Context: the backend's parent is the gateway's span.
    let _ = req.insert_header("traceparent", ctx.trace.header_value());
    match &ctx.trace.tracestate {
        Some(state) => {
            let _ = req.insert_header("tracestate", state.as_str());
        }
        None => {
            req.remove_header("tracestate");
        }
    }
    req
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pool: &Pool,
    backend: &BackendState,
    upload: &mut Upload,
    connector: &Upstream,
    shadows: &Shadows,
    deadline: Instant,
    more_allowed: bool,
) -> Result<(), AttemptError> {
    let (mut up, reused) = connect(connector, pool, backend, deadline).await?;
    let req = request_header(
        session,
        ctx,
        backend,
        upload.fixed_length,
        upload.length_delta,
    );
    // The shadow copy goes to another pool: the client's request without this backend's prefix.
    let shadow_req = ctx.shadow.then(|| {
        let mut r = headers::upstream_request(
            session.req_header(),
            "",
            &ctx.request_id,
            session.client_addr().and_then(|a| a.as_inet()).copied(),
        );
        let _ = r.insert_header("traceparent", ctx.trace.header_value());
        r
    });
    let sent = fast_timeout(remaining(deadline), send(session, &mut up, req, upload)).await;
    match sent {
        Ok(Ok(())) => {
            if let (Some(req), Some(snapshot)) = (shadow_req, ctx.snapshot.as_ref()) {
                ctx.shadow = false;
                let target = pool
                    .shadow
                    .as_ref()
                    .and_then(|s| snapshot.pool(&s.model))
                    .map(|p| {
                        p.served_model_name
                            .as_deref()
                            .unwrap_or(&p.name)
                            .to_string()
                    });
                let body = target.and_then(|name| upload.body_with_model(&name));
                shadow::send(shadows, snapshot, pool, &req, body);
            }
        }
        Ok(Err(SendError::Upstream)) => return Err(AttemptError::Connection { stale: reused }),
        Ok(Err(SendError::Client(e))) => return Err(AttemptError::Fatal(e)),
        Err(_) => return Err(AttemptError::Timeout),
    }
    // (A body of the gateway's own, a disaggregated leg, is not what the client sent.)
    if upload.fixed_length.is_none() {
        ctx.bytes_in = upload.read;
    }

    // Wait for the response header (first byte), watching the client.
    let first_byte_budget = pool.timeouts.first_byte.min(remaining(deadline));
    let header = tokio::select! {
        r = fast_timeout(first_byte_budget, up.read_resp_header_parts()) => r,
        () = client_gone(session) => return Err(AttemptError::ClientGone),
    };
    let mut resp: Box<ResponseHeader> = match header {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            debug!(backend = %backend.config.name, error = %e, "reading response header failed");
            return Err(AttemptError::Connection {
                stale: reused && up.body_bytes_received() == 0,
            });
        }
        Err(_) => return Err(AttemptError::Timeout),
    };
    let status = resp.status.as_u16();
    let retryable_status = (pool.retries.on_http_5xx && matches!(status, 502..=504))
        || (pool.retries.on_http_429 && status == 429);
    if retryable_status && more_allowed && upload.can_replay() {
        warn!(model = %pool.name, backend = %backend.config.name, status, "backend answered a retryable status; trying another backend");
        return Err(AttemptError::RetryableStatus(if status == 429 {
            "http_429"
        } else {
            "http_5xx"
        }));
    }

    // From here on bytes reach the client: no retry.
    upload.release();
    let both = super::disagg::receipt(ctx, &backend.config.name);
    headers::downstream_response(
        &mut resp,
        both.as_deref().unwrap_or(&backend.config.name),
        ctx.attempts,
        &ctx.request_id,
    );
    headers::set_server(
        &mut resp,
        ctx.snapshot
            .as_ref()
            .and_then(|s| s.server_header.as_deref()),
    );
    let _ = resp.insert_header(
        "x-modelgate-policy",
        http::HeaderValue::from_static(pool.policy.as_str()),
    );
    let _ = resp.insert_header("x-modelgate-model", pool.name.as_str());
    let end = up.is_body_done();
    ctx.status = status;
    ctx.response_started = true;
    ctx.stream = resp
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if status == 200 {
        ctx.tail = Some(Box::default());
    }
    if session.write_response_header(resp, end).await.is_err() {
        return Err(AttemptError::ClientGone);
    }
    if end {
        ctx.first_byte = Some(Instant::now());
    }
    relay_body(session, ctx, pool, backend, &mut up, deadline).await?;
    connector.release(up, backend.reuse_key).await;
    Ok(())
}

enum SendError {
    Upstream,
    Client(GatewayError),
}

/// Write the request header and the whole body upstream.
async fn send(
    session: &mut Session,
    up: &mut UpstreamSession,
    req: pingora_http::RequestHeader,
    upload: &mut Upload,
) -> Result<(), SendError> {
    // The client's body is all read (the usual small request): header and body leave upstream
    // in one `send` instead of two.
    let coalesce = session.is_body_done();
    if coalesce {
        upstream::hold(up, true);
    }
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
    if coalesce {
        upstream::hold(up, false);
    }
    up.finish_body().await.map_err(|_| SendError::Upstream)?;
    Ok(())
}

/// Relay the response body chunk by chunk, unbuffered.
async fn relay_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pool: &Pool,
    backend: &BackendState,
    up: &mut UpstreamSession,
    deadline: Instant,
) -> Result<(), AttemptError> {
    loop {
        if up.is_body_done() {
            return match session.write_response_body(None, true).await {
                Ok(()) => Ok(()),
                Err(_) => Err(AttemptError::ClientGone),
            };
        }
        let left = remaining(deadline);
        let idle = pool.timeouts.idle.min(left);
        let next = tokio::select! {
            r = fast_timeout(idle, up.read_body_bytes()) => r,
            () = client_gone(session) => return Err(AttemptError::ClientGone),
        };
        let chunk: Option<Bytes> = match next {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(error = %e, "upstream body read failed");
                return Err(AttemptError::Cut("backend_error"));
            }
            Err(_) if idle < pool.timeouts.idle => {
                return Err(AttemptError::Cut("request_timeout"))
            }
            Err(_) => return Err(AttemptError::Cut("idle_timeout")),
        };
        let Some(chunk) = chunk else {
            if up.is_body_done() {
                continue;
            }
            return Err(AttemptError::Cut("backend_error"));
        };
        ctx.bytes_out += chunk.len() as u64;
        let now = Instant::now();
        match ctx.last_chunk {
            None => {
                ctx.first_byte = Some(now);
                // The first token: the backend has prefilled the prompt.
                if let Some(slot) = ctx.slot.as_mut() {
                    slot.first_byte();
                }
            }
            Some(prev) if ctx.stream => backend
                .metrics
                .chunk_gap
                .observe(now.duration_since(prev).as_secs_f64()),
            Some(_) => {}
        }
        ctx.last_chunk = Some(now);
        if let Some(tail) = ctx.tail.as_mut() {
            tail.feed(&chunk);
        }
        let end = up.is_body_done();
        if session.write_response_body(Some(chunk), end).await.is_err() {
            return Err(AttemptError::ClientGone);
        }
        if end {
            return Ok(());
        }
    }
}
