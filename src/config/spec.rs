//! Serde types mirroring `router.yaml` one to one (control plane only).
//!
//! Nothing here is interpreted: every field is optional where the file may omit it, and
//! `validate` turns a [`FileSpec`] into the typed [`crate::config::Config`]. Every struct denies
//! unknown keys so a typo is an error that names its path instead of a silently ignored setting.

use indexmap::IndexMap;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Public listener, `host:port`.
    pub listen: Option<String>,
    /// Admin listener block.
    pub admin: Option<AdminSpec>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: Option<u64>,
    /// Settings every model inherits unless it sets them itself.
    pub defaults: Option<DefaultsSpec>,
    /// Logical model name → pool, in file order.
    pub models: Option<IndexMap<String, ModelSpec>>,
    /// Process settings (threads, upgrade, pid file); changing them needs a binary upgrade.
    pub server: Option<ServerSpec>,
    /// Graceful drain on SIGTERM/SIGINT.
    pub drain: Option<DrainSpec>,
    /// Logging and the access log.
    pub log: Option<LogSpec>,
    /// Span export.
    pub tracing: Option<TracingSpec>,
    /// Client-facing alias → configured model.
    pub aliases: Option<IndexMap<String, String>>,
    /// Model for requests that name none.
    pub default_model: Option<String>,
    /// `Server` response header (`""` = none).
    pub server_header: Option<String>,
    /// API keys and tenants.
    pub auth: Option<AuthSpec>,
    /// Client-side limits.
    pub limits: Option<LimitsSpec>,
}

/// `limits:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub max_header_bytes: Option<u64>,
    pub max_headers: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub client_write_timeout_ms: Option<u64>,
    pub max_connections_per_ip: Option<u64>,
}

/// `auth:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    pub keys_file: Option<String>,
    pub keys: Option<Vec<KeySpec>>,
    /// `strip` (default) or `pass`: what happens to the client's `Authorization` upstream.
    pub forward_authorization: Option<String>,
}

/// The `keys_file` content: `keys:` only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFileSpec {
    pub keys: Option<Vec<KeySpec>>,
}

/// One API key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub tenant: Option<String>,
    pub sha256: Option<String>,
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_in_flight: Option<u64>,
}

/// `canary:` block of a model.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    pub model: Option<String>,
    pub percent: Option<f64>,
    pub sticky_on: Option<String>,
}

/// `shadow:` block of a model.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    pub model: Option<String>,
    pub percent: Option<f64>,
    pub max_concurrency: Option<u32>,
}

/// `tracing:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSpec {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
}

/// `log:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    pub level: Option<String>,
    pub format: Option<String>,
    pub access_log: Option<bool>,
}

/// `server:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    pub threads: Option<u64>,
    pub grace_period_s: Option<u64>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
}

/// `drain:` block (top level; a backend's `drain: true` is a different thing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSpec {
    pub delay_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// `admin:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
    pub token: Option<String>,
    /// File holding the token (a mounted Secret), relative to the config's directory.
    pub token_file: Option<String>,
}

/// `defaults:` block: the per-model blocks that can be inherited.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    pub load_balancer: Option<LoadBalancerSpec>,
    pub timeouts: Option<TimeoutsSpec>,
    pub retries: Option<RetriesSpec>,
    pub health_check: Option<HealthCheckSpec>,
}

/// One entry of `models:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub backends: Option<Vec<BackendSpec>>,
    /// Prefill/decode disaggregation: the prefill side (instead of `backends`, with `decode`).
    pub prefill: Option<SideSpec>,
    /// The decode side.
    pub decode: Option<SideSpec>,
    pub load_balancer: Option<LoadBalancerSpec>,
    pub timeouts: Option<TimeoutsSpec>,
    pub retries: Option<RetriesSpec>,
    pub health_check: Option<HealthCheckSpec>,
    pub served_model_name: Option<String>,
    pub max_queue: Option<u64>,
    pub queue_timeout_ms: Option<u64>,
    pub canary: Option<CanarySpec>,
    pub shadow: Option<ShadowSpec>,
}

/// One side of a disaggregated model: a list of backends, or a block with its own
/// `load_balancer`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SideSpec {
    List(Vec<BackendSpec>),
    Block(SideBlockSpec),
}

/// `prefill:` / `decode:` written as a block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideBlockSpec {
    pub backends: Option<Vec<BackendSpec>>,
    pub load_balancer: Option<LoadBalancerSpec>,
}

impl SideSpec {
    /// The backends and the side's own `load_balancer`, whichever form was written.
    pub fn into_parts(self) -> (Option<Vec<BackendSpec>>, Option<LoadBalancerSpec>) {
        match self {
            SideSpec::List(backends) => (Some(backends), None),
            SideSpec::Block(b) => (b.backends, b.load_balancer),
        }
    }
}

/// One backend of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub name: Option<String>,
    pub url: Option<String>,
    pub weight: Option<u32>,
    /// `true`: no new requests; in-flight ones finish.
    pub drain: Option<bool>,
    /// Most requests in flight to this backend through this gateway.
    pub max_in_flight: Option<u32>,
    /// Sent upstream as `Authorization: Bearer <api_key>` (vLLM's `--api-key`).
    pub api_key: Option<String>,
    /// Backends found by DNS instead of one fixed `url` (mutually exclusive with `url`).
    pub discover: Option<DiscoverSpec>,
}

/// `discover:` of a backend entry (see `crate::discovery`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverSpec {
    /// Name to resolve: A/AAAA records with `port`, SRV records without it.
    pub dns: Option<String>,
    pub port: Option<u64>,
    pub refresh_ms: Option<u64>,
    /// `ip[:port]` of the DNS server to ask (default: the system's resolv.conf).
    pub nameserver: Option<String>,
}

/// `load_balancer:` block.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    pub policy: Option<String>,
    pub hash_on: Option<String>,
    pub load_poll_ms: Option<u64>,
    pub bounded_load: Option<f64>,
    pub prompt_prefix_bytes: Option<u64>,
    pub prefix_block_bytes: Option<u64>,
    pub prefix_max_bytes: Option<u64>,
    pub cache_miss_cost: Option<f64>,
    pub kv_cache_tokens: Option<u64>,
    pub learn_kv_cache: Option<bool>,
}

/// `timeouts:` block; every value in milliseconds.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    pub connect_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
}

/// `retries:` block.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesSpec {
    pub max_attempts: Option<i64>,
    pub retry_on: Option<Vec<String>>,
}

/// `health_check:` block.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}
