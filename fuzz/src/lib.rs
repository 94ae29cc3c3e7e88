//! Fuzz targets for modelgate's untrusted-input parsers: the JSON body scanner, the
//! `multipart/form-data` body scanner and the config loader.
//!
//! Test-harness code, never part of the gateway. Each target is a plain function of the input
//! bytes that panics when an invariant breaks, so the same logic runs under libFuzzer
//! (`fuzz_targets/*.rs`, `cargo +nightly fuzz run`) and under the stable runner
//! (`src/bin/run_stable.rs`: seed corpus plus seeded random mutations, time-boxed). See
//! `fuzz/README.md` for how to run them and the results so far.
//!
//! | target | input | checks |
//! | --- | --- | --- |
//! | [`scan_json`] | chunking header + body | [`json`] |
//! | [`scan_multipart`] | chunking header + body | [`multipart`] |
//! | [`config`] | a `router.yaml` | [`mod@config`] |

pub mod chunks;
pub mod config;
pub mod json;
pub mod multipart;
pub mod mutate;

pub use config::config;
pub use json::scan_json;
pub use multipart::scan_multipart;

/// One fuzz target as the stable runner sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Same name as the `fuzz_targets/` binary and the `corpus/` and `dict/` entries.
    pub name: &'static str,
    /// The target function.
    pub run: fn(&[u8]),
    /// libFuzzer dictionary text (also used by the stable runner).
    pub dict: &'static str,
    /// Inputs start with a chunking header ([`chunks`]).
    pub chunked: bool,
}

/// Every target, in the order the runner runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "scan_json",
        run: scan_json,
        dict: include_str!("../dict/scan_json.dict"),
        chunked: true,
    },
    Target {
        name: "scan_multipart",
        run: scan_multipart,
        dict: include_str!("../dict/scan_multipart.dict"),
        chunked: true,
    },
    Target {
        name: "config",
        run: config,
        dict: include_str!("../dict/config.dict"),
        chunked: false,
    },
];
