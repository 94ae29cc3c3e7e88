//! CI builds the separate `fuzz/` crate on stable and runs every fuzz target, time-boxed: the
//! seed corpus, then seeded random and mutated inputs for a few seconds per target. A finding
//! fails this test (the input is written to `fuzz/artifacts/<target>/`). Long, coverage-guided
//! runs are in `fuzz/README.md`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn fuzz_crate_builds_on_stable_and_its_targets_pass_a_time_boxed_run() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: the outer `cargo test` may still hold `target/`'s lock.
    let target_dir = root.join("target").join("fuzz-ci");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "run",
            "--locked",
            "--quiet",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--bin",
            "run_stable",
            "--",
            "--seconds",
            "5",
        ])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "fuzz run failed:\n{stdout}\n{stderr}");
    // One line per target, each with its input count and `ok`.
    for target in ["scan_json", "scan_multipart", "config"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(target))
            .unwrap_or_else(|| panic!("no result for {target}:\n{stdout}"));
        assert!(line.contains("ok"), "{line}");
    }
}
