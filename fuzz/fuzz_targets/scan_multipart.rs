//! libFuzzer entry for the `scan_multipart` target (test harness; the checks live in `src/`).
//! Run: `cargo +nightly fuzz run --features libfuzzer scan_multipart` (see `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modelgate_fuzz::scan_multipart(data));
