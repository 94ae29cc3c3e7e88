//! Exit as soon as the last in-flight request ends once shutdown has begun (control plane).
//!
//! Pingora sleeps its whole grace period after shutdown starts, whatever is left in flight.
//! This service waits for Pingora's shutdown broadcast (the listeners have stopped accepting by
//! then) and exits the process when the in-flight count reaches zero and no kept-alive
//! connection still waits its last moment for one more request (see `conn::Front`), or at the
//! deadline set by the signal that started the shutdown. A further SIGINT exits at once; a
//! SIGTERM caps the wait at `drain.timeout_ms`. It also tells systemd `READY=1` once the
//! services are up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::Traffic;
use super::{sdnotify, ExitPlan};
use crate::state::SharedState;

/// How long apart [`settled_idle`] looks twice.
const SETTLE: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(20);
/// After this long /ready stops waiting for the public listener (and the log would show why).
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// Where to connect to reach a listener bound to `addr` (a wildcard means this host).
fn loopback_for(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port())
}

/// The next execution phase, or never when there is no receiver (or it closed).
async fn next_phase(
    phases: &mut Option<broadcast::Receiver<ExecutionPhase>>,
) -> Option<ExecutionPhase> {
    let Some(rx) = phases.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(p) => return Some(p),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => {
                *phases = None;
                return std::future::pending().await;
            }
        }
    }
}

/// See the module doc.
pub struct LifecycleService {
    pub traffic: Arc<Traffic>,
    /// The live snapshot (its `drain:` settings).
    pub live: SharedState,
    pub exit: Arc<ExitPlan>,
    /// Pingora's execution phases: the hand-off to a new process shows up here.
    pub phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    /// Our listening addresses (public and admin).
    pub listen: Vec<std::net::SocketAddr>,
}

#[async_trait]
impl BackgroundService for LifecycleService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        crate::logging::start_writer();
        // Pingora may start the admin listener before the public one: /ready waits until the
        // public port really accepts.
        if let Some(&public) = self.listen.first() {
            let traffic = Arc::clone(&self.traffic);
            tokio::spawn(async move {
                let target = loopback_for(public);
                let deadline = Instant::now() + LISTEN_WAIT;
                while Instant::now() < deadline {
                    if tokio::net::TcpStream::connect(target).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(POLL).await;
                }
                traffic.set_listening();
            });
        }
        let pid = std::process::id();
        match sdnotify::notify(&format!("READY=1\nMAINPID={pid}\nSTATUS=serving")) {
            Ok(true) => info!(pid, "told systemd READY=1"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "sd_notify failed"),
        }
        let mut phases = self.phases.lock().ok().and_then(|mut p| p.take());
        while !*shutdown.borrow() {
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { return },
                phase = next_phase(&mut phases) => {
                    if matches!(phase, Some(ExecutionPhase::GracefulUpgradeCloseTimeout)) {
                        // The sockets are with the new process now: stop taking connections.
                        match super::quiesce::stop_accepting(&self.listen) {
                            Ok(n) => info!(listeners = n, "upgrade: sockets handed over; this process accepts no new connections"),
                            Err(e) => warn!(error = %e, "upgrade: cannot stop accepting; Pingora stops in 5 s"),
                        }
                    }
                }
            }
        }
        let (traffic, live) = (Arc::clone(&self.traffic), Arc::clone(&self.live));
        let limit = self.exit.limit();
        // A plain thread: runtimes are being shut down around us.
        let spawned = std::thread::Builder::new()
            .name("modelgate-exit".into())
            .spawn(move || wait_then_exit(&traffic, &live, limit));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the exit watchdog; Pingora's grace period applies");
        }
    }
}

/// Exit 0 after the queued log lines are written.
pub fn exit_now() -> ! {
    crate::logging::flush();
    std::process::exit(0)
}

/// Nothing in flight, and still nothing a moment later: a request that has just ended hands
/// its kept-alive connection to the linger wait (`conn::Front`) right after its count drops.
fn settled_idle(traffic: &Traffic) -> bool {
    if traffic.busy() != 0 {
        return false;
    }
    std::thread::sleep(SETTLE);
    traffic.busy() == 0
}

fn wait_then_exit(traffic: &Traffic, live: &SharedState, limit: Duration) -> ! {
    // SIGINT (Ctrl-C again) exits at once. SIGTERM — e.g. `systemctl stop` reaching an old
    // process still finishing its streams after an upgrade — is a drain: the wait is capped at
    // `drain.timeout_ms` from then on, but in-flight requests keep going.
    let force = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&force));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term));
    let started = Instant::now();
    let mut deadline = started + limit;
    info!(
        in_flight = traffic.in_flight(),
        limit_s = limit.as_secs_f64(),
        "listeners closed; exiting when the last in-flight request ends"
    );
    loop {
        let n = traffic.in_flight();
        if settled_idle(traffic) {
            info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "all in-flight requests finished; exiting"
            );
            exit_now();
        }
        if force.load(Ordering::Acquire) {
            warn!(in_flight = n, "SIGINT received again; exiting now");
            exit_now();
        }
        if term.swap(false, Ordering::AcqRel) {
            let drain = live.load().drain.timeout;
            deadline = deadline.min(Instant::now() + drain);
            info!(
                in_flight = n,
                timeout_ms = drain.as_millis() as u64,
                "SIGTERM: in-flight requests get drain.timeout_ms at most"
            );
        }
        if Instant::now() >= deadline {
            warn!(
                in_flight = n,
                "grace period over; exiting with requests still in flight"
            );
            exit_now();
        }
        std::thread::sleep(POLL);
    }
}
