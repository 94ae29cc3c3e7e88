//! The process-wide handle shared by the request path, the admin API and the control plane:
//! the live [`Snapshot`], what the last reload did, and the lifecycle counters (draining flag,
//! requests in flight) that readiness and graceful exit read.
//!
//! The request path touches only `state` (one `load_full` per request) and the in-flight counter
//! (one atomic add and sub): no locks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Config, LogFormat, ServerSettings};
use crate::state::{SharedState, Snapshot};
use crate::telemetry::Exporter;

/// What `GET /config` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    /// 1 at start, +1 per applied reload.
    pub generation: u64,
    /// Hex sha256 of the bytes of the file in force.
    pub sha256: String,
    /// When the config in force was applied (RFC 3339, UTC).
    pub loaded_at: String,
    /// Message of the last rejected reload; `null` once a later reload applied.
    pub last_error: Option<String>,
    /// The config file.
    pub path: String,
}

/// Settings read once at start; a reload that changes them is logged as needing an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSettings {
    pub listen: std::net::SocketAddr,
    pub admin_listen: std::net::SocketAddr,
    pub server: ServerSettings,
    pub log_format: LogFormat,
}

impl BootSettings {
    pub fn of(config: &Config) -> Self {
        BootSettings {
            listen: config.listen,
            admin_listen: config.admin_listen,
            server: config.server.clone(),
            log_format: config.log.format,
        }
    }
}

/// Shared handle; see the module doc.
#[derive(Debug)]
pub struct Control {
    pub state: SharedState,
    pub config_path: PathBuf,
    pub boot: BootSettings,
    status: ArcSwap<ConfigStatus>,
    /// Bumped after every applied reload; the health prober follows it.
    generation_tx: tokio::sync::watch::Sender<u64>,
    draining: AtomicBool,
    closing: AtomicBool,
    /// Set once the first full probe round made us ready; from then on a reload that adds a
    /// not-yet-probed backend does not flip readiness.
    was_ready: AtomicBool,
    /// The public listener accepts connections (Pingora starts the admin service first).
    listening: AtomicBool,
    in_flight: Arc<AtomicU64>,
    /// Span exporter, when `tracing.otlp_endpoint` is set.
    exporter: arc_swap::ArcSwapOption<Exporter>,
    /// The config in force, discovered addresses, and the lock every snapshot build takes.
    pub discovery: crate::discovery::Registry,
}

impl Control {
    /// Wrap the first config, already validated.
    pub fn new(config: &Config, config_path: PathBuf) -> Arc<Control> {
        let snapshot = Snapshot::build(config, 1);
        let status = ConfigStatus {
            generation: 1,
            sha256: config.sha256.clone(),
            loaded_at: now_rfc3339(),
            last_error: None,
            path: config_path.display().to_string(),
        };
        Arc::new(Control {
            state: crate::state::shared(snapshot),
            config_path,
            boot: BootSettings::of(config),
            status: ArcSwap::from_pointee(status),
            generation_tx: tokio::sync::watch::channel(1).0,
            draining: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            was_ready: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            in_flight: Arc::new(AtomicU64::new(0)),
            exporter: arc_swap::ArcSwapOption::empty(),
            discovery: crate::discovery::Registry::new(config),
        })
    }

    /// The reload status for `GET /config`.
    pub fn status(&self) -> Arc<ConfigStatus> {
        self.status.load_full()
    }

    /// Publish a new snapshot (control plane). Returns the one it replaced.
    pub fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let generation = snapshot.generation;
        let sha256 = snapshot.config_sha256.clone();
        let old = self.state.swap(Arc::new(snapshot));
        // Discovery republishes the same generation with other addresses: not a new config.
        if old.generation != generation {
            self.status.store(Arc::new(ConfigStatus {
                generation,
                sha256,
                loaded_at: now_rfc3339(),
                last_error: None,
                path: self.config_path.display().to_string(),
            }));
        }
        // Every publish (reload or discovery) restarts the prober on the new pools.
        self.generation_tx.send_replace(generation);
        old
    }

    /// Record a rejected reload; the config in force stays.
    pub fn reject(&self, message: String) {
        let mut status = (*self.status.load_full()).clone();
        status.last_error = Some(message);
        self.status.store(Arc::new(status));
    }

    /// Follow published snapshots (applied reloads and discovery changes): the health prober
    /// and the discovery service.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// Record that the public listener accepts connections.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// Start draining: readiness fails from now on, and keep-alive ends (see
    /// [`Control::start_closing`]).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.start_closing();
    }

    /// This process is going away (drain or hand-over to a new binary): every response from now
    /// on says `Connection: close`, so keep-alive clients move to fresh connections (which reach
    /// the new process or another replica) instead of racing the listener's close on an idle one.
    pub fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether responses should end their connection.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Whether SIGTERM/SIGINT started a drain.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ready for traffic: the public listener accepts, not draining, and some model servable —
    /// before the first time, also every `discover:` entry resolved once and every pool probed
    /// once (so a starting gateway is not sent traffic it would hold).
    pub fn is_ready(&self) -> bool {
        if self.is_draining() || !self.listening.load(Ordering::Acquire) {
            return false;
        }
        let snapshot = self.state.load();
        if self.was_ready.load(Ordering::Acquire) {
            return snapshot.pools.iter().any(|p| p.has_healthy());
        }
        let ready = self.discovery.is_settled() && snapshot.is_ready();
        if ready {
            self.was_ready.store(true, Ordering::Release);
        }
        ready
    }

    /// Start, replace or stop the span exporter to match the snapshot in force. Call from a
    /// long-lived runtime (the exporter's task runs there); keeps a running exporter whose
    /// endpoint and service name are unchanged.
    pub fn configure_tracing(&self) {
        let want = self.state.load().tracing.clone();
        let current = self.exporter.load_full();
        match (&want.otlp_endpoint, current) {
            (None, None) => {}
            (None, Some(_)) => {
                self.exporter.store(None);
                tracing::info!("span export off");
            }
            (Some(endpoint), Some(cur))
                if cur.endpoint() == endpoint && cur.service_name() == want.service_name => {}
            (Some(endpoint), _) => match Exporter::start(endpoint, &want.service_name) {
                Ok(e) => {
                    tracing::info!(endpoint = %endpoint, service_name = %want.service_name, "exporting spans over OTLP/HTTP");
                    self.exporter.store(Some(Arc::new(e)));
                }
                Err(e) => tracing::warn!(error = %e, "cannot export spans"),
            },
        }
    }

    /// The span exporter, if configured.
    pub fn exporter(&self) -> Option<Arc<Exporter>> {
        self.exporter.load_full()
    }

    /// Count one client request until the guard drops.
    pub fn track_request(&self) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(&self.in_flight))
    }

    /// Client requests being served right now, streams included.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Decrements the process-wide in-flight count on drop.
#[derive(Debug)]
pub struct RequestGuard(Arc<AtomicU64>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
