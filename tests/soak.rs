//! The soak's CI mode: one 60-second cycle of `loadtest/soak.sh`'s schedule (config saves +
//! SIGHUP every 10 s, a binary upgrade, a drain and undrain, a backend killed and restarted,
//! a backend answering 503, hanging, resetting mid-header and sending malformed responses)
//! under 50 reconnecting streams, 20 short requests/s and a hostile trickle, against the
//! binaries `cargo test` built. Each assertion is one of the targets; the report
//! (`report.md` and raw data) is kept in a temp directory that is printed on failure.
//!
//! Takes about 80 s. `MODELGATE_SOAK_DIR=dir` keeps the output there.

#[path = "../loadtest/soak/mod.rs"]
mod soak;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_ci_mode_meets_the_targets() {
    let temp = tempfile::tempdir().unwrap();
    let out = std::env::var_os("MODELGATE_SOAK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut opts = soak::Options::ci(
        PathBuf::from(env!("CARGO_BIN_EXE_modelgate")),
        PathBuf::from(env!("CARGO_BIN_EXE_modelgate-mock")),
        out.clone(),
    );
    opts.command = "cargo test --test soak".into();
    let report = soak::run(opts).await.expect("the soak ran");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
    // Printed only when an assertion fails (the test harness captures it otherwise).
    println!("{md}");
    if !report.all_met() {
        // Keep the raw data of a failed run.
        let kept = temp.keep();
        println!("soak output kept in {}", kept.display());
    }

    // The load and the schedule really ran.
    assert!(
        report.streams_completed >= 200,
        "streams completed: {}",
        report.streams_completed
    );
    assert!(
        report.shorts_ok >= 800,
        "short requests ok: {}",
        report.shorts_ok
    );
    assert_eq!(
        report.reloads_applied, report.reloads_written,
        "reloads seen in force"
    );
    assert_eq!(report.upgrades_completed, 1, "binary upgrades completed");

    // The targets.
    assert_eq!(report.refused, 0, "refused connections");
    let unexplained: Vec<_> = report
        .failures
        .iter()
        .filter(|f| f.explained_by.is_none())
        .collect();
    assert!(
        unexplained.is_empty(),
        "unexplained failures: {unexplained:#?}"
    );
    assert_eq!(
        report.cuts_unexplained, 0,
        "cut streams not explained by a fault"
    );
    assert_eq!(
        report.wrong_pool,
        Vec::<String>::new(),
        "wrong-pool answers"
    );
    assert_eq!(
        report.not_in_config,
        Vec::<String>::new(),
        "answers by a backend not in the config in force"
    );
    assert_eq!(
        report.drained_served,
        Vec::<String>::new(),
        "new requests served by a drained backend"
    );
    assert_eq!(
        report.double_answers,
        Vec::<String>::new(),
        "requests answered twice"
    );
    assert_eq!(
        report.logged_twice,
        Vec::<String>::new(),
        "request ids logged twice"
    );
    assert_eq!(
        report.hostile_wrong, 0,
        "hostile requests answered otherwise than expected"
    );
    assert_eq!(report.panics, Vec::<String>::new(), "gateway panics");
    // Descriptors under load follow the faults on at the time, and this mode has no two
    // windows at the same point of the schedule (the full mode compares those): a leak is
    // judged here on the idle levels before and after the load.
    assert_eq!(
        report.fds_idle.within_10_percent(),
        Some(true),
        "idle descriptors: {:?}",
        report.fds_idle
    );
    assert_eq!(
        report.rss_kib.within_10_percent(),
        Some(true),
        "RSS: {:?}",
        report.rss_kib
    );
}
