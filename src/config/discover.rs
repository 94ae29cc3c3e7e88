//! `discover:` backend entries: the typed form and its validation (control plane only).
//!
//! A discover entry stands for however many backends its DNS name resolves to; resolving is
//! `discovery`'s job, never this module's (validation must not depend on what DNS says at the
//! moment). What a resolved address becomes (a named backend appended to its model or side) is
//! defined here, as a pure function of the config and the addresses ([`expand`]), so the state
//! publisher can rebuild from both. Nothing here runs on the request path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::spec::{BackendSpec, DiscoverSpec};
use super::{Config, ConfigIssue};
use crate::routing::BackendConfig;

/// Re-resolve at least every 5 s (sooner when the records' TTL is shorter): a new vLLM pod is
/// found within one refresh plus one health probe, at one query per entry per 5 s.
pub const DEFAULT_DISCOVER_REFRESH_MS: u64 = 5_000;
/// Below this, refreshing would only load the DNS server: records change far less often.
pub const MIN_DISCOVER_REFRESH_MS: u64 = 100;
/// Port of a `nameserver` given without one.
pub const DNS_PORT: u16 = 53;

/// One `discover:` entry of a model, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverEntry {
    /// The entry's `name`; each resolved address becomes backend `<name>-<ip>:<port>`.
    pub name: String,
    /// What to resolve and how often.
    pub target: DiscoverTarget,
    /// Refresh upper bound (the TTL shortens it).
    pub refresh: Duration,
    /// Applied to every resolved backend.
    pub weight: u32,
    pub drain: bool,
    pub max_in_flight: Option<u32>,
    pub api_key: Option<String>,
}

/// The resolution part of an entry: entries with equal targets resolve to the same set, so a
/// reload that keeps the target keeps the resolved backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiscoverTarget {
    /// DNS name as written (a trailing `.` makes it absolute: no search domains).
    pub dns: String,
    /// `Some`: A/AAAA records, this port. `None`: SRV records (port and target from them).
    pub port: Option<u16>,
    /// DNS server to ask; `None` = the system's resolv.conf.
    pub nameserver: Option<SocketAddr>,
}

/// Identity of a discover entry: a reload that keeps it (same model, name and target) keeps its
/// resolved set and its task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    pub model: String,
    pub entry: String,
    pub target: DiscoverTarget,
}

/// Name of the backend a discovered address becomes: `<entry name>-<ip>:<port>`.
pub fn backend_name(entry: &str, addr: SocketAddr) -> String {
    format!("{entry}-{addr}")
}

/// Every discover entry of `config` with its key (both sides of a disaggregated model).
pub fn entries(config: &Config) -> impl Iterator<Item = (EntryKey, &DiscoverEntry)> {
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
pub fn expand(config: &Config, resolved: &HashMap<EntryKey, Vec<SocketAddr>>) -> Config {
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
    resolved: &HashMap<EntryKey, Vec<SocketAddr>>,
) {
    for entry in entries {
        let key = EntryKey {
            model: model.to_string(),
            entry: entry.name.clone(),
            target: entry.target.clone(),
        };
        let Some(addrs) = resolved.get(&key) else {
            continue;
        };
        for addr in addrs {
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

/// Validate `discover:` of the backend entry at `path` (its `url` must be absent). `name`,
/// `weight` and the rest were checked by the caller and are passed in.
pub(super) fn discover_entry(
    name: Option<String>,
    b: BackendSpec,
    d: DiscoverSpec,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<DiscoverEntry> {
    let before = issues.len();
    let mut push = |p: String, m: String| {
        issues.push(ConfigIssue {
            path: p,
            message: m,
        })
    };
    if b.url.is_some() {
        push(
            format!("{path}.discover"),
            "url and discover are mutually exclusive: use url for one fixed backend, discover for the addresses a DNS name resolves to".into(),
        );
    }
    let p = |k: &str| format!("{path}.discover.{k}");
    let dns = d.dns.unwrap_or_default();
    let name_ok = !dns.is_empty()
        && dns.len() <= 253
        && dns.parse::<IpAddr>().is_err()
        && hickory_resolver::Name::from_ascii(&dns).is_ok();
    if !name_ok {
        push(
            p("dns"),
            format!("{dns:?} must be a DNS name such as \"vllm-mistral.ns.svc.cluster.local\" (for a fixed address use url instead)"),
        );
    }
    let port = match d.port {
        None => None,
        Some(n) => {
            match u16::try_from(n) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    push(
                    p("port"),
                    format!("{n} is out of range (1 to 65535; omit it to read ports from SRV records)"),
                );
                    None
                }
            }
        }
    };
    let refresh_ms = d.refresh_ms.unwrap_or(DEFAULT_DISCOVER_REFRESH_MS);
    if refresh_ms < MIN_DISCOVER_REFRESH_MS {
        push(
            p("refresh_ms"),
            format!("{refresh_ms} is too small (at least {MIN_DISCOVER_REFRESH_MS} ms; the records' TTL shortens it when needed)"),
        );
    }
    let nameserver = d.nameserver.as_deref().and_then(|raw| {
        let parsed = raw
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| raw.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, DNS_PORT)));
        if parsed.is_none() {
            push(
                p("nameserver"),
                format!("{raw:?} must be an IP address with an optional port, e.g. \"10.96.0.10\" or \"127.0.0.1:5353\""),
            );
        }
        parsed
    });
    if issues.len() != before {
        return None;
    }
    Some(DiscoverEntry {
        name: name?,
        target: DiscoverTarget {
            dns,
            port,
            nameserver,
        },
        refresh: Duration::from_millis(refresh_ms),
        weight: b.weight.unwrap_or(1).max(1),
        drain: b.drain.unwrap_or(false),
        max_in_flight: b.max_in_flight,
        api_key: b.api_key,
    })
}
