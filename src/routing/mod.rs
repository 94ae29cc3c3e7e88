//! Routing: model name → [`Pool`], and the pools themselves (request path, read-only).
//!
//! Later issues add aliases, default models and canaries here; the request path only ever asks
//! [`crate::state::Snapshot::pool`] for a model's pool.

pub mod cache_aware;
pub mod pool;
pub mod prefix;
pub mod select;
pub mod settings;
pub mod vllm_load;

pub use pool::{
    Affinity, BackendHealth, BackendState, InFlightGuard, LoadSample, Pick, Pool, PoolLive,
    ProbeRecord,
};
pub use settings::{
    BackendConfig, CacheAwareOptions, Canary, HealthCheck, KeySource, LbOptions, Policy,
    PoolConfig, Retries, Shadow, Timeouts,
};
