//! The public listener's connection layer, in front of Pingora's HTTP/1 parser.
//!
//! [`Front`] wraps the proxy's [`ServerApp`]: every accepted connection is counted per client IP
//! (`limits.max_connections_per_ip`) and its stream wrapped in a [`guard::Guarded`] that
//! enforces what Pingora does not: a total deadline for the request header
//! (`limits.header_timeout_ms`, slowloris), `limits.max_header_bytes` and `limits.max_headers`
//! (431 before Pingora has buffered a megabyte), and an OpenAI-shaped JSON body in place of the
//! bare `400`/`405` (with `Server: Pingora`) that Pingora writes itself for a request it cannot
//! parse. The proxy tells the guard where one request ends and the next header begins through a
//! task-local [`ConnState`] (same task as the connection), so nothing here locks per request.

pub mod guard;
pub mod per_ip;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::error::GatewayError;
use crate::metrics::METRICS;
use crate::state::SharedState;

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

tokio::task_local! {
    /// The connection this task serves (set by [`Front::process_new`]).
    static CONN: Arc<ConnState>;
}

/// What the proxy tells the connection guard, per connection.
#[derive(Debug, Default)]
pub struct ConnState {
    /// The proxy has taken the current request (`request_filter` ran): responses written now
    /// are the gateway's own, not Pingora's parse errors.
    in_request: AtomicBool,
    /// A request ended: the next bytes read start a new request header.
    rearm: AtomicBool,
}

/// Called first thing in `request_filter`.
pub fn request_started() {
    let _ = CONN.try_with(|c| c.in_request.store(true, Ordering::Relaxed));
}

/// Called when a request is over (`logging`): the connection may carry another one.
pub fn request_finished() {
    let _ = CONN.try_with(|c| {
        c.in_request.store(false, Ordering::Relaxed);
        c.rearm.store(true, Ordering::Relaxed);
    });
}

/// The proxy app with the connection layer in front.
pub struct Front<A> {
    inner: Arc<A>,
    live: SharedState,
    per_ip: per_ip::PerIp,
}

impl<A> Front<A> {
    pub fn new(inner: A, live: SharedState) -> Self {
        Front {
            inner: Arc::new(inner),
            live,
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
        let snapshot = self.live.load();
        let limits = snapshot.limits;
        let slot = match limits.max_connections_per_ip {
            None => None,
            Some(cap) => {
                let ip = stream
                    .get_socket_digest()
                    .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
                match ip {
                    Some(ip) => match self.per_ip.acquire(ip, cap) {
                        Some(slot) => Some(slot),
                        None => {
                            METRICS
                                .connections_rejected
                                .with_label_values(&["per_ip_limit"])
                                .inc();
                            let server = snapshot.server_header.clone();
                            drop(snapshot);
                            Box::pin(refuse(&mut stream, server.as_deref())).await;
                            return None;
                        }
                    },
                    None => None,
                }
            }
        };
        let state = Arc::new(ConnState::default());
        let guarded = Box::new(guard::Guarded::new(
            stream,
            Arc::clone(&state),
            guard::HeaderLimits::from(&limits),
            Arc::clone(&self.live),
            slot,
        ));
        drop(snapshot);
        // The connection moves to a task of its own and Pingora's accept task ends here: that
        // task's future (sized for Pingora's handshake, TLS included) would otherwise stay
        // allocated for the connection's whole life, ~2 KiB per idle keep-alive connection.
        let front = Arc::clone(self);
        let shutdown = shutdown.clone();
        METRICS.open_connections.inc();
        tokio::spawn(async move {
            CONN.scope(state, front.serve(guarded, &shutdown)).await;
            METRICS.open_connections.dec();
        });
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Front<A> {
    /// Pingora's HTTP/1 keep-alive loop (`HttpServerApp::process_new`, plaintext, no h2c), with
    /// one change: the connection is handed to Pingora only once a request's first byte is
    /// there. Pingora's per-request state is tens of KiB; an idle connection then costs a few.
    async fn serve(self: &Arc<Self>, mut guarded: Box<guard::Guarded>, shutdown: &ShutdownWatch) {
        let mut persistent = None;
        let mut first = true;
        loop {
            if !request_bytes(&mut guarded, shutdown).await {
                return;
            }
            let mut session = ServerSession::new_http1(guarded);
            if first {
                // As Pingora does for a new connection.
                if *shutdown.borrow() {
                    session.set_keepalive(None);
                } else {
                    session.set_keepalive(Some(60));
                }
                session.set_keepalive_reuses_remaining(
                    self.inner
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
            } else if let Some(settings) = persistent.take() {
                HttpPersistentSettings::apply_to_session(settings, &mut session);
            }
            let Some(reused) = self.inner.process_new_http(session, shutdown).await else {
                return;
            };
            let stream;
            (stream, persistent) = reused.consume();
            // The stream Pingora hands back is the one it was given.
            let Ok(back) = stream.into_any().downcast::<guard::Guarded>() else {
                return;
            };
            guarded = back;
            first = false;
        }
    }
}

/// Wait until the client has sent part of a request (within the guard's deadline), and not
/// past a shutdown. False: close the connection.
async fn request_bytes(guarded: &mut guard::Guarded, shutdown: &ShutdownWatch) -> bool {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        biased;
        got = std::future::poll_fn(|cx| guarded.poll_request_bytes(cx)) => got,
        _ = shutdown.changed() => false,
    }
}

/// Answer a connection over the per-IP cap with a 429 and close it (lingering, so the client
/// reads the answer).
async fn refuse(stream: &mut Stream, server: Option<&str>) {
    let bytes = guard::raw_response(&GatewayError::TooManyConnections, server);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await;
    guard::linger(stream).await;
}
