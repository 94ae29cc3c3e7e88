//! Exit as soon as the last in-flight request ends once shutdown has begun (control plane).
//!
//! Pingora sleeps its whole grace period after shutdown starts, whatever is left in flight.
//! This service waits for Pingora's shutdown broadcast (the listeners have stopped accepting by
//! then) and exits the process when the in-flight count reaches zero, or at the deadline set by
//! the signal that started the shutdown. A further SIGTERM or SIGINT exits at once. It also
//! tells systemd `READY=1` once the services are up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tracing::{info, warn};

use super::{sdnotify, ExitPlan};
use crate::control::Control;

const POLL: Duration = Duration::from_millis(20);

/// See the module doc.
pub struct LifecycleService {
    pub control: Arc<Control>,
    pub exit: Arc<ExitPlan>,
}

#[async_trait]
impl BackgroundService for LifecycleService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let pid = std::process::id();
        match sdnotify::notify(&format!("READY=1\nMAINPID={pid}\nSTATUS=serving")) {
            Ok(true) => info!(pid, "told systemd READY=1"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "sd_notify failed"),
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let control = Arc::clone(&self.control);
        let limit = self.exit.limit();
        // A plain thread: runtimes are being shut down around us.
        let spawned = std::thread::Builder::new()
            .name("modelgate-exit".into())
            .spawn(move || wait_then_exit(&control, limit));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the exit watchdog; Pingora's grace period applies");
        }
    }
}

fn wait_then_exit(control: &Control, limit: Duration) -> ! {
    let force = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&force));
    }
    let started = Instant::now();
    info!(
        in_flight = control.in_flight(),
        limit_s = limit.as_secs_f64(),
        "listeners closed; exiting when the last in-flight request ends"
    );
    loop {
        let n = control.in_flight();
        if n == 0 {
            info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "all in-flight requests finished; exiting"
            );
            std::process::exit(0);
        }
        if force.load(Ordering::Acquire) {
            warn!(in_flight = n, "signal received again; exiting now");
            std::process::exit(0);
        }
        if started.elapsed() >= limit {
            warn!(
                in_flight = n,
                "grace period over; exiting with requests still in flight"
            );
            std::process::exit(0);
        }
        std::thread::sleep(POLL);
    }
}
