//! Reload against a real file: unchanged bytes, rejected files, carried health, the graveyard
//! and the change summary.

use std::sync::Arc;

use super::*;

const A: &str = "models:\n  m:\n    backends:\n      - {name: a, url: \"http://127.0.0.1:8001\"}\n";

/// The publisher of a config file, and what it was started with.
struct Fixture {
    publisher: Arc<Publisher>,
    boot: BootSettings,
    config_path: std::path::PathBuf,
}

impl Fixture {
    fn reload(&self, trigger: Trigger) -> Outcome {
        reload(&self.publisher, &self.boot, trigger)
    }
}

fn setup(yaml: &str) -> (tempfile::TempDir, Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = config::load(&path).unwrap();
    let fixture = Fixture {
        publisher: Publisher::new(&config, path.clone()),
        boot: BootSettings::of(&config),
        config_path: path,
    };
    (dir, fixture)
}

#[test]
fn unchanged_file_is_skipped_but_sighup_always_applies() {
    let (_dir, control) = setup(A);
    assert_eq!(control.reload(Trigger::FileChange), Outcome::Unchanged);
    assert_eq!(control.publisher.status().generation, 1);
    assert_eq!(control.reload(Trigger::Signal), Outcome::Applied(2));
    assert_eq!(control.publisher.status().generation, 2);
    assert_eq!(control.publisher.snapshot().generation, 2);
}

#[test]
fn a_rejected_file_changes_nothing_and_is_reported() {
    let (_dir, control) = setup(A);
    std::fs::write(&control.config_path, A.replace("http://", "ftp://")).unwrap();
    let Outcome::Rejected(msg) = control.reload(Trigger::FileChange) else {
        panic!("accepted a bad file");
    };
    assert!(msg.contains("models.m.backends[0].url"), "{msg}");
    let status = control.publisher.status();
    assert_eq!(status.generation, 1);
    assert_eq!(status.last_error.as_deref(), Some(msg.as_str()));
    assert_eq!(control.publisher.snapshot().generation, 1);
    // A missing file is rejected too, and the next good reload clears the error.
    std::fs::remove_file(&control.config_path).unwrap();
    assert!(matches!(
        control.reload(Trigger::Signal),
        Outcome::Rejected(_)
    ));
    std::fs::write(&control.config_path, A.replace("m:", "n:")).unwrap();
    assert_eq!(control.reload(Trigger::FileChange), Outcome::Applied(2));
    assert!(control.publisher.status().last_error.is_none());
}

#[test]
fn kept_backends_carry_health_and_new_ones_start_gated() {
    let (_dir, control) = setup(A);
    let old = control.publisher.snapshot(); // a request in flight on generation 1
    old.pools[0].backends[0].set_health(true);
    let two = format!("{A}      - {{name: b, url: \"http://127.0.0.1:8002\"}}\n");
    std::fs::write(&control.config_path, two).unwrap();
    assert_eq!(control.reload(Trigger::FileChange), Outcome::Applied(2));
    let snap = control.publisher.snapshot();
    let pool = snap.pool("m").unwrap();
    assert!(pool.backends[0].is_healthy() && pool.backends[0].is_checked());
    assert!(!pool.backends[1].is_healthy() && !pool.backends[1].is_checked());
    // An in-flight request counted on the old snapshot shows on the new one.
    let _guard = old.pools[0].backends[0].track();
    assert_eq!(pool.backends[0].in_flight(), 1);
}

#[test]
fn the_graveyard_keeps_snapshots_a_request_still_holds() {
    let (_dir, control) = setup(A);
    let held = control.publisher.snapshot(); // a request in flight on generation 1
    assert_eq!(control.reload(Trigger::Signal), Outcome::Applied(2));
    assert_eq!(control.publisher.buried(), 1);
    control.publisher.prune();
    assert_eq!(
        control.publisher.buried(),
        1,
        "dropped while a request holds it"
    );
    drop(held);
    control.publisher.prune();
    assert_eq!(control.publisher.buried(), 0);
}

#[test]
fn the_change_summary_names_models_and_backends() {
    let (_dir, control) = setup(A);
    let yaml = "models:\n  m:\n    backends:\n      - {name: b, url: \"http://127.0.0.1:8002\", drain: true}\n  n:\n    backends:\n      - {name: c, url: \"http://127.0.0.1:8003\"}\n";
    let new = config::parse(yaml.as_bytes()).unwrap();
    let text = diff::describe(&control.publisher.snapshot(), &new);
    assert_eq!(
        text,
        "+model n, +backend m/b=http://127.0.0.1:8002, -backend m/a=http://127.0.0.1:8001"
    );
    let drained = config::parse(A.replace("}", ", drain: true}").as_bytes()).unwrap();
    assert_eq!(
        diff::describe(&control.publisher.snapshot(), &drained),
        "drain m/a"
    );
    let same = config::parse(A.as_bytes()).unwrap();
    assert_eq!(
        diff::describe(&control.publisher.snapshot(), &same),
        "no model or backend changes"
    );
}
