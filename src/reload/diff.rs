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
        let key = |name: &str, url: &str| format!("{name}={url}");
        let before: HashSet<String> = pool
            .backends
            .iter()
            .map(|b| key(&b.config.name, &b.config.url))
            .collect();
        let after: HashSet<String> = m.backends.iter().map(|b| key(&b.name, &b.url)).collect();
        for b in &m.backends {
            if !before.contains(&key(&b.name, &b.url)) {
                parts.push(format!("+backend {}/{}", m.name, key(&b.name, &b.url)));
            }
        }
        for b in &pool.backends {
            let k = key(&b.config.name, &b.config.url);
            if !after.contains(&k) {
                parts.push(format!("-backend {}/{k}", m.name));
            }
        }
        for b in &m.backends {
            let was = pool.backends.iter().find(|o| o.config.name == b.name);
            if let Some(was) = was {
                if was.config.drain != b.drain {
                    let verb = if b.drain { "drain" } else { "undrain" };
                    parts.push(format!("{verb} {}/{}", m.name, b.name));
                }
            }
        }
    }
    if parts.is_empty() {
        "no model or backend changes".to_string()
    } else {
        parts.join(", ")
    }
}
