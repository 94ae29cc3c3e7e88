//! The reloader task: `SIGHUP`, file changes (debounced) and periodic pruning of replaced
//! snapshots, as a Pingora background service (control plane).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::{reload, watch, BootSettings, Outcome, Trigger};
use crate::state::Publisher;
use crate::telemetry::Spans;

/// A burst of file events ends after this much quiet (editors write in several steps).
const DEBOUNCE_QUIET: Duration = Duration::from_millis(200);
/// ... or after this long, whatever keeps writing.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// How often replaced snapshots are checked for release.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// See the module doc.
pub struct ReloadService {
    publisher: Arc<Publisher>,
    /// What the running process was started with.
    boot: Arc<BootSettings>,
    /// The span exporter, restarted when `tracing:` changes.
    spans: Arc<Spans>,
    /// Set by the SIGHUP handler installed first thing in `main`, before this service runs.
    early_hup: Arc<AtomicBool>,
    watch_file: bool,
}

impl ReloadService {
    pub fn new(
        publisher: Arc<Publisher>,
        boot: BootSettings,
        spans: Arc<Spans>,
        early_hup: Arc<AtomicBool>,
        watch_file: bool,
    ) -> Self {
        ReloadService {
            publisher,
            boot: Arc::new(boot),
            spans,
            early_hup,
            watch_file,
        }
    }

    async fn run_reload(&self, trigger: Trigger) -> Outcome {
        let publisher = Arc::clone(&self.publisher);
        let boot = Arc::clone(&self.boot);
        // File read and DNS resolution block: keep them off the async workers.
        let outcome = tokio::task::spawn_blocking(move || reload(&publisher, &boot, trigger))
            .await
            .unwrap_or_else(|e| Outcome::Rejected(format!("reload task failed: {e}")));
        if matches!(outcome, Outcome::Applied(_)) {
            // This runtime lives as long as the process: the exporter's task runs here.
            self.configure_tracing();
        }
        outcome
    }

    /// Start, replace or stop the span exporter to match the snapshot in force. The exporter's
    /// task runs on this service's runtime, which lives as long as the process.
    fn configure_tracing(&self) {
        let tracing = self.publisher.snapshot().tracing.clone();
        self.spans
            .configure(tracing.otlp_endpoint.as_deref(), &tracing.service_name);
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; reload by file change only");
                None
            }
        };
        let mut file = if self.watch_file {
            match watch::watch(self.publisher.path()) {
                Ok(w) => Some(w),
                Err(e) => {
                    warn!(error = %e, path = %self.publisher.path().display(), "cannot watch the config file; reload with SIGHUP");
                    None
                }
            }
        } else {
            None
        };
        info!(path = %self.publisher.path().display(), watching = file.is_some(), "reload: SIGHUP{}", if file.is_some() { " or file change" } else { "" });
        // A SIGHUP during startup was caught by the early handler: honour it now. Either way,
        // catch a file change made between the first load and the watch being set up.
        let trigger = if self.early_hup.swap(false, Ordering::AcqRel) {
            Trigger::Signal
        } else {
            Trigger::FileChange
        };
        self.run_reload(trigger).await;
        self.configure_tracing();

        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = prune.tick() => self.publisher.prune(),
                Some(_) = recv_hup(&mut hup) => {
                    self.early_hup.store(false, Ordering::Release);
                    self.run_reload(Trigger::Signal).await;
                }
                Some(_) = recv_file(&mut file) => {
                    if let Some(w) = file.as_mut() {
                        debounce(&mut w.events).await;
                    }
                    self.run_reload(Trigger::FileChange).await;
                }
            }
        }
    }
}

async fn recv_hup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_file(file: &mut Option<watch::FileWatch>) -> Option<()> {
    match file {
        Some(w) => w.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Wait until the events stop for [`DEBOUNCE_QUIET`], at most [`DEBOUNCE_MAX`].
async fn debounce(events: &mut tokio::sync::mpsc::Receiver<()>) {
    let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE_QUIET);
        tokio::select! {
            _ = quiet => return,
            _ = tokio::time::sleep_until(deadline) => return,
            more = events.recv() => if more.is_none() { return },
        }
    }
}
