//! DNS service discovery (control plane only): `discover:` backend entries become one backend
//! per resolved address, named `<entry name>-<ip>:<port>`.
//!
//! [`service::DiscoveryService`] runs one task per entry that resolves the name
//! ([`resolve`]) at most every `refresh_ms`, sooner when the records' TTL is shorter. When an
//! entry's address set changes, [`Registry::record`] builds the next snapshot from the config
//! in force plus every entry's last good set, through [`crate::state::Snapshot::build_from`]
//! like a reload, so backends that stay keep their live state, new ones start gated until their
//! first passing probe, and removed ones are drained: the new snapshot no longer offers them and
//! requests already on them finish on the snapshot they loaded. A failed or empty resolution
//! keeps the last good set (it is counted and logged, never applied).
//!
//! The [`Registry`] lock serialises every snapshot build (reload and discovery), so neither
//! can publish over the other's change. It is taken on the control plane only: the request
//! path reads the published snapshot and never resolves, blocks or locks.

pub mod resolve;
pub mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::config::discover::{DiscoverEntry, DiscoverTarget};
use crate::config::{BackendConfig, Config};
use crate::control::Control;
use crate::reload::Graveyard;
use crate::routing::BackendState;
use crate::state::Snapshot;

pub use resolve::DiscoveryError;
pub use service::DiscoveryService;

/// Identity of a discover entry: a reload that keeps it (same model, name and target) keeps its
/// resolved set and its task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    pub model: String,
    pub entry: String,
    pub target: DiscoverTarget,
}

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

#[derive(Debug)]
struct Inner {
    /// The config in force as read from the file (discover entries unexpanded).
    config: Arc<Config>,
    resolved: HashMap<EntryKey, Resolved>,
}

/// The config in force, every entry's last good address set, and the lock that serialises
/// snapshot builds. Lives in [`Control`].
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// Every entry of the config in force has finished its first resolution.
    settled: AtomicBool,
    /// Snapshots replaced by discovery, dropped once no request holds them.
    pub graveyard: Graveyard,
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
    /// Start from the first config; nothing is resolved yet.
    pub fn new(config: &Config) -> Registry {
        let registry = Registry {
            inner: Mutex::new(Inner {
                config: Arc::new(config.clone()),
                resolved: HashMap::new(),
            }),
            settled: AtomicBool::new(false),
            graveyard: Graveyard::default(),
            retired: Mutex::new(Vec::new()),
        };
        registry.update_settled(&registry.lock());
        registry
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind (no invariant spans two
        // fields mid-update), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_settled(&self, inner: &Inner) {
        let settled = entries(&inner.config).all(|(key, _)| {
            inner
                .resolved
                .get(&key)
                .is_some_and(|resolved| resolved.attempted)
        });
        self.settled.store(settled, Ordering::Release);
    }

    /// Whether every discover entry has finished its first resolution (readiness waits for
    /// it, as it waits for the first probe round).
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Every discover entry of the config in force, with its refresh bound.
    pub fn wanted(&self) -> Vec<(EntryKey, Duration)> {
        let inner = self.lock();
        entries(&inner.config)
            .map(|(key, entry)| (key, entry.refresh))
            .collect()
    }

    /// `config` with each discover entry's last good addresses added as backends.
    pub fn expand(&self, config: &Config) -> Config {
        expand(config, &self.lock().resolved)
    }

    /// Apply a new config (reload): under the build lock, make it the config in force, forget
    /// entries it no longer has, and publish what `build` makes of the expanded config and the
    /// snapshot in force. Returns the replaced snapshot.
    pub fn publish_config(
        &self,
        control: &Control,
        config: Config,
        build: impl FnOnce(&Config, &Snapshot) -> Snapshot,
    ) -> Arc<Snapshot> {
        let mut inner = self.lock();
        let keep: Vec<EntryKey> = entries(&config).map(|(key, _)| key).collect();
        inner.resolved.retain(|key, _| {
            let kept = keep.contains(key);
            if !kept {
                crate::metrics::forget_discovery_entry(&key.model, &key.entry);
            }
            kept
        });
        inner.config = Arc::new(config);
        self.update_settled(&inner);
        let expanded = expand(&inner.config, &inner.resolved);
        let current = control.state.load_full();
        let next = build(&expanded, &current);
        drop(current);
        control.publish(next)
    }

    /// Record one resolution of `key`: a good, non-empty set, or why there is none (the last
    /// good set stays). When the set changed, publish a snapshot with it and return what
    /// changed. Ignored when the entry left the config meanwhile.
    pub fn record(
        &self,
        control: &Control,
        key: &EntryKey,
        result: Result<Vec<SocketAddr>, DiscoveryError>,
    ) -> Option<Change> {
        let mut inner = self.lock();
        if !entries(&inner.config).any(|(k, _)| &k == key) {
            return None;
        }
        let resolved = inner.resolved.entry(key.clone()).or_default();
        let first = !resolved.attempted;
        resolved.attempted = true;
        resolved.last = Some(match &result {
            Ok(_) => (crate::control::now_rfc3339(), "ok", None),
            Err(e) => (
                crate::control::now_rfc3339(),
                e.label(),
                Some(e.to_string()),
            ),
        });
        let mut change = None;
        if let Ok(mut addrs) = result {
            addrs.sort_unstable();
            addrs.dedup();
            if addrs != resolved.addrs {
                change = Some(Change {
                    added: difference(&addrs, &resolved.addrs),
                    removed: difference(&resolved.addrs, &addrs),
                });
                crate::metrics::set_discovery_addresses(&key.model, &key.entry, addrs.len());
                resolved.addrs = addrs;
            }
        }
        if let Some(change) = &change {
            let expanded = expand(&inner.config, &inner.resolved);
            let current = control.state.load_full();
            self.retire(&current, key, &change.removed);
            // Same generation: the config did not change, only what it resolves to.
            let next = Snapshot::build_from(&expanded, current.generation, Some(&current));
            drop(current);
            self.graveyard.bury(control.publish(next));
        }
        if first {
            self.update_settled(&inner);
        }
        change
    }

    /// Every discover entry of the config in force with its last good set and last
    /// resolution, for admin `/status`.
    pub fn status(&self) -> serde_json::Value {
        let inner = self.lock();
        let list: Vec<serde_json::Value> = entries(&inner.config)
            .map(|(key, entry)| {
                let r = inner.resolved.get(&key);
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

    /// Remember the backends `removed` from `key`'s entry, to forget their metrics later.
    fn retire(&self, current: &Snapshot, key: &EntryKey, removed: &[SocketAddr]) {
        let Some(pool) = current.pool(&key.model) else {
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
    pub fn forget_drained(&self, control: &Control) {
        let snapshot = control.state.load();
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

/// Name of the backend a discovered address becomes: `<entry name>-<ip>:<port>`.
pub fn backend_name(entry: &str, addr: SocketAddr) -> String {
    format!("{entry}-{addr}")
}

/// Items of `a` not in `b` (both sorted).
fn difference(a: &[SocketAddr], b: &[SocketAddr]) -> Vec<SocketAddr> {
    a.iter()
        .filter(|x| b.binary_search(x).is_err())
        .copied()
        .collect()
}

/// Every discover entry of `config` with its key (both sides of a disaggregated model).
fn entries(config: &Config) -> impl Iterator<Item = (EntryKey, &DiscoverEntry)> {
    config.models.iter().flat_map(|m| {
        let prefill = m.prefill.iter().flat_map(|p| p.discover.iter());
        m.discover.iter().chain(prefill).map(move |d| {
            (
                EntryKey {
                    model: m.name.clone(),
                    entry: d.name.clone(),
                    target: d.target.clone(),
                },
                d,
            )
        })
    })
}

/// `config` with every entry's addresses appended to the backends of its model (or side).
fn expand(config: &Config, resolved: &HashMap<EntryKey, Resolved>) -> Config {
    let mut out = config.clone();
    for model in &mut out.models {
        let name = model.name.clone();
        add_resolved(&name, &model.discover, &mut model.backends, resolved);
        if let Some(side) = &mut model.prefill {
            add_resolved(&name, &side.discover, &mut side.backends, resolved);
        }
    }
    out
}

/// Appends the last good addresses of `entries` (of `model`) to `backends`, skipping addresses
/// already there (a fixed backend, or found by another entry).
fn add_resolved(
    model: &str,
    entries: &[DiscoverEntry],
    backends: &mut Vec<BackendConfig>,
    resolved: &HashMap<EntryKey, Resolved>,
) {
    for entry in entries {
        let key = EntryKey {
            model: model.to_string(),
            entry: entry.name.clone(),
            target: entry.target.clone(),
        };
        let Some(r) = resolved.get(&key) else {
            continue;
        };
        for addr in &r.addrs {
            if !backends.iter().any(|b| b.addr == *addr) {
                backends.push(backend(entry, *addr));
            }
        }
    }
}

/// The backend a discovered address becomes.
pub fn backend(entry: &DiscoverEntry, addr: SocketAddr) -> BackendConfig {
    BackendConfig {
        name: backend_name(&entry.name, addr),
        url: format!("http://{addr}"),
        addr,
        authority: addr.to_string(),
        path_prefix: String::new(),
        weight: entry.weight,
        drain: entry.drain,
        max_in_flight: entry.max_in_flight,
        api_key: entry.api_key.clone(),
    }
}

#[cfg(test)]
mod tests;
