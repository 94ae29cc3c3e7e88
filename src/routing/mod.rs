//! Pools and backend selection (request path, read-only): one [`Pool`] per model (or side of
//! a disaggregated model) with its backends' live state and its policy, and the runtime types a
//! pool is built from ([`settings`], made by `config` in the control plane).
//!
//! The request path asks the snapshot for a model's pool and the pool for a backend: no locks,
//! no I/O. The one exception, [`vllm_load::fetch`], is the control plane's `load_aware` scrape.
//! Must not import `config` or `state`.

pub mod cache_aware;
pub mod pool;
pub mod prefix;
pub mod select;
pub mod settings;
pub mod ttfb;
pub mod vllm_load;

pub use pool::{
    Affinity, BackendHealth, BackendState, InFlightGuard, LoadSample, Pick, Pool, PoolLive,
    ProbeRecord,
};
pub use settings::{
    BackendConfig, CacheAwareOptions, Canary, HealthCheck, KeySource, LbOptions, Policy,
    PoolConfig, Retries, Shadow, Timeouts,
};
