//! libFuzzer entry for the `scan_json` target (test harness; the checks live in `src/`).
//! Run: `cargo +nightly fuzz run --features libfuzzer scan_json` (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modelgate_fuzz::scan_json(data));
