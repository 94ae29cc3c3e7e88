//! The immutable [`Snapshot`] the request path reads, the [`SharedState`] holding it, and its
//! one [`Publisher`] (control plane).
//!
//! The publisher builds a whole new snapshot from the validated config (through the runtime
//! types `config` makes) off the request path and publishes it with one `store`; a request
//! loads it once and keeps the `Arc`, so it sees one version from start to end even across a
//! reload. Reading a snapshot never locks; only the publisher's build lock does, on the control
//! plane.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub mod publish;

pub use publish::{ConfigStatus, Publisher};

use crate::auth::Tenants;
use crate::config::{Config, DrainSettings, TracingSettings};
use crate::conn::Limits;
use crate::routing::{KeySource, Policy, Pool};
use crate::scan::Capture;

/// Everything a request needs, frozen.
#[derive(Debug)]
pub struct Snapshot {
    /// +1 per applied config.
    pub generation: u64,
    /// Hex sha256 of the config file this snapshot was built from.
    pub config_sha256: String,
    /// Pools in config-file order.
    pub pools: Vec<Arc<Pool>>,
    by_name: HashMap<String, usize>,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// "a, b, c": the configured model names, for 404 messages.
    pub model_list: String,
    /// Drain timings (reloadable; read when SIGTERM arrives).
    pub drain: DrainSettings,
    /// `log.access_log`.
    pub access_log: bool,
    /// `tracing:` (the control plane starts the exporter from it).
    pub tracing: TracingSettings,
    /// Alias → model, in file order (for `/v1/models`; lookups go through `pool`).
    pub aliases: Vec<(String, String)>,
    /// Model for requests that name none.
    pub default_model: Option<String>,
    /// Sticky keys some pool needs from the body (`body:user`, `prompt_prefix`).
    pub capture: Capture,
    /// `admin.token` (reloadable).
    pub admin_token: Option<String>,
    /// `server_header` (`None`: no `Server` header).
    pub server_header: Option<Arc<str>>,
    /// API keys (`None`: authentication off).
    pub tenants: Option<Arc<Tenants>>,
    /// `limits:`.
    pub limits: Limits,
}

impl Snapshot {
    /// Build a snapshot from a validated config. Backends start unhealthy until probed.
    pub fn build(config: &Config, generation: u64) -> Snapshot {
        Snapshot::build_from(config, generation, None)
    }

    /// Build the next snapshot. A backend that was in `previous` under the same model with the
    /// same URL and address keeps its live state (health, streaks, in-flight count, card): no
    /// flap, no re-gating. Anything new starts gated until its first passing probe.
    pub fn build_from(config: &Config, generation: u64, previous: Option<&Snapshot>) -> Snapshot {
        let pools: Vec<Arc<Pool>> = config
            .models
            .iter()
            .map(|m| {
                // The same model's pool, not an alias that happened to have this name.
                let old = previous
                    .and_then(|p| p.pool(&m.name))
                    .filter(|p| p.name == m.name);
                Arc::new(Pool::build_from(&m.pool_config(), old.map(|p| &**p)))
            })
            .collect();
        let mut by_name: HashMap<String, usize> = pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        for (alias, target) in &config.aliases {
            if let Some(&i) = by_name.get(target) {
                by_name.insert(alias.clone(), i);
            }
        }
        let model_list = pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Snapshot {
            generation,
            config_sha256: config.sha256.clone(),
            pools,
            by_name,
            max_body_bytes: config.max_body_bytes,
            model_list,
            drain: config.drain,
            access_log: config.log.access_log,
            tracing: config.tracing.clone(),
            aliases: config.aliases.clone(),
            default_model: config.default_model.clone(),
            capture: capture(config),
            admin_token: config.admin_token.clone(),
            server_header: config.server_header.as_deref().map(Arc::from),
            limits: config.limits,
            tenants: config.auth.as_ref().map(|a| {
                Arc::new(Tenants::build(
                    a,
                    previous.and_then(|p| p.tenants.as_deref()),
                ))
            }),
        }
    }

    /// The pool serving `model` (a configured name or an alias), if any.
    pub fn pool(&self, model: &str) -> Option<&Arc<Pool>> {
        self.by_name.get(model).and_then(|&i| self.pools.get(i))
    }

    /// Whether the client's API key stays at the gateway (authentication on, and
    /// `pass_authorization` off).
    pub fn strips_authorization(&self) -> bool {
        self.tenants.as_ref().is_some_and(|t| !t.pass_authorization)
    }

    /// Ready = every pool has completed its first probe round and at least one pool has a
    /// healthy backend.
    pub fn is_ready(&self) -> bool {
        let sides = || self.pools.iter().flat_map(|p| p.sides());
        sides().all(|p| p.is_checked())
            && self
                .pools
                .iter()
                .any(|p| p.sides().all(|side| side.has_healthy()))
    }
}

/// The body captures any pool's sticky keys need.
fn capture(config: &Config) -> Capture {
    let mut c = Capture::default();
    for m in &config.models {
        let prefill = m.prefill.iter().map(|p| (p.policy, &p.lb));
        for (policy, lb) in std::iter::once((m.policy, &m.lb)).chain(prefill) {
            if policy == Policy::CacheAware {
                c.prompt_span = c.prompt_span.max(lb.cache.max_bytes);
            }
        }
        // Disaggregated: the two legs' bodies are spliced at the members' places.
        c.members |= m.prefill.is_some();
        let keys = [
            m.lb.hash_on
                .as_ref()
                .filter(|_| m.policy == Policy::ConsistentHash),
            m.canary.as_ref().and_then(|k| k.sticky_on.as_ref()),
        ];
        for k in keys.into_iter().flatten() {
            match k {
                KeySource::BodyUser => c.user = true,
                KeySource::PromptPrefix => {
                    c.prompt_prefix = c.prompt_prefix.max(m.lb.prompt_prefix_bytes);
                }
                KeySource::Header(_) => {}
            }
        }
    }
    c
}

/// The live snapshot, shared by the proxy, the admin API and the control plane; only the
/// [`Publisher`] stores into it.
pub type SharedState = Arc<ArcSwap<Snapshot>>;
