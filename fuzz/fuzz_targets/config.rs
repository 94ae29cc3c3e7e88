//! libFuzzer entry for the `config` target (test harness; the checks live in `src/`).
//! Run: `cargo +nightly fuzz run --features libfuzzer config` (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modelgate_fuzz::config(data));
