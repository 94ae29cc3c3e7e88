//! modelgate: an OpenAI-compatible edge gateway for fleets of vLLM model servers, on Pingora.
//!
//! ```text
//!  client ──► proxy (public listener, request path)
//!              │ route::classify → body::Upload::preread (scan "model") → Snapshot::pool
//!              └ forward: select healthy backend → send → relay chunks (retry only before 1st byte)
//!  control plane: config::load → Snapshot::build → ArcSwap ◄─ health prober (atomics per backend)
//!  discovery: DNS (hickory) per `discover:` entry → Registry::record → Snapshot::build_from
//!  admin listener: /health /ready /status
//! ```
//!
//! The request path loads one immutable [`state::Snapshot`] per request and never locks or does
//! I/O besides the client and backend sockets. The control plane builds snapshots and publishes
//! them; health state lives in atomics on each pool's backends.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod discovery;
pub mod error;
pub mod health;
mod io_wrap;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
#[cfg(feature = "mock")]
pub mod mock;
pub mod oneshot;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod scan;
pub mod state;
pub mod telemetry;
