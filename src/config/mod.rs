//! Configuration: `router.yaml` → validated, typed [`Config`] (control plane only).
//!
//! Three stages: `spec` (serde mirror of the file), `validate` (every issue collected with its
//! path), and the typed structs below that the snapshot is built from. Startup, `--test` and
//! reload all go through [`parse_at`], so they accept and reject exactly the same files.
//! Validated values the runtime needs are the runtime's own types (`routing::settings`,
//! `conn::Limits`, `auth::AuthConfig`, `logging::LogFormat`): config makes them, the state
//! publisher builds snapshots from them. Nothing here runs on the request path.

pub mod discover;
pub mod spec;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::auth::{ApiKey, AuthConfig};
use crate::conn::Limits;
use crate::logging::LogFormat;
use crate::routing::settings::{
    BackendConfig, CacheAwareOptions, Canary, HealthCheck, KeySource, LbOptions, Policy,
    PoolConfig, Retries, Shadow, Timeouts,
};

/// Public listener when `listen` is omitted.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
/// Admin listener when `admin.listen` is omitted: loopback only, so health and readiness are
/// never exposed on the public address by accident.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9000";
/// 32 MiB: far above any chat request with long context, small enough that a flood of huge
/// bodies cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// Connecting to a backend on the same network takes milliseconds; 2 s means it is down.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Prefill of a long prompt on a loaded GPU can take tens of seconds before the first token.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 120_000;
/// A healthy stream produces a token every few tens of ms; a minute of silence is a stuck backend.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Ten minutes covers long generations; operators with longer streams raise it.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 600_000;
/// One retry on another backend when the first one refuses the connection.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;
/// vLLM lists its served models here; the probe proves identity, not just liveness.
pub const DEFAULT_HEALTH_PATH: &str = "/v1/models";
/// Probe every 2 s: a dead backend is out of rotation within a few seconds.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;
/// `/v1/models` answers in milliseconds even under load; 1 s means the server is wedged.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1_000;
/// Two passes in a row before an unhealthy backend gets traffic again (no flapping).
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Two failures in a row before a healthy backend is taken out (one lost probe is noise).
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;

/// An old process waits up to this long for its in-flight requests after handing its sockets to
/// a new binary; it exits as soon as the last one ends. Five minutes covers long generations.
pub const DEFAULT_GRACE_PERIOD_S: u64 = 300;
/// After SIGTERM, keep serving this long while `/ready` says 503, so the cloud load balancer
/// sees the failing check and stops sending (2 checks at 2 s interval, plus margin).
pub const DEFAULT_DRAIN_DELAY_MS: u64 = 5_000;
/// After the listener closes, in-flight requests get this long to finish (same as the grace).
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 300_000;
/// `load_aware` reads each backend's `/metrics` every 500 ms: fresher than a token burst.
pub const DEFAULT_LOAD_POLL_MS: u64 = 500;
/// `consistent_hash` lets a backend take up to 1.25 × the average load before spilling.
pub const DEFAULT_BOUNDED_LOAD: f64 = 1.25;
/// `prompt_prefix` hashes the first 256 bytes: a system prompt's worth of shared prefix.
pub const DEFAULT_PROMPT_PREFIX_BYTES: usize = 256;
/// `cache_aware` hashes the prompt in blocks of 256 bytes: 64 tokens at 4 bytes a token, four of
/// vLLM's 16-token KV blocks. Finer blocks cost more index entries for a match length that is
/// already exact to well under a prefill step.
pub const DEFAULT_PREFIX_BLOCK_BYTES: usize = 256;
/// `cache_aware` indexes the first 32 KiB of a prompt (~8k tokens): a long system prompt and
/// several turns of history, where requests that share anything diverge.
pub const DEFAULT_PREFIX_MAX_BYTES: usize = 32 * 1024;
/// `cache_aware` counts a prompt token a backend would have to compute (a cache miss) eight
/// times a token already queued: the miss costs this request its prefill, and it copies the
/// prefix into a second cache, evicting other prefixes there and so costing later requests
/// their hits. A warm backend therefore keeps its prefix until its prefill queue is ahead of a
/// cold one's by eight times the tokens the hit saves (a 2k-token prefix: 16k tokens, ~0.3 s of
/// an H100's prefill). Measured on the simulated fleet (loadtest/ROUTING.md): 2 spilled so
/// early under load that the fleet's hit rate fell from 86 % to 69 % at 2.2× round-robin's knee
/// (TTFT p99 2.5 s); 8 kept 82 % (1.4 s), 32 was no better.
pub const DEFAULT_CACHE_MISS_COST: f64 = 8.0;
/// A queued request waits at most 1 s for a free slot before it is shed.
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 1_000;
/// Shadow copies in flight per model at most.
pub const DEFAULT_SHADOW_CONCURRENCY: usize = 16;

/// Unix socket paths are limited to 107 bytes (`sun_path`).
pub const MAX_SOCKET_PATH: usize = 107;

/// Load, parse and validate a config file (and its `auth.keys_file`, relative to its directory).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse_at(&bytes, path.parent())
}

/// [`parse`], reading `auth.keys_file` relative to `dir`.
pub fn parse_at(bytes: &[u8], dir: Option<&Path>) -> Result<Config, ConfigError> {
    let spec: spec::FileSpec =
        serde_yaml::from_slice(bytes).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let mut config = validate::validate(spec, dir).map_err(ConfigError::Invalid)?;
    config.sha256 = format!("{:x}", Sha256::digest(bytes));
    Ok(config)
}

/// Parse and validate config bytes (the file's content); a relative `auth.keys_file` is read
/// from the current directory.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    parse_at(bytes, None)
}

/// Why a config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    /// Structure or type errors found by the YAML parser (its message names the path and line).
    #[error("{0}")]
    Syntax(String),
    /// Semantic errors, all of them, in file order.
    #[error("{}", join_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn join_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem in the file, with the dotted path of the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener address as written (Pingora binds it).
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Bearer token for admin `/metrics`, `/status`, `/config` (required off loopback).
    pub admin_token: Option<String>,
    /// `Server` header on every response (`None` = no header).
    pub server_header: Option<String>,
    /// API keys; `None` = no authentication (requests pass through).
    pub auth: Option<AuthConfig>,
    /// Client-side limits.
    pub limits: Limits,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Models in file order.
    pub models: Vec<ModelConfig>,
    /// Process settings; read at start only.
    pub server: ServerSettings,
    /// Graceful drain timings.
    pub drain: DrainSettings,
    /// Logging.
    pub log: LogSettings,
    /// Span export.
    pub tracing: TracingSettings,
    /// Alias → configured model, in file order.
    pub aliases: Vec<(String, String)>,
    /// Model for requests that name none.
    pub default_model: Option<String>,
    /// Hex sha256 of the file bytes.
    pub sha256: String,
}

/// `server:` block, typed. Read once at start: changing it takes a binary upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Proxy worker threads; `None` = one per CPU.
    pub threads: Option<usize>,
    /// Longest wait for in-flight requests of an old process after an upgrade.
    pub grace_period: Duration,
    /// Pid file written with `--daemon`; `None` = `<runtime dir>/modelgate.pid`.
    pub pid_file: Option<std::path::PathBuf>,
    /// Socket the listening sockets are handed over on; `None` = `<runtime dir>/upgrade.sock`.
    pub upgrade_sock: Option<std::path::PathBuf>,
}

/// `log:` block, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A tracing filter: `info`, `warn`, `modelgate=debug,info`… (`RUST_LOG` overrides it).
    pub level: String,
    /// `json` (default) or `text`, for both the event log and the access log.
    pub format: LogFormat,
    /// One line per request.
    pub access_log: bool,
}

/// `tracing:` block, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// OTLP/HTTP collector base URL (`http://host:4318`); `None` = no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
}

/// `drain:` block, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainSettings {
    /// Keep serving this long after SIGTERM while readiness fails.
    pub delay: Duration,
    /// Then give in-flight requests this long.
    pub timeout: Duration,
}

/// One logical model and its pool.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    /// Fixed backends (`url:`).
    pub backends: Vec<BackendConfig>,
    /// `discover:` entries; [`crate::discovery`] turns their addresses into more backends.
    pub discover: Vec<discover::DiscoverEntry>,
    pub policy: Policy,
    /// Policy options (`hash_on`, `load_poll_ms`, `bounded_load`, `prompt_prefix_bytes`, and
    /// `cache_aware`'s).
    pub lb: LbOptions,
    /// The id the backends serve this model under, when it differs from `name`.
    pub served_model_name: Option<String>,
    /// Requests that may wait when every backend is at `max_in_flight` (0 = shed at once).
    pub max_queue: usize,
    /// Longest wait in that queue.
    pub queue_timeout: Duration,
    /// Percentage routed to another model's pool.
    pub canary: Option<Canary>,
    /// Percentage copied to another model's pool, answers discarded.
    pub shadow: Option<Shadow>,
    pub timeouts: Timeouts,
    pub retries: Retries,
    pub health: HealthCheck,
    /// Prefill/decode disaggregation: `backends`, `discover`, `policy` and `lb` above are then
    /// the decode side, and this is the prefill side.
    pub prefill: Option<Side>,
}

/// The prefill side of a disaggregated model.
#[derive(Debug, Clone)]
pub struct Side {
    pub backends: Vec<BackendConfig>,
    pub discover: Vec<discover::DiscoverEntry>,
    pub policy: Policy,
    pub lb: LbOptions,
}

impl ModelConfig {
    /// The pool this model is served by, as the runtime builds it. A disaggregated model's pool
    /// is its decode side, with the prefill side in `prefill`: same name, timeouts, retries and
    /// health check; its own backends, policy and options; no canary, shadow or queue.
    pub fn pool_config(&self) -> PoolConfig {
        let mut pool = PoolConfig {
            name: self.name.clone(),
            backends: self.backends.clone(),
            policy: self.policy,
            lb: self.lb.clone(),
            served_model_name: self.served_model_name.clone(),
            max_queue: self.max_queue,
            queue_timeout: self.queue_timeout,
            canary: self.canary.clone(),
            shadow: self.shadow.clone(),
            timeouts: self.timeouts,
            retries: self.retries,
            health: self.health.clone(),
            prefill: None,
        };
        pool.prefill = self.prefill.as_ref().map(|side| {
            Box::new(PoolConfig {
                backends: side.backends.clone(),
                policy: side.policy,
                lb: side.lb.clone(),
                max_queue: 0,
                canary: None,
                shadow: None,
                ..pool.clone()
            })
        });
        pool
    }
}

/// 64 KiB of request line and headers: an OpenAI client sends well under 2 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Pingora's own hard cap (above which it answers a bare 400 itself).
pub const PINGORA_MAX_HEADER_BYTES: u64 = 1_048_575;
/// 100 header lines: SDKs send about 15.
pub const DEFAULT_MAX_HEADERS: u64 = 100;
/// Pingora parses at most 256 header lines.
pub const PINGORA_MAX_HEADERS: u64 = 256;
/// A request header that takes 10 s to arrive is a slowloris, not a client.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// nginx's `keepalive_timeout`, and above the 60 s idle timeout of common cloud load balancers
/// (a backend must not close first).
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_MS: u64 = 75_000;
/// A whole request body must arrive within 60 s (a 25 MiB audio upload at 3.5 Mbit/s).
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;
/// A client that reads nothing for 30 s is not reading its stream.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_MS: u64 = 30_000;

impl KeySource {
    /// Parse `header:<name>`, `body:user` or `prompt_prefix`.
    pub fn parse(s: &str) -> Option<KeySource> {
        if let Some(name) = s.strip_prefix("header:") {
            let ok = !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_ok();
            return ok.then(|| KeySource::Header(name.to_ascii_lowercase()));
        }
        match s {
            "body:user" => Some(KeySource::BodyUser),
            "prompt_prefix" => Some(KeySource::PromptPrefix),
            _ => None,
        }
    }
}

impl Default for CacheAwareOptions {
    fn default() -> Self {
        CacheAwareOptions {
            block_bytes: DEFAULT_PREFIX_BLOCK_BYTES,
            max_bytes: DEFAULT_PREFIX_MAX_BYTES,
            miss_cost: DEFAULT_CACHE_MISS_COST,
            kv_cache_tokens: None,
            learn_kv_cache: true,
        }
    }
}

impl Default for LbOptions {
    fn default() -> Self {
        LbOptions {
            hash_on: None,
            load_poll: Duration::from_millis(DEFAULT_LOAD_POLL_MS),
            bounded_load: DEFAULT_BOUNDED_LOAD,
            prompt_prefix_bytes: DEFAULT_PROMPT_PREFIX_BYTES,
            cache: CacheAwareOptions::default(),
        }
    }
}

impl Policy {
    /// Every accepted spelling, for error messages.
    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "random",
        "least_connections",
        "least_outstanding",
        "power_of_two",
        "load_aware",
        "consistent_hash",
        "cache_aware",
    ];

    fn parse(name: &str) -> Option<Policy> {
        match name {
            "round_robin" => Some(Policy::RoundRobin),
            "random" => Some(Policy::Random),
            "least_connections" | "least_outstanding" => Some(Policy::LeastConnections),
            "power_of_two" => Some(Policy::PowerOfTwo),
            "load_aware" => Some(Policy::LoadAware),
            "consistent_hash" => Some(Policy::ConsistentHash),
            "cache_aware" => Some(Policy::CacheAware),
            _ => None,
        }
    }
}

impl Retries {
    /// Every accepted `retry_on` condition, for error messages.
    pub const CONDITIONS: &'static [&'static str] =
        &["connection_failure", "timeout", "http_5xx", "http_429"];
}

#[cfg(test)]
mod tests;
