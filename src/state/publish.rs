//! The one publisher of snapshots (control plane): it owns the config in force, every discover
//! entry's last good address set, the build lock, the live [`Snapshot`] and the graveyard of
//! replaced ones, and the status `GET /config` reports.
//!
//! Reload ([`Publisher::apply_config`]) and discovery ([`Publisher::apply_addresses`]) both
//! build under the one lock, so neither can publish over the other's change. Every publish is
//! one `ArcSwap` store and one bump of the generation channel the health prober and discovery
//! follow. Replaced snapshots wait in the graveyard until no request holds them, so freeing a
//! large snapshot never lands on a request thread. The request path never calls anything here:
//! it reads the live snapshot through [`Publisher::live`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::{SharedState, Snapshot};
use crate::config::discover::{self, EntryKey};
use crate::config::Config;
use crate::logging::now_rfc3339;

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

/// What the build lock guards.
#[derive(Debug)]
struct InForce {
    /// The config in force as read from the file (discover entries unexpanded).
    config: Arc<Config>,
    /// Each discover entry's last good address set, sorted.
    discovered: HashMap<EntryKey, Vec<SocketAddr>>,
}

/// See the module doc.
#[derive(Debug)]
pub struct Publisher {
    live: SharedState,
    path: PathBuf,
    in_force: Mutex<InForce>,
    graveyard: Graveyard,
    status: ArcSwap<ConfigStatus>,
    /// Bumped on every publish (reload or discovery).
    generation_tx: tokio::sync::watch::Sender<u64>,
}

impl Publisher {
    /// Publish generation 1 of `config` (validated), read from `path`.
    pub fn new(config: &Config, path: PathBuf) -> Arc<Publisher> {
        let status = ConfigStatus {
            generation: 1,
            sha256: config.sha256.clone(),
            loaded_at: now_rfc3339(),
            last_error: None,
            path: path.display().to_string(),
        };
        Arc::new(Publisher {
            live: Arc::new(ArcSwap::from_pointee(Snapshot::build(config, 1))),
            path,
            in_force: Mutex::new(InForce {
                config: Arc::new(config.clone()),
                discovered: HashMap::new(),
            }),
            graveyard: Graveyard::default(),
            status: ArcSwap::from_pointee(status),
            generation_tx: tokio::sync::watch::channel(1).0,
        })
    }

    /// The live snapshot, for the request path (one `load_full` per request) and readers.
    pub fn live(&self) -> &SharedState {
        &self.live
    }

    /// The snapshot in force right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config in force as read from the file (discover entries unexpanded).
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.lock().config)
    }

    /// The reload status for `GET /config`.
    pub fn status(&self) -> Arc<ConfigStatus> {
        self.status.load_full()
    }

    /// Follow publishes (applied reloads and discovery changes).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, InForce> {
        // A panic while holding the lock leaves plain data behind (no invariant spans two
        // fields mid-update), so a poisoned lock is still usable.
        self.in_force.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reload: under the build lock, make `config` the config in force (forgetting the
    /// addresses of discover entries it no longer has) and publish what `build` makes of it,
    /// expanded with the addresses discovered so far, given the snapshot in force.
    pub fn apply_config(&self, config: Config, build: impl FnOnce(&Config, &Snapshot) -> Snapshot) {
        let mut in_force = self.lock();
        let keep: Vec<EntryKey> = discover::entries(&config).map(|(key, _)| key).collect();
        in_force.discovered.retain(|key, _| keep.contains(key));
        in_force.config = Arc::new(config);
        let expanded = discover::expand(&in_force.config, &in_force.discovered);
        let current = self.live.load_full();
        let next = build(&expanded, &current);
        drop(current);
        self.graveyard.bury(self.publish(next));
    }

    /// Discovery: record `addrs` (sorted, deduplicated) as `key`'s address set. When it differs
    /// from the last one, publish a snapshot with it (same generation: the config did not
    /// change, only what it resolves to), show `replaced` the previous set and the snapshot it
    /// replaced (before that one is buried), and return the previous set. `None` when nothing
    /// changed or the entry left the config meanwhile.
    pub fn apply_addresses(
        &self,
        key: &EntryKey,
        addrs: Vec<SocketAddr>,
        replaced: impl FnOnce(&[SocketAddr], &Snapshot),
    ) -> Option<Vec<SocketAddr>> {
        let mut in_force = self.lock();
        if !discover::entries(&in_force.config).any(|(k, _)| &k == key) {
            return None;
        }
        let known = in_force.discovered.get(key).map_or(&[][..], Vec::as_slice);
        if known == addrs.as_slice() {
            return None;
        }
        let previous = in_force
            .discovered
            .insert(key.clone(), addrs)
            .unwrap_or_default();
        let expanded = discover::expand(&in_force.config, &in_force.discovered);
        let current = self.live.load_full();
        let next = Snapshot::build_from(&expanded, current.generation, Some(&current));
        drop(current);
        let old = self.publish(next);
        replaced(&previous, &old);
        self.graveyard.bury(old);
        Some(previous)
    }

    /// Store `snapshot`, update the status when its generation is new and wake the followers;
    /// returns the snapshot it replaced, for the caller to bury.
    fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let generation = snapshot.generation;
        let sha256 = snapshot.config_sha256.clone();
        let old = self.live.swap(Arc::new(snapshot));
        // Discovery republishes the same generation with other addresses: not a new config.
        if old.generation != generation {
            self.status.store(Arc::new(ConfigStatus {
                generation,
                sha256,
                loaded_at: now_rfc3339(),
                last_error: None,
                path: self.path.display().to_string(),
            }));
        }
        self.generation_tx.send_replace(generation);
        old
    }

    /// Record a rejected reload; the config in force stays.
    pub fn reject(&self, message: String) {
        let mut status = (*self.status.load_full()).clone();
        status.last_error = Some(message);
        self.status.store(Arc::new(status));
    }

    /// Drop every replaced snapshot no request holds any more (control plane, periodic).
    pub fn prune(&self) {
        self.graveyard.prune();
    }

    /// Replaced snapshots still held by requests (tests and benches).
    pub fn buried(&self) -> usize {
        self.graveyard.len()
    }
}

/// Replaced snapshots waiting until no request holds them.
#[derive(Debug, Default)]
struct Graveyard(Mutex<Vec<Arc<Snapshot>>>);

impl Graveyard {
    /// Park a replaced snapshot.
    fn bury(&self, snapshot: Arc<Snapshot>) {
        if let Ok(mut list) = self.0.lock() {
            list.push(snapshot);
        }
        self.prune();
    }

    /// Drop every parked snapshot no request holds any more.
    fn prune(&self) {
        let dead: Vec<Arc<Snapshot>> = match self.0.lock() {
            Ok(mut list) => {
                let (dead, live) = list.drain(..).partition(|s| Arc::strong_count(s) == 1);
                *list = live;
                dead
            }
            Err(_) => Vec::new(),
        };
        drop(dead); // outside the lock
    }

    fn len(&self) -> usize {
        self.0.lock().map(|l| l.len()).unwrap_or(0)
    }
}
