//! One-line summary of what a reload changes, for the reload log line (control plane).

use std::collections::HashSet;

use crate::config::Config;
use crate::state::Snapshot;

/// "models +a -b; backends +m/x -m/y" or "no model or backend changes".
pub fn describe(old: &Snapshot, new: &Config) -> String {
    let old_models: HashSet<&str> = old.pools.iter().map(|p| p.name.as_str()).collect();
    let new_models: HashSet<&str> = new.models.iter().map(|m| m.name.as_str()).collect();
    let mut parts = Vec::new();
    for m in &new.models {
        if !old_models.contains(m.name.as_str()) {
            parts.push(format!("+model {}", m.name));
        }
    }
    for p in &old.pools {
        if !new_models.contains(p.name.as_str()) {
            parts.push(format!("-model {}", p.name));
        }
    }
    for m in &new.models {
        let Some(pool) = old.pool(&m.name) else {
            continue;
        };
        backend_changes(&m.name, pool, &m.backends, &mut parts);
        if let (Some(old_side), Some(new_side)) = (&pool.prefill, &m.prefill) {
            backend_changes(&m.name, old_side, &new_side.backends, &mut parts);
        }
    }
    if parts.is_empty() {
        "no model or backend changes".to_string()
    } else {
        parts.join(", ")
    }
}

/// Backends added, removed, drained and undrained between `pool` and `backends` (one model, or
/// one side of a disaggregated model: backend names are unique across both sides).
fn backend_changes(
    model: &str,
    pool: &crate::routing::Pool,
    backends: &[crate::routing::BackendConfig],
    parts: &mut Vec<String>,
) {
    let key = |name: &str, url: &str| format!("{name}={url}");
    let before: HashSet<String> = pool
        .backends
        .iter()
        .map(|b| key(&b.config.name, &b.config.url))
        .collect();
    let after: HashSet<String> = backends.iter().map(|b| key(&b.name, &b.url)).collect();
    for b in backends {
        if !before.contains(&key(&b.name, &b.url)) {
            parts.push(format!("+backend {model}/{}", key(&b.name, &b.url)));
        }
    }
    for b in &pool.backends {
        let k = key(&b.config.name, &b.config.url);
        if !after.contains(&k) {
            parts.push(format!("-backend {model}/{k}"));
        }
    }
    for b in backends {
        let was = pool.backends.iter().find(|o| o.config.name == b.name);
        if let Some(was) = was.filter(|was| was.config.drain != b.drain) {
            let verb = if b.drain { "drain" } else { "undrain" };
            parts.push(format!("{verb} {model}/{}", was.config.name));
        }
    }
}
