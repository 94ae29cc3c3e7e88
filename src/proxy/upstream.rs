//! Upstream keep-alive connections: one idle pool per worker thread, and a write-coalescing
//! wrapper around each connection (request path).
//!
//! Replaces Pingora's shared pool for proxied requests. Measured with `perf stat` on syscalls
//! (wrk -c 32, one worker thread), Pingora's pool cost per request a `getpeername` (it re-checks
//! the fd's peer on every reuse), a spawned idle-watch task and a lock hand-off with it, and the
//! timer that hand-off made us arm woke the runtime through its eventfd; sending header and body
//! cost two `sendto` plus two `setsockopt(TCP_CORK)`. Here:
//!
//! - **Per-thread pools.** Pingora's worker threads are separate single-threaded runtimes
//!   (`work_stealing: false`); each keeps its own idle connections in a thread-local, so taking
//!   and returning one is a `RefCell` borrow: no lock, no task, no system call. Reuse is LIFO
//!   (the warmest connection first); entries idle longer than [`UPSTREAM_IDLE_POOL`] are closed
//!   (shorter than uvicorn's 5 s keep-alive, so the backend never closes one under us first).
//!   A connection the backend closed while idle is found without a system call: its readiness
//!   is already set, and the one-byte probe read sees EOF (as Pingora's own check does).
//! - **A sweeper per thread** (a task on that thread's runtime, alive only while the pool holds
//!   connections) closes expired and dead ones every second, so an idle gateway does not keep
//!   half-closed sockets to backends that went quiet.
//! - **Coalescing.** While [`Pooled::hold`] is on, writes collect in a small buffer and `flush`
//!   does nothing; turning it off lets the next flush send header and body in one `send`, as
//!   nginx's `writev` does. Only used when the whole (small) body is in hand; past [`HOLD_MAX`]
//!   bytes it stops holding and writes through. The switch is an `Arc` kept beside the boxed
//!   stream in the pool entry, so neither holding nor releasing needs the stream's type.
//!
//! [`UPSTREAM_IDLE_POOL`]: crate::routing::pool::UPSTREAM_IDLE_POOL

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::protocols::{Peek, Shutdown, Stream};
use pingora_core::upstreams::peer::HttpPeer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::routing::pool::UPSTREAM_IDLE_POOL;

/// Bytes held back while coalescing; a bigger request is written through.
pub const HOLD_MAX: usize = 16 * 1024;
/// Idle connections one thread keeps per backend; more are closed on release.
const PER_BACKEND: usize = 1024;
/// Idle connections one thread keeps over all backends.
const PER_THREAD: usize = 4096;
/// How often a thread's sweeper closes expired and dead idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Opens upstream connections and pools them per worker thread.
pub struct Upstream {
    connector: TransportConnector,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            connector: TransportConnector::new(None),
        }
    }
}

/// A session on an upstream connection of this module, with its write-coalescing switch.
pub struct Pooled {
    pub http: UpstreamSession,
    /// The connection came from the idle pool (it may have been closed by the backend since).
    pub reused: bool,
    switch: Arc<Switch>,
}

/// The coalescing state a connection's [`Coalesce`] wrapper shares with its pool entry.
#[derive(Debug, Default)]
struct Switch {
    /// Writes are held back.
    hold: AtomicBool,
    /// Bytes are held and not sent yet.
    pending: AtomicBool,
}

/// Holds writes until dropped (see the module doc).
pub struct Hold(Arc<Switch>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.hold.store(false, Ordering::Relaxed);
    }
}

impl Pooled {
    /// Hold this connection's writes until the returned guard drops; the next flush then sends
    /// them together.
    pub fn hold(&self) -> Hold {
        self.switch.hold.store(true, Ordering::Relaxed);
        Hold(Arc::clone(&self.switch))
    }
}

impl Upstream {
    /// A session on an idle pooled connection to `peer`, or on a new one. `key` is
    /// `peer.reuse_hash()` (kept by the caller, not hashed per request). The connect timeout is
    /// the peer's `connection_timeout`.
    pub async fn session(&self, peer: &HttpPeer, key: u64) -> pingora_error::Result<Pooled> {
        let (conn, switch, reused) = match take(key) {
            Some((conn, switch)) => (conn, switch, true),
            None => {
                let stream = self.connector.new_stream(peer).await?;
                let switch = Arc::new(Switch::default());
                let conn: Stream = Box::new(Coalesce::new(stream, Arc::clone(&switch)));
                (conn, switch, false)
            }
        };
        Ok(Pooled {
            http: UpstreamSession::new_with_options(conn, peer),
            reused,
            switch,
        })
    }

    /// Return a finished exchange's connection to this thread's pool, or close it (not
    /// keep-alive, body not fully read, bytes still held, or the backend already sent more).
    pub async fn release(&self, pooled: Pooled, key: u64) {
        let Pooled {
            http: mut session,
            switch,
            ..
        } = pooled;
        session.respect_keepalive();
        let Some(mut stream) = session.reuse().await else {
            return;
        };
        if switch.pending.load(Ordering::Relaxed) || !reusable(&mut stream) {
            return;
        }
        put(key, stream, switch);
    }
}

/// Idle connections of this thread.
#[derive(Default)]
struct Idle {
    by_peer: HashMap<u64, VecDeque<(Stream, Arc<Switch>, Instant)>>,
    total: usize,
    sweeping: bool,
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

/// The most recently returned live connection to `key`, closing dead and expired ones met on
/// the way.
fn take(key: u64) -> Option<(Stream, Arc<Switch>)> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let idle = &mut *idle;
        let queue = idle.by_peer.get_mut(&key)?;
        let mut found = None;
        while let Some((mut conn, switch, since)) = queue.pop_back() {
            idle.total -= 1;
            if since.elapsed() >= UPSTREAM_IDLE_POOL {
                // Everything older sits in front of it: close the lot.
                idle.total -= queue.len();
                queue.clear();
                break;
            }
            if reusable(&mut conn) {
                found = Some((conn, switch));
                break;
            }
        }
        if queue.is_empty() {
            idle.by_peer.remove(&key);
        }
        found
    })
}

/// Keep `conn` for reuse; start this thread's sweeper if it is not running.
fn put(key: u64, conn: Stream, switch: Arc<Switch>) {
    let start_sweeper = IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let idle = &mut *idle;
        if idle.total >= PER_THREAD {
            return false;
        }
        let queue = idle.by_peer.entry(key).or_default();
        if queue.len() >= PER_BACKEND {
            queue.pop_front();
        } else {
            idle.total += 1;
        }
        queue.push_back((conn, switch, Instant::now()));
        !std::mem::replace(&mut idle.sweeping, true)
    });
    if start_sweeper {
        spawn_sweeper();
    }
}

/// A task on this thread's runtime that sweeps its pool until the pool is empty. Only on a
/// single-threaded runtime (Pingora's workers): elsewhere a task may run on another thread and
/// see another pool, so connections are only checked when taken.
fn spawn_sweeper() {
    let on_this_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !on_this_thread {
        return;
    }
    tokio::spawn(async {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            if sweep() == 0 {
                IDLE.with(|idle| idle.borrow_mut().sweeping = false);
                return;
            }
        }
    });
}

/// Close this thread's expired and dead idle connections; how many stay.
fn sweep() -> usize {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let mut total = 0;
        idle.by_peer.retain(|_, queue| {
            queue.retain_mut(|(conn, _, since)| {
                since.elapsed() < UPSTREAM_IDLE_POOL && reusable(conn)
            });
            total += queue.len();
            !queue.is_empty()
        });
        idle.total = total;
        total
    })
}

/// Whether an idle connection is still open and quiet: a one-byte read that would block. EOF,
/// an error or unexpected bytes (the backend never speaks first) mean it must be closed. No
/// system call unless the socket became readable.
fn reusable(conn: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    tokio::task::unconstrained(conn.read(&mut byte))
        .now_or_never()
        .is_none()
}

/// An upstream connection whose writes can be held back and sent together.
pub struct Coalesce {
    inner: Stream,
    switch: Arc<Switch>,
    held: Vec<u8>,
    /// Bytes of `held` already written.
    sent: usize,
}

impl std::fmt::Debug for Coalesce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesce")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Coalesce {
    fn new(inner: Stream, switch: Arc<Switch>) -> Self {
        Coalesce {
            inner,
            switch,
            held: Vec::new(),
            sent: 0,
        }
    }

    /// Write out what is held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sent =
            crate::io_wrap::poll_send_held(&mut self.inner, &mut self.held, &mut self.sent, cx);
        if self.held.is_empty() {
            self.switch.pending.store(false, Ordering::Relaxed);
        }
        sent
    }

    /// Take `len` more bytes into the hold buffer, unless that would pass [`HOLD_MAX`] (then
    /// holding stops for this exchange).
    fn holds(&mut self, len: usize) -> bool {
        if !self.switch.hold.load(Ordering::Relaxed) {
            return false;
        }
        if self.held.len() + len > HOLD_MAX {
            self.switch.hold.store(false, Ordering::Relaxed);
            return false;
        }
        self.switch.pending.store(true, Ordering::Relaxed);
        true
    }
}

impl AsyncRead for Coalesce {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesce {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum();
        if this.holds(len) {
            for b in bufs {
                this.held.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        if !this.held.is_empty() {
            std::task::ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.switch.hold.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Coalesce {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

crate::io_wrap::delegate_stream_digests!(Coalesce);

#[async_trait]
impl Peek for Coalesce {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (Coalesce, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(client));
        (Coalesce::new(stream, Arc::default()), server)
    }

    #[tokio::test]
    async fn held_writes_leave_together_at_the_flush_after_release() {
        let (mut conn, mut server) = pair().await;
        conn.switch.hold.store(true, Ordering::Relaxed);
        conn.write_all(b"head ").await.unwrap();
        conn.flush().await.unwrap();
        conn.write_all(b"body").await.unwrap();
        // Nothing on the wire while holding, even after a flush.
        let mut byte = [0u8; 1];
        assert!(server.read(&mut byte).now_or_never().is_none());
        conn.switch.hold.store(false, Ordering::Relaxed);
        conn.flush().await.unwrap();
        let mut got = [0u8; 9];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"head body");
        assert!(conn.held.is_empty());
    }

    #[tokio::test]
    async fn a_big_write_stops_holding_and_keeps_the_order() {
        let (mut conn, mut server) = pair().await;
        conn.switch.hold.store(true, Ordering::Relaxed);
        conn.write_all(b"head").await.unwrap();
        let big = vec![b'x'; HOLD_MAX];
        conn.write_all(&big).await.unwrap();
        assert!(!conn.switch.hold.load(Ordering::Relaxed));
        conn.flush().await.unwrap();
        let mut got = vec![0u8; 4 + HOLD_MAX];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..].iter().all(|&b| b == b'x'));
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_peer_is_not_reusable() {
        let (conn, server) = pair().await;
        let mut conn: Stream = Box::new(conn);
        assert!(reusable(&mut conn));
        drop(server);
        // Wait until the FIN has been seen (readiness set), bounded.
        let mut closed = false;
        for _ in 0..200 {
            if !reusable(&mut conn) {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(closed);
    }

    #[tokio::test]
    async fn the_pool_is_lifo_and_skips_dead_connections() {
        let (a, _sa) = pair().await;
        let (b, sb) = pair().await;
        let (a_id, b_id) = (a.inner.id(), b.inner.id());
        let (a, mut b): (Stream, Stream) = (Box::new(a), Box::new(b));
        drop(sb);
        // Wait (bounded) until b has seen the FIN.
        for _ in 0..200 {
            if !reusable(&mut b) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!reusable(&mut b));
        put(7, a, Arc::default());
        put(7, b, Arc::default());
        // b (the newest) is dead: a is returned instead.
        let (got, _) = take(7).expect("a live connection");
        assert_eq!(got.id(), a_id);
        assert_ne!(got.id(), b_id);
        assert!(take(7).is_none());
        assert!(take(8).is_none());
    }
}
