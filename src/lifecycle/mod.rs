//! Process lifecycle (control plane): signals, graceful drain, binary upgrade, early exit.
//!
//! Pingora's own signal handling closes the listeners the moment SIGTERM arrives, shuts the old
//! process down even when the socket hand-off to a new binary failed, and then sleeps the whole
//! grace period whatever is still in flight. modelgate replaces it ([`signals::GatewaySignals`]):
//!
//! - `SIGTERM` / `SIGINT`: `/ready` turns 503 at once, the public listener keeps serving for
//!   `drain.delay_ms`, then the listeners close and in-flight requests get `drain.timeout_ms`.
//!   A second signal skips the rest of the delay; then a further SIGINT exits at once (a
//!   further SIGTERM caps the wait at `drain.timeout_ms`).
//! - `SIGQUIT`: hand the listening sockets to a new process started with `--upgrade`, but only
//!   if one is actually waiting on `server.upgrade_sock`; otherwise it is ignored with a warning.
//! - `SIGUSR2`: start the new binary ourselves (same path, same arguments, plus `--upgrade`) and
//!   hand over once it waits on the socket; if it fails to start, keep serving.
//!
//! After the hand-over or the drain delay, [`LifecycleService`] exits the process as soon as the
//! last in-flight request ends, or at the deadline.

pub mod exit;
pub mod paths;
pub mod quiesce;
pub mod sdnotify;
pub mod signals;
pub mod traffic;
pub mod upgrade;

pub use exit::LifecycleService;
pub use signals::GatewaySignals;
pub use traffic::{RequestGuard, Traffic};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long the process may wait for in-flight requests once it stops accepting; set by the
/// signal that started the shutdown (drain timeout or upgrade grace period).
#[derive(Debug)]
pub struct ExitPlan {
    limit_ms: AtomicU64,
}

impl ExitPlan {
    pub fn new(default: Duration) -> Self {
        ExitPlan {
            limit_ms: AtomicU64::new(u64::try_from(default.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    pub fn set(&self, limit: Duration) {
        self.limit_ms.store(
            u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }

    pub fn limit(&self) -> Duration {
        Duration::from_millis(self.limit_ms.load(Ordering::Acquire))
    }
}
