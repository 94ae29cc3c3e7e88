//! The discovery background service: one tokio task per discover entry, kept in step with
//! reloads (control plane only).
//!
//! A task resolves its entry, records the result in the [`super::Registry`] (the state
//! publisher publishes a snapshot when the set changed), then sleeps until the answer's TTL runs out, at most
//! `refresh_ms` and at least [`MIN_WAIT`]; after a failure it retries within
//! [`FAILURE_RETRY`]. A reload stops the tasks of entries it removed or changed and starts the
//! new ones; an unchanged entry keeps its task and its resolved set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{info, warn};

use super::resolve::{self, DiscoveryError};
use super::Registry;
use crate::config::discover::EntryKey;
use crate::state::Publisher;

/// Floor of the TTL-driven wait: a TTL of 0 (or 1 s records seen late) must not make the task
/// query in a tight loop.
pub const MIN_WAIT: Duration = Duration::from_secs(1);
/// After a failure, try again this soon (or at `refresh_ms` if that is sooner).
pub const FAILURE_RETRY: Duration = Duration::from_secs(2);
/// How often replaced snapshots are checked for release and drained backends forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// See the module doc.
pub struct DiscoveryService {
    publisher: Arc<Publisher>,
    registry: Arc<Registry>,
}

impl DiscoveryService {
    pub fn new(publisher: Arc<Publisher>, registry: Arc<Registry>) -> Self {
        DiscoveryService {
            publisher,
            registry,
        }
    }
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.publisher.subscribe();
        let mut tasks = JoinSet::new();
        let mut running: HashMap<(EntryKey, Duration), AbortHandle> = HashMap::new();
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            let wanted = self.registry.wanted(&self.publisher);
            running.retain(|k, handle| {
                let keep = wanted.contains(k);
                if !keep {
                    handle.abort();
                }
                keep
            });
            for (key, refresh) in wanted {
                if running.contains_key(&(key.clone(), refresh)) {
                    continue;
                }
                let handle = tasks.spawn(run_entry(
                    Arc::clone(&self.publisher),
                    Arc::clone(&self.registry),
                    key.clone(),
                    refresh,
                ));
                running.insert((key, refresh), handle);
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = changes.changed() => if changed.is_err() { break },
                _ = prune.tick() => {
                    self.publisher.prune();
                    self.registry.forget_drained(&self.publisher);
                }
                // Reap finished (aborted) tasks so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.abort_all();
    }
}

/// Resolve one entry forever.
async fn run_entry(
    publisher: Arc<Publisher>,
    registry: Arc<Registry>,
    key: EntryKey,
    refresh: Duration,
) {
    let (model, entry) = (key.model.clone(), key.entry.clone());
    let resolver = match resolve::resolver(&key.target) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(model = %model, entry = %entry, error = %e, "discovery cannot start a resolver; the entry stays empty");
            None
        }
    };
    let mut failing = false;
    loop {
        let result = match &resolver {
            Some(r) => resolve::resolve(r, &key.target).await,
            None => Err(DiscoveryError::Config("no resolver".into())),
        };
        let wait = match &result {
            Ok(r) => {
                crate::metrics::record_discovery(&model, &entry, "ok");
                if failing {
                    info!(model = %model, entry = %entry, dns = %key.target.dns, addresses = r.addrs.len(), "discovery resolves again");
                }
                failing = false;
                let ttl = r
                    .valid_until
                    .map(|t| t.saturating_duration_since(std::time::Instant::now()));
                next_wait(ttl, refresh)
            }
            Err(e) => {
                crate::metrics::record_discovery(&model, &entry, e.label());
                if !failing {
                    warn!(model = %model, entry = %entry, error = %e, "discovery failed; keeping the last good addresses");
                }
                failing = true;
                refresh.min(FAILURE_RETRY)
            }
        };
        let addrs = result.map(|r| r.addrs);
        let (p, r, k) = (Arc::clone(&publisher), Arc::clone(&registry), key.clone());
        // Building a snapshot is CPU work under the build lock: keep it off the async workers.
        let change = tokio::task::spawn_blocking(move || r.record(&p, &k, addrs))
            .await
            .ok()
            .flatten();
        if let Some(change) = change {
            let list = |v: &[std::net::SocketAddr]| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            info!(
                model = %model,
                entry = %entry,
                added = %list(&change.added),
                removed = %list(&change.removed),
                "discovered backends changed (new ones wait for a passing probe; removed ones drain)"
            );
        }
        tokio::time::sleep(wait).await;
    }
}

/// Sleep until the TTL runs out, within [`MIN_WAIT`] (unless `refresh` is shorter) and
/// `refresh`.
pub fn next_wait(ttl: Option<Duration>, refresh: Duration) -> Duration {
    ttl.unwrap_or(refresh).max(MIN_WAIT).min(refresh)
}
