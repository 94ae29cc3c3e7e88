//! The soak (`loadtest/soak.sh`, `tests/soak.rs`): the mock fleet, the gateway under
//! reloads, binary upgrades, drains, kills and faulty backends, 500 (CI: 50) reconnecting long
//! streams plus short and hostile requests; then what the clients, the gateway's log and its
//! metrics say, judged against the targets.
//!
//! Shared by the `soak` example (`cargo run --release --example soak`, what `soak.sh` runs)
//! and `tests/soak.rs` (the CI mode) through `#[path]`: test support, not gateway code.
//!
//! - [`plan`]: options, fleet, configs, schedule (pure data);
//! - [`fleet`], [`faulty`]: mock processes and the raw responder for malformed answers;
//! - [`gateway`]: config file, process, signals, admin reads;
//! - [`load`]: the clients and what each request checks;
//! - [`run`]: one run from start to stop; [`report`]: the analysis and the Markdown.
// The example and the test each use part of it.
#![allow(dead_code, unused_imports)]

pub mod faulty;
pub mod fleet;
pub mod gateway;
pub mod load;
pub mod plan;
pub mod report;
pub mod run;

pub use plan::{Mode, Options};
pub use report::Report;
pub use run::run;
