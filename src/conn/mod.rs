//! The public listener's connection layer (request path): accept, the per-IP cap, the header
//! guard, and the HTTP/1 keep-alive loop that hands each request to the gateway's
//! [`HttpServerApp`].
//!
//! [`Front`] is the listener's [`ServerApp`]. Every accepted connection is counted per client IP
//! (`limits.max_connections_per_ip`; over the cap: a JSON 429 and a lingering close) and its
//! stream wrapped in a [`guard::Guarded`], which enforces what Pingora does not: a total deadline
//! for the request header (`limits.header_timeout_ms`, slowloris), `limits.max_header_bytes` and
//! `limits.max_headers` (a JSON 431 before Pingora has buffered a megabyte), the idle keep-alive
//! timeout, and write coalescing. The loop waits for a request's first byte through the stream's
//! public [`Peek`](pingora_core::protocols::Peek) (so an idle connection holds no session), then
//! calls [`HttpServerApp::process_new_http`] with a fresh [`ServerSession`]; when that returns
//! the stream, it tells the guard through the connection's [`ConnState`] (atomics) that the next
//! bytes start a new request header. No task-locals, no downcasts: the loop holds the state it
//! shares with the guard, and the app reads and answers the request itself.
//!
//! Shutdown (drain, or the old process after a binary upgrade) closes idle connections, except
//! that one whose last response ended less than 2 s ago (capped by the idle timeout) waits out
//! the rest of that time for a next request: that response may have started before the
//! shutdown and so lacked `Connection: close`, and its client may be reusing the connection
//! already. The app answers that request with `Connection: close`; the process's exit waits for
//! lingering connections through the hold the app's wiring passes to [`Front::new`].
//!
//! Must not: import the proxy (the app is a type parameter), read the config, or answer a request
//! with anything but its own refusals (429 per IP, 431 and 408 for a header the guard refused).

pub mod guard;
pub mod per_ip;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::error::GatewayError;
use crate::metrics::METRICS;

/// The client-side limits (`limits:`): what a connection and its requests may send and take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request line + header block; more is a 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Most header lines in one request; more is a 431 and the connection is closed.
    pub max_headers: usize,
    /// Longest a request header may take to arrive, in total (from accept for a connection's
    /// first request, from its first byte for later ones); then 408 and close.
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may sit between requests; then it is closed quietly.
    pub idle_timeout: Duration,
    /// Longest the whole request body may take to arrive, in total; then 408 and close.
    pub body_timeout: Duration,
    /// Longest a write to the client may block (a client that stops reading is dropped and
    /// its upstream request cancelled).
    pub client_write_timeout: Duration,
    /// Most open connections from one client IP (`None` = no cap).
    pub max_connections_per_ip: Option<u32>,
}

/// What a new connection is accepted with: the limits and `Server` header in force.
#[derive(Debug, Clone)]
pub struct Accept {
    pub limits: Limits,
    /// The `Server` header of the connection layer's own refusals (`None`: none).
    pub server: Option<Arc<str>>,
}

/// What the keep-alive loop tells the guard of its connection.
#[derive(Debug, Default)]
pub struct ConnState {
    /// A request ended: the next bytes read start a new request header.
    rearm: AtomicBool,
}

impl ConnState {
    /// The app gave the connection back after a request: the next one may idle for
    /// `idle_timeout_ms`, then its header is watched again.
    pub fn request_finished(&self) {
        self.rearm.store(true, Ordering::Relaxed);
    }

    /// Whether a request ended since the last call (the guard re-arms once per request).
    fn take_rearm(&self) -> bool {
        // A plain load first: this runs on every read, and the flag is rarely set.
        self.rearm.load(Ordering::Relaxed) && self.rearm.swap(false, Ordering::Relaxed)
    }
}

/// Longest a kept-alive connection waits for one more request once shutdown began, counted
/// from the end of its last response (or its accept). Its client may already be sending on it:
/// a response that started before the shutdown went out without `Connection: close`.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(2);

/// Something held while a connection lingers after shutdown (the process waits for it).
pub type LingerHold = Box<dyn Send>;

/// The gateway's app with the connection layer in front.
pub struct Front<A> {
    app: Arc<A>,
    /// The limits and `Server` header in force, read at each accept.
    accept: Box<dyn Fn() -> Accept + Send + Sync>,
    /// Taken while a connection lingers after shutdown, dropped when it stops.
    linger: Box<dyn Fn() -> LingerHold + Send + Sync>,
    per_ip: per_ip::PerIp,
}

impl<A> Front<A> {
    /// `linger` is called when a connection starts waiting for one more request after
    /// shutdown began; what it returns is held until that wait ends.
    pub fn new(
        app: A,
        accept: impl Fn() -> Accept + Send + Sync + 'static,
        linger: impl Fn() -> LingerHold + Send + Sync + 'static,
    ) -> Self {
        Front {
            app: Arc::new(app),
            accept: Box::new(accept),
            linger: Box::new(linger),
            per_ip: per_ip::PerIp::default(),
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accept = (self.accept)();
        let slot = match accept.limits.max_connections_per_ip {
            None => None,
            Some(cap) => {
                let ip = stream
                    .get_socket_digest()
                    .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
                match ip.map(|ip| self.per_ip.acquire(ip, cap)) {
                    Some(None) => {
                        METRICS
                            .connections_rejected
                            .with_label_values(&["per_ip_limit"])
                            .inc();
                        Box::pin(refuse(&mut stream, accept.server.as_deref())).await;
                        return None;
                    }
                    Some(slot) => slot,
                    None => None,
                }
            }
        };
        let state = Arc::new(ConnState::default());
        let guarded: Stream = Box::new(guard::Guarded::new(
            stream,
            Arc::clone(&state),
            guard::HeaderLimits::from(&accept.limits),
            accept.server,
            slot,
        ));
        // The connection moves to a task of its own and Pingora's accept task ends here: that
        // task's future (sized for Pingora's handshake, TLS included) would otherwise stay
        // allocated for the connection's whole life, ~2 KiB per idle keep-alive connection.
        let front = Arc::clone(self);
        let shutdown = shutdown.clone();
        let linger = SHUTDOWN_LINGER.min(accept.limits.idle_timeout);
        METRICS.open_connections.inc();
        tokio::spawn(async move {
            front.serve(guarded, &state, &shutdown, linger).await;
            METRICS.open_connections.dec();
        });
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Front<A> {
    /// The HTTP/1 keep-alive loop (as Pingora's `ServerApp` for an `HttpServerApp` runs it,
    /// plaintext, no h2c), with one change: a session is made only once a request's first
    /// byte is there. Pingora's per-request state is tens of KiB; an idle connection then costs
    /// a few. Once shutdown began, a connection still waits up to `linger` after its last
    /// response (or its accept) for a request its client may have sent already; that request
    /// is answered with `Connection: close`.
    async fn serve(
        &self,
        mut stream: Stream,
        state: &ConnState,
        shutdown: &ShutdownWatch,
        linger: Duration,
    ) {
        let mut persistent = None;
        let mut first = true;
        let mut last_end = Instant::now();
        loop {
            if !self
                .request_bytes(&mut stream, shutdown, last_end + linger)
                .await
            {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            if first {
                // As Pingora does for a new connection.
                session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
                session.set_keepalive_reuses_remaining(
                    self.app
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
            } else if let Some(settings) = persistent.take() {
                HttpPersistentSettings::apply_to_session(settings, &mut session);
            }
            let Some(reused) = self.app.process_new_http(session, shutdown).await else {
                return;
            };
            (stream, persistent) = reused.consume();
            last_end = Instant::now();
            state.request_finished();
            first = false;
        }
    }

    /// Wait until the client has sent part of a request (within the guard's deadline, through
    /// [`Peek`](pingora_core::protocols::Peek)). After shutdown, wait only until `linger_until`,
    /// holding a [`LingerHold`]. False: close the connection.
    async fn request_bytes(
        &self,
        stream: &mut Stream,
        shutdown: &ShutdownWatch,
        linger_until: Instant,
    ) -> bool {
        let mut shutdown = shutdown.clone();
        let mut byte = [0u8; 1];
        if !*shutdown.borrow() {
            tokio::select! {
                biased;
                peeked = stream.try_peek(&mut byte) => return matches!(peeked, Ok(true)),
                _ = shutdown.changed() => {}
            }
        }
        if Instant::now() >= linger_until {
            return false;
        }
        let _hold = (self.linger)();
        let peeked = tokio::time::timeout_at(linger_until.into(), stream.try_peek(&mut byte));
        matches!(peeked.await, Ok(Ok(true)))
    }
}

/// Answer a connection over the per-IP cap with a 429 and close it (lingering, so the client
/// reads the answer).
async fn refuse(stream: &mut Stream, server: Option<&str>) {
    let bytes = guard::raw_response(&GatewayError::TooManyConnections, server);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await;
    guard::linger(stream).await;
}
