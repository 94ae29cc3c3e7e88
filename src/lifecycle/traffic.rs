//! What this process tells its clients about going away, and how many requests it serves
//! (shared by the request path, the lifecycle services and admin readiness; atomics only).
//!
//! The request path reads [`Traffic::is_closing`] (answer `Connection: close`) and holds one
//! [`RequestGuard`] per request (and per connection lingering for one more request after
//! shutdown began); lifecycle sets the flags and waits for both counts to reach zero; admin
//! reads them for `/ready` and `/status`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// See the module doc.
#[derive(Debug, Default)]
pub struct Traffic {
    draining: AtomicBool,
    closing: AtomicBool,
    /// The public listener accepts connections (Pingora starts the admin service first).
    listening: AtomicBool,
    in_flight: Arc<AtomicU64>,
    /// Kept-alive connections waiting briefly for one more request after shutdown began.
    lingering: Arc<AtomicU64>,
}

impl Traffic {
    /// Record that the public listener accepts connections.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// Whether the public listener accepts connections.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Start draining: readiness fails from now on, and keep-alive ends (see
    /// [`Traffic::start_closing`]).
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

    /// Count one client request until the guard drops.
    pub fn track_request(&self) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(&self.in_flight))
    }

    /// Client requests being served right now, streams included.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Count one connection lingering for its next request after shutdown began (see
    /// `conn::Front`), until the guard drops: the process does not exit under it.
    pub fn track_linger(&self) -> RequestGuard {
        self.lingering.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(&self.lingering))
    }

    /// Requests in flight plus connections lingering for one more request: zero means the
    /// process may exit.
    pub fn busy(&self) -> u64 {
        self.in_flight() + self.lingering.load(Ordering::Acquire)
    }
}

/// Decrements a process-wide count (requests in flight, or lingering connections) on drop.
#[derive(Debug)]
pub struct RequestGuard(Arc<AtomicU64>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
