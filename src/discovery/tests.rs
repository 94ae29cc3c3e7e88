//! Registry bookkeeping, backend naming, refresh scheduling and `discover:` validation.

use std::path::PathBuf;
use std::time::Duration;

use super::service::{next_wait, MIN_WAIT};
use super::*;
use crate::config;

/// The state publisher and the discovery registry of one config.
struct Fixture {
    publisher: Arc<Publisher>,
    registry: Registry,
}

impl Fixture {
    fn record(
        &self,
        key: &EntryKey,
        result: Result<Vec<SocketAddr>, DiscoveryError>,
    ) -> Option<Change> {
        self.registry.record(&self.publisher, key, result)
    }

    fn is_settled(&self) -> bool {
        self.registry.is_settled(&self.publisher)
    }

    fn wanted(&self) -> Vec<(EntryKey, Duration)> {
        self.registry.wanted(&self.publisher)
    }
}

fn yaml(entry: &str) -> String {
    format!("models:\n  m:\n    backends:\n      - {{name: fixed, url: \"http://127.0.0.1:8001\"}}\n      - name: d\n        discover: {entry}\n")
}

fn control(entry: &str) -> Fixture {
    let c = config::parse(yaml(entry).as_bytes()).unwrap();
    Fixture {
        publisher: Publisher::new(&c, PathBuf::from("router.yaml")),
        registry: Registry::default(),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn failure() -> DiscoveryError {
    DiscoveryError::Failed {
        name: "svc.test".into(),
        message: "SERVFAIL".into(),
    }
}

fn names(f: &Fixture) -> Vec<String> {
    let s = f.publisher.snapshot();
    s.pool("m")
        .unwrap()
        .backends
        .iter()
        .map(|b| b.config.name.clone())
        .collect()
}

#[test]
fn resolved_addresses_become_named_backends_and_failures_keep_them() {
    let c = control("{dns: svc.test, port: 8000, nameserver: \"127.0.0.1:5353\"}");
    assert!(!c.is_settled(), "nothing resolved yet");
    let (key, refresh) = c.wanted().remove(0);
    assert_eq!(refresh, Duration::from_millis(5_000));
    assert_eq!(key.target.port, Some(8000));

    let change = c.record(
        &key,
        Ok(vec![
            addr("10.0.0.2:8000"),
            addr("[fd00::1]:8000"),
            addr("10.0.0.1:8000"),
        ]),
    );
    assert!(c.is_settled());
    assert_eq!(change.unwrap().added.len(), 3);
    assert_eq!(
        names(&c),
        [
            "fixed",
            "d-10.0.0.1:8000",
            "d-10.0.0.2:8000",
            "d-[fd00::1]:8000"
        ]
    );
    let generation = c.publisher.snapshot().generation;
    let gate = Arc::clone(c.publisher.snapshot().pool("m").unwrap().backends[1].live());

    // The same set in another order: nothing to publish.
    let same = vec![
        addr("10.0.0.1:8000"),
        addr("[fd00::1]:8000"),
        addr("10.0.0.2:8000"),
    ];
    assert_eq!(c.record(&key, Ok(same)), None);
    // A failure keeps the set.
    assert_eq!(c.record(&key, Err(failure())), None);
    assert_eq!(names(&c).len(), 4);
    // /status shows the kept set and the failure.
    let status = c.registry.status(&c.publisher);
    let e = &status[0];
    assert_eq!(
        (e["model"].as_str(), e["entry"].as_str()),
        (Some("m"), Some("d"))
    );
    assert_eq!(e["addresses"].as_array().unwrap().len(), 3);
    assert_eq!(e["last_resolution"]["result"], "error");
    assert!(e["last_resolution"]["error"]
        .as_str()
        .unwrap()
        .contains("SERVFAIL"));

    // One removed, one added: published with the same generation; the kept one keeps its state.
    let change = c
        .record(&key, Ok(vec![addr("10.0.0.1:8000"), addr("10.0.0.3:8000")]))
        .unwrap();
    assert_eq!(change.added, vec![addr("10.0.0.3:8000")]);
    assert_eq!(
        change.removed,
        vec![addr("10.0.0.2:8000"), addr("[fd00::1]:8000")]
    );
    let s = c.publisher.snapshot();
    assert_eq!(s.generation, generation);
    let pool = s.pool("m").unwrap();
    assert!(Arc::ptr_eq(pool.backends[1].live(), &gate));
    assert!(!pool.backends[2].is_checked(), "a new address starts gated");
    assert_eq!(c.publisher.buried(), 0, "no request holds the old ones");
}

#[test]
fn a_reload_keeps_the_set_of_an_unchanged_entry_and_drops_a_changed_one() {
    let c = control("{dns: svc.test, port: 8000}");
    let (key, _) = c.wanted().remove(0);
    c.record(&key, Ok(vec![addr("10.0.0.1:8000")]));
    let publish = |entry: &str| {
        let next = config::parse(yaml(entry).as_bytes()).unwrap();
        c.publisher.apply_config(next, |expanded, current| {
            Snapshot::build_from(expanded, current.generation + 1, Some(current))
        });
    };
    // Unchanged target (refresh_ms differs): kept, and settled stays.
    publish("{dns: svc.test, port: 8000, refresh_ms: 1000}");
    assert_eq!(names(&c), ["fixed", "d-10.0.0.1:8000"]);
    assert!(c.is_settled());
    // Another port: another target, resolved afresh.
    publish("{dns: svc.test, port: 9000}");
    assert_eq!(names(&c), ["fixed"]);
    assert!(!c.is_settled());
    // A result for the old target is ignored.
    assert_eq!(c.record(&key, Ok(vec![addr("10.0.0.9:8000")])), None);
    assert_eq!(names(&c), ["fixed"]);
}

#[test]
fn the_wait_follows_the_ttl_within_bounds() {
    let s = Duration::from_secs;
    let refresh = s(5);
    for (ttl, want) in [
        (None, s(5)),
        (Some(s(0)), MIN_WAIT),
        (Some(s(3)), s(3)),
        (Some(s(300)), s(5)),
    ] {
        assert_eq!(next_wait(ttl, refresh), want, "{ttl:?}");
    }
    // A refresh bound below the floor wins.
    let fast = Duration::from_millis(200);
    assert_eq!(next_wait(Some(s(30)), fast), fast);
}

#[test]
fn discover_entries_are_validated_with_their_paths() {
    let cases = [
        (
            "{dns: svc.test, port: 8000}\n        url: \"http://127.0.0.1:9\"",
            "models.m.backends[1].discover: url and discover are mutually exclusive",
        ),
        (
            "{port: 8000}",
            "models.m.backends[1].discover.dns: \"\" must be a DNS name",
        ),
        (
            "{dns: 10.0.0.1, port: 8000}",
            "models.m.backends[1].discover.dns",
        ),
        (
            "{dns: svc.test, port: 0}",
            "models.m.backends[1].discover.port: 0 is out of range",
        ),
        (
            "{dns: svc.test, port: 70000}",
            "models.m.backends[1].discover.port: 70000",
        ),
        (
            "{dns: svc.test, refresh_ms: 10}",
            "models.m.backends[1].discover.refresh_ms: 10 is too small",
        ),
        (
            "{dns: svc.test, nameserver: dns.local}",
            "models.m.backends[1].discover.nameserver",
        ),
        ("{dns: svc.test, ttl: 5}", "unknown field `ttl`"),
    ];
    for (entry, want) in cases {
        let err = config::parse(yaml(entry).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{entry}: {err}");
    }
    // A bare nameserver IP gets port 53; SRV when the port is omitted.
    let c = config::parse(yaml("{dns: svc.test., nameserver: \"10.96.0.10\"}").as_bytes()).unwrap();
    let d = &c.models[0].discover[0];
    assert_eq!(d.target.nameserver, Some(addr("10.96.0.10:53")));
    assert_eq!(d.target.port, None);
    // The entry name is unique among the model's backends.
    let dup = yaml("{dns: svc.test}").replace("name: d", "name: fixed");
    let err = config::parse(dup.as_bytes()).unwrap_err().to_string();
    assert!(
        err.contains("models.m.backends[1].name: duplicate backend name"),
        "{err}"
    );
}
