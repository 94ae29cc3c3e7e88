//! modelgate's replacement for Pingora's signal handling; see the [module doc](super).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use super::upgrade::{self, SelfCommand};
use super::Traffic;
use super::{sdnotify, ExitPlan};
use crate::state::SharedState;

/// How long a binary started by `SIGUSR2` may take to reach the hand-off socket.
const SUCCESSOR_START_LIMIT: Duration = Duration::from_secs(30);

/// See the module doc.
pub struct GatewaySignals {
    pub traffic: Arc<Traffic>,
    /// The live snapshot (its `drain:` settings).
    pub live: SharedState,
    /// `server.grace_period_s` as started (an upgrade's wait for in-flight requests).
    pub grace: Duration,
    pub exit: Arc<ExitPlan>,
    pub upgrade_sock: PathBuf,
    pub self_command: Option<SelfCommand>,
}

struct Streams {
    quit: Signal,
    term: Signal,
    int: Signal,
    usr2: Signal,
}

fn streams() -> std::io::Result<Streams> {
    Ok(Streams {
        quit: signal(SignalKind::quit())?,
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        usr2: signal(SignalKind::user_defined2())?,
    })
}

enum Asked {
    Quit,
    Drain(&'static str),
    SpawnUpgrade,
}

#[async_trait]
impl ShutdownSignalWatch for GatewaySignals {
    async fn recv(&self) -> ShutdownSignal {
        let mut s = match streams() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot install signal handlers; exiting");
                return ShutdownSignal::FastShutdown;
            }
        };
        loop {
            let asked = tokio::select! {
                _ = s.quit.recv() => Asked::Quit,
                _ = s.term.recv() => Asked::Drain("SIGTERM"),
                _ = s.int.recv() => Asked::Drain("SIGINT"),
                _ = s.usr2.recv() => Asked::SpawnUpgrade,
            };
            match asked {
                Asked::Quit => {
                    if upgrade::listener_waiting(&self.upgrade_sock) {
                        return self.hand_over("SIGQUIT");
                    }
                    warn!(upgrade_sock = %self.upgrade_sock.display(), "SIGQUIT ignored: no new modelgate process is waiting to take over; start it with --upgrade first, then send SIGQUIT within 5 s (or send SIGUSR2 to let modelgate do both)");
                }
                Asked::SpawnUpgrade => {
                    if self.spawn_and_wait().await {
                        return self.hand_over("SIGUSR2");
                    }
                }
                Asked::Drain(name) => return self.drain(name, &mut s).await,
            }
        }
    }
}

impl GatewaySignals {
    fn hand_over(&self, why: &str) -> ShutdownSignal {
        let grace = self.grace;
        info!(
            signal = why,
            grace_period_s = grace.as_secs(),
            "upgrade: handing the listening sockets to the new process; this one exits when its last in-flight request ends"
        );
        self.exit.set(grace);
        self.traffic.start_closing();
        ShutdownSignal::GracefulUpgrade
    }

    /// Start the new binary and wait until it listens on the hand-off socket.
    async fn spawn_and_wait(&self) -> bool {
        let Some(cmd) = self.self_command.clone() else {
            warn!("SIGUSR2 ignored: the path of our own executable is unknown; start the new binary with --upgrade and send SIGQUIT");
            return false;
        };
        if upgrade::listener_waiting(&self.upgrade_sock) {
            warn!("SIGUSR2: a process already waits on the upgrade socket; handing over to it");
            return true;
        }
        info!(exe = %cmd.exe.display(), "SIGUSR2: starting the new binary with --upgrade");
        let sock = self.upgrade_sock.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut child = cmd
                .spawn_successor()
                .map_err(|e| format!("cannot start it: {e}"))?;
            upgrade::wait_for_successor(&mut child, &sock, SUCCESSOR_START_LIMIT)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match result {
            Ok(()) => true,
            Err(e) => {
                error!(reason = %e, "upgrade aborted; this process keeps serving");
                false
            }
        }
    }

    /// Fail readiness, keep serving for `drain.delay_ms`, then let Pingora close the listeners.
    async fn drain(&self, name: &str, s: &mut Streams) -> ShutdownSignal {
        self.traffic.start_draining();
        let drain = self.live.load().drain;
        let _ = sdnotify::notify("STOPPING=1");
        info!(
            signal = name,
            delay_ms = drain.delay.as_millis() as u64,
            timeout_ms = drain.timeout.as_millis() as u64,
            in_flight = self.traffic.in_flight(),
            "draining: /ready now answers 503; the listener keeps serving for drain.delay_ms, then closes and in-flight requests get drain.timeout_ms"
        );
        tokio::select! {
            _ = tokio::time::sleep(drain.delay) => {}
            _ = s.term.recv() => info!("second signal: closing the listener now"),
            _ = s.int.recv() => info!("second signal: closing the listener now"),
        }
        self.exit.set(drain.timeout);
        info!(
            in_flight = self.traffic.in_flight(),
            "drain: listener closing; waiting for in-flight requests"
        );
        ShutdownSignal::GracefulTerminate
    }
}
