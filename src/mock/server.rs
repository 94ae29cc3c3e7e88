//! The mock server's lifecycle: bind (with `SO_REUSEADDR`), accept loop, one hyper HTTP/1
//! connection task per socket, runtime knobs, and a stop that kills every connection.
//!
//! Runs on the tokio runtime that calls [`MockServer::start`] (a test's own runtime, or the
//! `modelgate-mock` binary's). Connection tasks live in one `JoinSet` owned by the accept loop,
//! so ending the loop ends them all. Must not leak tasks past `stop()` or drop.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

use super::handler::{self, Shared};
use super::sim::{SimConfig, SimHandle};
use super::{FailMode, MockConfig, MockLoad, MockStats};

/// Pending connections the kernel queues for us; load tests open many at once.
const LISTEN_BACKLOG: u32 = 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// A running mock vLLM server. Dropping it aborts the accept loop and every open connection.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    accept: Option<JoinHandle<()>>,
    /// The simulated engine's task, in sim mode.
    engine: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a server on `127.0.0.1` with a port chosen by the kernel.
    pub async fn start(cfg: MockConfig) -> io::Result<MockServer> {
        MockServer::start_on(cfg, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a server on `addr` (port 0 lets the kernel choose). `SO_REUSEADDR` is set, so a
    /// port freed by [`MockServer::stop`] can be bound again at once. Fails if the address is
    /// in use or cannot be bound. Must be called inside a tokio runtime.
    pub async fn start_on(cfg: MockConfig, addr: SocketAddr) -> io::Result<MockServer> {
        MockServer::start_with(cfg, None, addr).await
    }

    /// Starts a simulated vLLM server (see [`super::sim`]) on `127.0.0.1` with a port chosen by
    /// the kernel.
    pub async fn start_sim(cfg: MockConfig, sim: SimConfig) -> io::Result<MockServer> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        MockServer::start_with(cfg, Some(sim), addr).await
    }

    /// Starts a simulated vLLM server on `addr`: generations are scheduled by its own engine
    /// task instead of `cfg`'s fixed delays (`ttft`, `itl` and `load` are ignored), and the
    /// simulator's routes and metrics are served. Fails like [`MockServer::start_on`].
    pub async fn start_sim_on(
        cfg: MockConfig,
        sim: SimConfig,
        addr: SocketAddr,
    ) -> io::Result<MockServer> {
        MockServer::start_with(cfg, Some(sim), addr).await
    }

    async fn start_with(
        cfg: MockConfig,
        sim: Option<SimConfig>,
        addr: SocketAddr,
    ) -> io::Result<MockServer> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let (sim, engine) = match sim {
            Some(sim) => {
                let model = cfg.models.first().map_or("", String::as_str);
                let (handle, task) = SimHandle::start(sim, model).map_err(io::Error::other)?;
                (Some(handle), Some(task))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(cfg),
            stats: Arc::new(MockStats::default()),
            sim,
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        Ok(MockServer {
            addr,
            shared,
            shutdown: Some(shutdown),
            accept: Some(accept),
            engine,
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's counters; the `Arc` stays valid after the server stops.
    pub fn stats(&self) -> Arc<MockStats> {
        Arc::clone(&self.shared.stats)
    }

    /// The configuration requests currently see.
    pub fn config(&self) -> MockConfig {
        MockConfig::clone(&self.shared.config.load())
    }

    /// Changes the failure mode for requests that start from now on.
    pub fn set_fail(&self, fail: FailMode) {
        self.update(|c| c.fail = fail.clone());
    }

    /// Changes the time to first token for requests that start from now on.
    pub fn set_ttft(&self, ttft: Duration) {
        self.update(|c| c.ttft = ttft);
    }

    /// Changes the inter-token latency for requests that start from now on.
    pub fn set_itl(&self, itl: Duration) {
        self.update(|c| c.itl = itl);
    }

    /// Changes the number of generated tokens for requests that start from now on.
    pub fn set_tokens(&self, tokens: usize) {
        self.update(|c| c.tokens = tokens);
    }

    /// Changes the served models (and so `/v1/models` and the 404 check).
    pub fn set_models(&self, models: Vec<String>) {
        self.update(|c| c.models = models.clone());
    }

    /// Makes `/metrics` report `load` instead of the real in-flight count (`None` goes back to
    /// the real one), from the next scrape on.
    pub fn set_load(&self, load: Option<MockLoad>) {
        self.update(|c| c.load = load);
    }

    fn update(&self, change: impl Fn(&mut MockConfig)) {
        self.shared.config.rcu(|current| {
            let mut next = MockConfig::clone(current);
            change(&mut next);
            next
        });
    }

    /// Stops accepting, aborts every open connection (in-flight answers end abruptly, like a
    /// killed process; their streams count in [`MockStats::aborted`]) and waits until the port
    /// is released, so [`MockServer::start_on`] can bind the same address again.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The loop may already be gone (it only ends on shutdown); nothing to tell then.
            let _ = shutdown.send(());
        }
        if let Some(accept) = self.accept.take() {
            if let Err(e) = accept.await {
                debug!(error = %e, "mock accept loop ended abnormally");
            }
        }
        if let Some(engine) = self.engine.take() {
            engine.abort();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Aborting the loop drops its listener and its JoinSet, which aborts every connection.
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        if let Some(engine) = self.engine.take() {
            engine.abort();
        }
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("name", &self.shared.config.load().name)
            .finish_non_exhaustive()
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Either `stop()` or the sender dropped with the server.
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    debug!(error = %e, "mock accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // SSE chunks are small writes that must leave at once.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "mock could not set TCP_NODELAY");
    }
    let service = service_fn(move |req| handler::serve(Arc::clone(&shared), req));
    let connection = http1::Builder::new()
        .keep_alive(true)
        // No timer is installed: idle keep-alive connections stay open until the client closes
        // them, so a pooled gateway connection never races a server-side idle close.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        debug!(error = %e, "mock connection ended with an error");
    }
}
