//! Routing: model name → [`Pool`], and the pools themselves (request path, read-only).
//!
//! Later issues add aliases, default models and canaries here; the request path only ever asks
//! [`crate::state::Snapshot::pool`] for a model's pool.

pub mod pool;
pub mod select;
pub mod vllm_load;

pub use pool::{
    BackendHealth, BackendState, InFlightGuard, LoadSample, Pool, PoolLive, ProbeRecord,
};
