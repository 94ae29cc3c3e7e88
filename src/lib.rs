//! modelgate: an OpenAI-compatible edge gateway for fleets of vLLM model servers, on
//! pingora-core. `ARCHITECTURE.md` is the one-page map; in short:
//!
//! ```text
//! request path (one task per client connection)
//!   conn::Front (ServerApp: per-IP cap, header guard, keep-alive loop)
//!     └ proxy::Gateway (HttpServerApp), per request:
//!         head → admit → preread → decide → exchange (forward / disagg) → settle → observe → reuse
//!         reads one state::Snapshot (ArcSwap load); routing::Pool picks; proxy::upstream pools
//! control plane (Pingora background services)
//!   config::load → ModelConfig::pool_config … → state::Publisher::apply_config ─┐
//!   reload (SIGHUP, file watch) ─────────────────────────────────────────────────┤ build lock,
//!   discovery (DNS) → Publisher::apply_addresses ───────────────────────────────┘ graveyard
//!   health (probes, load scrapes: oneshot) → atomics on each backend's live state
//!   lifecycle (signals, drain, upgrade: lifecycle::Traffic)   admin (/ready /status /metrics)
//! ```
//!
//! The module graph runs one way (checked by `tests/module_graph.rs`): `config` makes runtime
//! types (`routing::settings`, `conn::Limits`, `auth::AuthConfig`), `state` builds snapshots
//! from them, the request path (`conn`, `proxy`, `routing`, …) reads snapshots and never
//! imports `config`; `conn` never imports `proxy`. The request path never locks or does I/O
//! besides the client and backend sockets; the control plane builds and publishes.

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
