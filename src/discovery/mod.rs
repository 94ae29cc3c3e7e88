//! DNS service discovery (control plane only): `discover:` backend entries become one backend
//! per resolved address, named `<entry name>-<ip>:<port>`.
//!
//! [`service::DiscoveryService`] runs one task per entry that resolves the name
//! ([`resolve`]) at most every `refresh_ms`, sooner when the records' TTL is shorter. When an
//! entry's address set changes, [`Registry::record`] hands it to the state publisher, which
//! rebuilds from the config in force plus every entry's last good set like a reload, so backends that stay keep their live state, new ones start gated until their
//! first passing probe, and removed ones are drained: the new snapshot no longer offers them and
//! requests already on them finish on the snapshot they loaded. A failed or empty resolution
//! keeps the last good set (it is counted and logged, never applied).
//!
//! The [`Registry`] keeps what discovery itself reports: each entry's last resolution (for
//! `/status` and readiness) and the removed backends whose metric series go once drained. It
//! is used on the control plane only: the request path reads the published snapshot and never
//! resolves, blocks or locks.

pub mod resolve;
pub mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::config::discover::{backend_name, entries, EntryKey};
use crate::logging::now_rfc3339;
use crate::routing::BackendState;
use crate::state::{Publisher, Snapshot};

pub use resolve::DiscoveryError;
pub use service::DiscoveryService;

/// What changed in one entry's address set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
struct Resolved {
    /// The last good set, sorted.
    addrs: Vec<SocketAddr>,
    /// At least one resolution finished (good or not).
    attempted: bool,
    /// The last resolution: when (RFC 3339), `ok`/`error`/`empty`, and why it failed.
    last: Option<(String, &'static str, Option<String>)>,
}

/// Each entry's last resolution and the drained backends to forget; see the module doc.
#[derive(Debug, Default)]
pub struct Registry {
    resolved: Mutex<HashMap<EntryKey, Resolved>>,
    /// Removed discovered backends whose metric series go once they have drained.
    retired: Mutex<Vec<Retired>>,
}

/// A discovered backend that left the pool; its old snapshots may still serve requests.
#[derive(Debug)]
struct Retired {
    model: String,
    name: String,
    /// Alive while any snapshot holding it is (requests in flight on it included).
    state: Weak<BackendState>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<EntryKey, Resolved>> {
        // Plain data behind the lock: a poisoned lock is still usable.
        self.resolved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every discover entry of the config in force has finished its first resolution
    /// (readiness waits for it, as it waits for the first probe round).
    pub fn is_settled(&self, publisher: &Publisher) -> bool {
        let config = publisher.config();
        let resolved = self.lock();
        let settled =
            entries(&config).all(|(key, _)| resolved.get(&key).is_some_and(|r| r.attempted));
        settled
    }

    /// Every discover entry of the config in force, with its refresh bound. Entries no longer
    /// in it are forgotten (their status and metric series).
    pub fn wanted(&self, publisher: &Publisher) -> Vec<(EntryKey, Duration)> {
        let config = publisher.config();
        let wanted: Vec<(EntryKey, Duration)> = entries(&config)
            .map(|(key, entry)| (key, entry.refresh))
            .collect();
        self.lock().retain(|key, _| {
            let kept = wanted.iter().any(|(k, _)| k == key);
            if !kept {
                crate::metrics::forget_discovery_entry(&key.model, &key.entry);
            }
            kept
        });
        wanted
    }

    /// Record one resolution of `key`: a good, non-empty set, or why there is none (the last
    /// good set stays). When the set changed, the publisher publishes a snapshot with it and
    /// this returns what changed. `None` as well when the entry left the config meanwhile.
    pub fn record(
        &self,
        publisher: &Publisher,
        key: &EntryKey,
        result: Result<Vec<SocketAddr>, DiscoveryError>,
    ) -> Option<Change> {
        let mut resolved = self.lock();
        let entry = resolved.entry(key.clone()).or_default();
        entry.attempted = true;
        entry.last = Some(match &result {
            Ok(_) => (now_rfc3339(), "ok", None),
            Err(e) => (now_rfc3339(), e.label(), Some(e.to_string())),
        });
        let mut addrs = result.ok()?;
        addrs.sort_unstable();
        addrs.dedup();
        let mut change = Change::default();
        publisher.apply_addresses(key, addrs.clone(), |previous, before| {
            change.added = difference(&addrs, previous);
            change.removed = difference(previous, &addrs);
            self.retire(before, key, &change.removed);
        })?;
        crate::metrics::set_discovery_addresses(&key.model, &key.entry, addrs.len());
        entry.addrs = addrs;
        Some(change)
    }

    /// Every discover entry of the config in force with its last good set and last
    /// resolution, for admin `/status`.
    pub fn status(&self, publisher: &Publisher) -> serde_json::Value {
        let config = publisher.config();
        let resolved = self.lock();
        let list: Vec<serde_json::Value> = entries(&config)
            .map(|(key, entry)| {
                let r = resolved.get(&key);
                let last = r.and_then(|r| r.last.as_ref());
                serde_json::json!({
                    "model": key.model,
                    "entry": key.entry,
                    "dns": key.target.dns,
                    "port": key.target.port,
                    "nameserver": key.target.nameserver.map(|n| n.to_string()),
                    "refresh_ms": entry.refresh.as_millis() as u64,
                    "addresses": r.map(|r| r.addrs.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                    "last_resolution": last.map(|(at, result, error)| serde_json::json!({"at": at, "result": result, "error": error})),
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// Remember the backends `removed` from `key`'s entry (as `before` held them), to forget
    /// their metrics later.
    fn retire(&self, before: &Snapshot, key: &EntryKey, removed: &[SocketAddr]) {
        let Some(pool) = before.pool(&key.model) else {
            return;
        };
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for addr in removed {
            let name = backend_name(&key.entry, *addr);
            if let Some(b) = pool
                .sides()
                .flat_map(|p| &p.backends)
                .find(|b| b.config.name == name)
            {
                retired.push(Retired {
                    model: key.model.clone(),
                    name,
                    state: Arc::downgrade(b),
                });
            }
        }
    }

    /// Drop the metric series of removed discovered backends that no snapshot holds any more
    /// (drained), unless the address came back meanwhile. Control plane, periodic.
    pub fn forget_drained(&self, publisher: &Publisher) {
        let snapshot = publisher.snapshot();
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|r| {
            if r.state.strong_count() > 0 {
                return true;
            }
            let back = snapshot
                .pool(&r.model)
                .is_some_and(|p| p.sides().flat_map(|p| &p.backends).any(|b| b.config.name == r.name));
            if !back {
                crate::metrics::forget_backend(&r.model, &r.name);
                tracing::debug!(model = %r.model, backend = %r.name, "drained discovered backend forgotten");
            }
            false
        });
    }
}

/// Items of `a` not in `b` (both sorted).
fn difference(a: &[SocketAddr], b: &[SocketAddr]) -> Vec<SocketAddr> {
    a.iter()
        .filter(|x| b.binary_search(x).is_err())
        .copied()
        .collect()
}

#[cfg(test)]
mod tests;
