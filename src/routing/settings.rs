//! What a pool is built from: the runtime types the control plane makes from the validated
//! config (`config` produces them; `state` turns them into pools). Plain values: no I/O, no
//! locks, nothing YAML-shaped. The request path reads them through its [`super::Pool`].

use std::net::SocketAddr;
use std::time::Duration;

/// KV-cache tokens of a backend that does not report `vllm:cache_config_info`: Llama-3.1-8B on
/// one H100 80 GB (29,205 blocks of 16 tokens, BLIS' measurement).
pub const DEFAULT_KV_CACHE_TOKENS: u64 = 29_205 * 16;
/// One pool as the control plane built it: a model (or one side of a disaggregated model)
/// with its backends and settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub backends: Vec<BackendConfig>,
    pub policy: Policy,
    pub lb: LbOptions,
    /// The id the backends expect in `model`, when it differs from `name`.
    pub served_model_name: Option<String>,
    /// Requests that may wait when every backend is at `max_in_flight` (0 = shed at once).
    pub max_queue: usize,
    /// Longest wait in that queue.
    pub queue_timeout: Duration,
    pub canary: Option<Canary>,
    pub shadow: Option<Shadow>,
    pub timeouts: Timeouts,
    pub retries: Retries,
    pub health: HealthCheck,
    /// Prefill/decode disaggregation: this pool is the decode side, and this the prefill side.
    pub prefill: Option<Box<PoolConfig>>,
}

/// One backend of a pool.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Identity in logs and headers; unique within its pool.
    pub name: String,
    /// The URL as written in the file (logs and `--test` only; never sent to clients).
    pub url: String,
    /// Resolved address (names are resolved here, in the control plane, never per request).
    pub addr: SocketAddr,
    /// `host[:port]` from the URL, used as SNI-free peer identity in logs.
    pub authority: String,
    /// Path prefix from the URL without trailing `/` (usually empty).
    pub path_prefix: String,
    /// Relative weight, ≥ 1.
    pub weight: u32,
    /// Draining: gets no new requests; in-flight ones finish.
    pub drain: bool,
    /// Most requests in flight through this gateway (`None` = no limit).
    pub max_in_flight: Option<u32>,
    /// `Authorization: Bearer <api_key>` sent to this backend.
    pub api_key: Option<String>,
}

/// Where a sticky key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (name lowercase).
    Header(String),
    /// The body's top-level `user`.
    BodyUser,
    /// The first bytes of the first prompt / message.
    PromptPrefix,
}

/// Load-balancer options of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct LbOptions {
    /// `consistent_hash` key.
    pub hash_on: Option<KeySource>,
    /// `load_aware`: how often each backend's `/metrics` is read.
    pub load_poll: Duration,
    /// `consistent_hash`: a backend takes at most this × the average in-flight count.
    pub bounded_load: f64,
    /// `prompt_prefix`: how many bytes of the prompt are hashed.
    pub prompt_prefix_bytes: usize,
    /// `cache_aware` settings.
    pub cache: CacheAwareOptions,
}

/// `cache_aware` settings of a pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheAwareOptions {
    /// Prompt bytes per hashed block.
    pub block_bytes: usize,
    /// Prompt bytes indexed at most.
    pub max_bytes: usize,
    /// Weight of a token the backend would have to prefill, against a token already queued.
    pub miss_cost: f64,
    /// KV-cache size of each backend in tokens; `None`: read it from vLLM's
    /// `vllm:cache_config_info`, else [`DEFAULT_KV_CACHE_TOKENS`].
    pub kv_cache_tokens: Option<u64>,
    /// Correct each backend's KV-cache size by the cached tokens its responses report.
    pub learn_kv_cache: bool,
}

/// `canary:` of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub model: String,
    /// 0–100.
    pub percent: f64,
    /// Same key → same side, on every replica.
    pub sticky_on: Option<KeySource>,
}

/// `shadow:` of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    pub model: String,
    /// 0–100.
    pub percent: f64,
    /// Shadow copies in flight at most; more are skipped.
    pub max_concurrency: usize,
}

/// Load-balancing policy of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Random,
    LeastConnections,
    PowerOfTwo,
    LoadAware,
    ConsistentHash,
    CacheAware,
}

impl Policy {
    /// Spelling used in the file, logs, headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::Random => "random",
            Policy::LeastConnections => "least_connections",
            Policy::PowerOfTwo => "power_of_two",
            Policy::LoadAware => "load_aware",
            Policy::ConsistentHash => "consistent_hash",
            Policy::CacheAware => "cache_aware",
        }
    }
}

/// Timeouts of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// From the request being sent upstream to the response header (TTFT for streams).
    pub first_byte: Duration,
    /// Largest gap between two response body chunks.
    pub idle: Duration,
    /// Whole exchange, from the request's arrival to the response's last byte.
    pub request: Duration,
}

/// Retry policy of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// All attempts, the first included (≥ 1).
    pub max_attempts: u32,
    pub on_connection_failure: bool,
    pub on_timeout: bool,
    pub on_http_5xx: bool,
    pub on_http_429: bool,
}

/// Active health check of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}
