//! DNS service discovery over real sockets: a DNS server on 127.0.0.1 whose records change
//! while the real gateway binary serves mock vLLM backends on 127.0.0.1 and ::1.
//!
//! Backends found by A/AAAA records share one port, so the two addresses here are 127.0.0.1
//! and ::1 with the same port number; SRV records carry ports, so those tests use 127.0.0.1
//! only.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use support::dns::{DnsServer, Mode};
use support::*;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const NAME: &str = "vllm.test.";

/// Two mocks serving `model` on the same port, one on 127.0.0.1 and one on ::1.
async fn twin_mocks(model: &str, f: impl Fn(&mut MockConfig) + Copy) -> (MockServer, MockServer) {
    for _ in 0..50 {
        let mut cfg = MockConfig {
            name: "v4".into(),
            models: vec![model.into()],
            ..MockConfig::default()
        };
        f(&mut cfg);
        let v4 = MockServer::start(cfg.clone()).await.unwrap();
        cfg.name = "v6".into();
        let port = v4.addr().port();
        if let Ok(v6) = MockServer::start_on(cfg, SocketAddr::new(V6, port)).await {
            return (v4, v6);
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// A model whose only backend entry is `discover:` against `dns`.
fn discover_model(model: &str, dns: &DnsServer, port: Option<u16>, refresh_ms: u64) -> String {
    let port = port.map(|p| format!(", port: {p}")).unwrap_or_default();
    format!(
        "  {model}:\n    backends:\n      - name: v\n        discover: {{dns: \"{NAME}\"{port}, refresh_ms: {refresh_ms}, nameserver: \"{}\"}}\n    health_check: {{interval_ms: 100, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1}}\n",
        dns.addr
    )
}

fn backend_name(addr: SocketAddr) -> String {
    format!("v-{addr}")
}

/// Backend names of `model` in `/status`.
async fn listed(gw: &Gateway, model: &str) -> Vec<String> {
    let s = gw.status().await;
    let mut names: Vec<String> = s["models"][model]["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// `modelgate_discovery_resolutions_total` of model m, entry v, with `result`.
async fn resolutions(gw: &Gateway, result: &str) -> f64 {
    let labels = [("model", "m"), ("entry", "v"), ("result", result)];
    gw.metric("modelgate_discovery_resolutions_total", &labels)
        .await
}

/// `modelgate_discovery_addresses` of model m, entry v.
async fn addresses(gw: &Gateway) -> f64 {
    gw.metric(
        "modelgate_discovery_addresses",
        &[("model", "m"), ("entry", "v")],
    )
    .await
}

/// Send `n` non-stream requests; every one must answer 200. Returns the backends that served.
async fn serve(gw: &Gateway, model: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = gw.chat(model, false).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let b = r.headers()["x-modelgate-backend"]
            .to_str()
            .unwrap()
            .to_string();
        out.push(b);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_and_aaaa_records_become_backends_that_serve() {
    let (v4, v6) = twin_mocks("m", |_| {}).await;
    let port = v4.addr().port();
    let dns = DnsServer::start(30).await;
    dns.set_addrs(NAME, &[V4, V6]);
    let gw = Gateway::start_ready(&discover_model("m", &dns, Some(port), 500), "").await;

    let want = vec![backend_name(v4.addr()), backend_name(v6.addr())];
    eventually(
        Duration::from_secs(10),
        "both addresses healthy",
        || async {
            gw.backend_healthy("m", &want[0]).await && gw.backend_healthy("m", &want[1]).await
        },
    )
    .await;
    assert_eq!(listed(&gw, "m").await, want);
    let served = serve(&gw, "m", 20).await;
    for name in &want {
        assert!(served.contains(name), "{name} got no traffic: {served:?}");
    }
    assert!(v4.stats().requests() > 0 && v6.stats().requests() > 0);
    assert_eq!(addresses(&gw).await, 2.0);
    assert!(resolutions(&gw, "ok").await >= 1.0);
    // The config check accepts the entry and describes it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(["-t", "-c"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("discover v dns {NAME} A/AAAA port {port}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_changes_gate_new_backends_and_drain_removed_ones_under_load() {
    // Streams of ~1.5 s.
    let (v4, v6) = twin_mocks("m", |c| {
        c.tokens = 60;
        c.itl = Duration::from_millis(25);
    })
    .await;
    let (n4, n6) = (backend_name(v4.addr()), backend_name(v6.addr()));
    // The ::1 backend serves the wrong model at first: its probe fails.
    v6.set_models(vec!["other".into()]);
    let dns = DnsServer::start(1).await;
    dns.set_addrs(NAME, &[V4]);
    let gw =
        Gateway::start_ready(&discover_model("m", &dns, Some(v4.addr().port()), 200), "").await;
    assert_eq!(listed(&gw, "m").await, vec![n4.clone()]);

    // Add ::1: listed, but gated while its probe fails; every request still goes to 127.0.0.1.
    dns.set_addrs(NAME, &[V4, V6]);
    eventually(Duration::from_secs(10), "::1 listed and probed", || async {
        let s = gw.status().await;
        s["models"]["m"]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["name"] == n6.as_str() && b["checked"] == true)
    })
    .await;
    assert!(!gw.backend_healthy("m", &n6).await);
    let served = serve(&gw, "m", 20).await;
    assert!(served.iter().all(|b| *b == n4), "{served:?}");
    assert_eq!(v6.stats().requests(), 0);

    // Its probe passes: it gets traffic.
    v6.set_models(vec!["m".into()]);
    eventually(Duration::from_secs(10), "::1 serves", || async {
        serve(&gw, "m", 4).await.contains(&n6)
    })
    .await;

    // Streams in flight on 127.0.0.1 (round robin sends half of them there), then remove it.
    let streams = spawn_streams(&gw, 20, "m");
    let s4 = v4.stats();
    eventually(
        Duration::from_secs(10),
        "streams running on 127.0.0.1",
        || {
            let n = s4.in_flight();
            async move { n >= 5 }
        },
    )
    .await;
    dns.set_addrs(NAME, &[V6]);
    eventually(Duration::from_secs(10), "127.0.0.1 removed", || async {
        listed(&gw, "m").await == vec![n6.clone()]
    })
    .await;
    // Removed while its streams still run: no new request reaches it.
    assert!(
        s4.in_flight() > 0,
        "streams ended before the removal; the test proves nothing"
    );
    assert_eq!(gw.generation().await, 1, "a DNS change is not a new config");
    let before = s4.requests();
    let served = serve(&gw, "m", 10).await;
    assert!(served.iter().all(|b| *b == n6), "{served:?}");
    assert_eq!(s4.requests(), before);
    // ... and every stream it had finishes.
    for s in streams {
        let r = s.await.unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(s4.aborted(), 0);
    gw.wait_log("discovered backends changed").await;
    // Once drained, its metric series go (address churn must not grow the registry forever).
    let series_of = |name: String| {
        let gw = &gw;
        async move {
            let m = gw.metrics().await;
            m.iter()
                .filter(|s| s.labels.get("backend") == Some(&name))
                .count()
        }
    };
    assert!(series_of(n6.clone()).await > 0);
    eventually(
        Duration::from_secs(10),
        "removed backend's series gone",
        || async { series_of(n4.clone()).await == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_failure_keeps_the_last_good_set_and_is_counted() {
    let (v4, _v6) = twin_mocks("m", |_| {}).await;
    let n4 = backend_name(v4.addr());
    let dns = DnsServer::start(1).await;
    dns.set_addrs(NAME, &[V4]);
    let gw =
        Gateway::start_ready(&discover_model("m", &dns, Some(v4.addr().port()), 200), "").await;
    let counted = |result: &'static str| resolutions(&gw, result);

    for (mode, result) in [(Mode::ServFail, "error"), (Mode::Silent, "error")] {
        dns.set_mode(mode);
        let start = counted(result).await;
        eventually(Duration::from_secs(15), "failure counted", || async {
            counted(result).await > start
        })
        .await;
        assert_eq!(listed(&gw, "m").await, vec![n4.clone()], "{mode:?}");
        let entry = gw.status().await["discovery"][0].clone();
        assert_eq!(entry["last_resolution"]["result"], "error", "{entry}");
        assert_eq!(entry["addresses"][0], v4.addr().to_string(), "{entry}");
        assert!(serve(&gw, "m", 5).await.iter().all(|b| *b == n4));
        dns.set_mode(Mode::Answer);
    }
    // A name that stops existing (or has no records) does not empty the pool either.
    dns.set_addrs("other.test.", &[V4]);
    dns.set_addrs(NAME, &[]);
    let start = counted("empty").await;
    eventually(Duration::from_secs(10), "empty answer counted", || async {
        counted("empty").await > start
    })
    .await;
    assert_eq!(listed(&gw, "m").await, vec![n4.clone()]);
    assert!(serve(&gw, "m", 5).await.iter().all(|b| *b == n4));
    assert_eq!(addresses(&gw).await, 1.0);
    gw.wait_log("discovery failed; keeping the last good addresses")
        .await;

    // The server gone altogether (its port closed): the same.
    drop(dns);
    let start = counted("error").await;
    eventually(
        Duration::from_secs(15),
        "unreachable server counted",
        || async { counted("error").await > start },
    )
    .await;
    assert_eq!(listed(&gw, "m").await, vec![n4.clone()]);
    assert!(serve(&gw, "m", 5).await.iter().all(|b| *b == n4));
}

/// Mocks a and b serving m on 127.0.0.1, and a DNS server (TTL 1 s) where a.test and b.test
/// point to 127.0.0.1 (SRV records are the test's).
async fn srv_setup() -> (MockServer, MockServer, DnsServer) {
    let a = mock("a", "m").await;
    let b = mock("b", "m").await;
    let dns = DnsServer::start(1).await;
    dns.set_addrs("a.test.", &[V4]);
    dns.set_addrs("b.test.", &[V4]);
    (a, b, dns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn srv_records_give_the_ports_when_port_is_omitted() {
    let (a, b, dns) = srv_setup().await;
    dns.set_srv(
        NAME,
        &[(a.addr().port(), "a.test."), (b.addr().port(), "b.test.")],
    );
    let gw = Gateway::start_ready(&discover_model("m", &dns, None, 200), "").await;
    let (na, nb) = (backend_name(a.addr()), backend_name(b.addr()));
    eventually(
        Duration::from_secs(10),
        "both SRV targets healthy",
        || async { gw.backend_healthy("m", &na).await && gw.backend_healthy("m", &nb).await },
    )
    .await;
    let served = serve(&gw, "m", 10).await;
    assert!(served.contains(&na) && served.contains(&nb), "{served:?}");

    dns.set_srv(NAME, &[(b.addr().port(), "b.test.")]);
    eventually(Duration::from_secs(10), "a removed", || async {
        listed(&gw, "m").await == vec![nb.clone()]
    })
    .await;
    assert!(serve(&gw, "m", 5).await.iter().all(|x| *x == nb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ttl_shorter_than_refresh_ms_refreshes_sooner() {
    let (a, b, dns) = srv_setup().await;
    dns.set_srv(NAME, &[(a.addr().port(), "a.test.")]);
    // refresh_ms is a minute: only the 1 s TTL can make the change show within the wait below.
    let gw = Gateway::start_ready(&discover_model("m", &dns, None, 60_000), "").await;
    let nb = backend_name(b.addr());
    dns.set_srv(
        NAME,
        &[(a.addr().port(), "a.test."), (b.addr().port(), "b.test.")],
    );
    eventually(
        Duration::from_secs(15),
        "b found before refresh_ms",
        || async { gw.backend_healthy("m", &nb).await },
    )
    .await;
    assert!(serve(&gw, "m", 10).await.contains(&nb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_keeps_the_discovered_backends_of_an_unchanged_entry() {
    let (v4, _v6) = twin_mocks("m", |_| {}).await;
    let other = mock("o", "o").await;
    let n4 = backend_name(v4.addr());
    let dns = DnsServer::start(1).await;
    dns.set_addrs(NAME, &[V4]);
    let models = discover_model("m", &dns, Some(v4.addr().port()), 200);
    let gw = Gateway::start_ready(&models, "").await;
    eventually(
        Duration::from_secs(10),
        "discovered backend healthy",
        || async { gw.backend_healthy("m", &n4).await },
    )
    .await;
    // From now on DNS answers nothing: only the kept set can serve after the reload.
    dns.set_mode(Mode::Silent);
    let more = format!("{models}{}", model_block("o", &[backend("o", &other)], ""));
    gw.write_config(&more, "");
    gw.wait_generation(2).await;
    assert_eq!(listed(&gw, "m").await, vec![n4.clone()]);
    assert!(
        gw.backend_healthy("m", &n4).await,
        "kept backend re-gated by the reload"
    );
    assert!(serve(&gw, "m", 5).await.iter().all(|b| *b == n4));
    assert_eq!(addresses(&gw).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_waits_for_the_first_resolution() {
    let (v4, _v6) = twin_mocks("m", |_| {}).await;
    let fixed = mock("f", "f").await;
    let dns = DnsServer::start(1).await;
    dns.set_addrs(NAME, &[V4]);
    // The first resolution cannot finish while the server is silent (it times out after ~4 s).
    dns.set_mode(Mode::Silent);
    let models = format!(
        "{}{}",
        model_block("f", &[backend("f", &fixed)], ""),
        discover_model("m", &dns, Some(v4.addr().port()), 200)
    );
    let gw = Gateway::start(&models, "").await;
    eventually(Duration::from_secs(10), "fixed backend healthy", || async {
        gw.backend_healthy("f", "f").await
    })
    .await;
    let ready = client().get(gw.admin_url("/ready")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        503,
        "ready before the discover entry resolved once"
    );
    dns.set_mode(Mode::Answer);
    gw.wait_ready().await;
    let n4 = backend_name(v4.addr());
    eventually(
        Duration::from_secs(10),
        "discovered backend serves",
        || async { gw.backend_healthy("m", &n4).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frequent_discovery_changes_do_not_hold_back_other_pools_probes() {
    let (v4, v6) = twin_mocks("m", |_| {}).await;
    let fixed = mock("f", "f").await;
    let dns = DnsServer::start(1).await;
    dns.set_addrs(NAME, &[V4]);
    // Model f is probed every 600 ms; model m's DNS set changes every 250 ms below.
    let models = format!(
        "  f:\n    backends:\n{}    health_check: {{interval_ms: 600, timeout_ms: 500}}\n{}",
        backend("f", &fixed),
        discover_model("m", &dns, Some(v4.addr().port()), 100)
    );
    let gw = Gateway::start_ready(&models, "").await;
    let probes = fixed.stats();
    let before = probes.models_requests();
    let mut changes = 0;
    // The stimulus: m's records flip every 250 ms (the sleep paces the changes under test).
    for i in 0..16 {
        let set = if i % 2 == 0 { vec![V4, V6] } else { vec![V4] };
        dns.set_addrs(NAME, &set);
        tokio::time::sleep(Duration::from_millis(250)).await;
        changes += 1;
    }
    drop(v6);
    // ~4 s at one probe per 600 ms: at least 4 rounds, however often m's backends changed.
    let rounds = probes.models_requests() - before;
    assert!(
        rounds >= 4,
        "{rounds} probes of f during {changes} DNS changes of m"
    );
    assert!(
        gw.log().matches("discovered backends changed").count() >= 6,
        "m's set did not change often enough for the test to mean anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_with_no_address_yet_answers_503_under_every_policy() {
    let fixed = mock("f", "f").await;
    let dns = DnsServer::start(1).await; // knows no name: NXDOMAIN
    let policies = [
        "round_robin",
        "random",
        "least_connections",
        "power_of_two",
        "load_aware",
        "consistent_hash",
    ];
    let mut models = model_block("f", &[backend("f", &fixed)], "");
    for p in policies {
        let hash = if p == "consistent_hash" {
            ", hash_on: \"header:x-session-id\""
        } else {
            ""
        };
        models.push_str(&format!(
            "  {p}:\n    backends:\n      - name: v\n        discover: {{dns: \"{NAME}\", port: 8000, nameserver: \"{}\"}}\n    load_balancer: {{policy: {p}{hash}}}\n",
            dns.addr
        ));
    }
    let gw = Gateway::start_ready(&models, "").await;
    for p in policies {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-session-id", "s")
            .body(chat_body(p, false))
            .send()
            .await
            .unwrap();
        expect_error(r, 503, Some("no_healthy_backend")).await;
    }
    assert!(gw.chat("f", false).await.status() == 200);
    assert!(!gw.log().contains("panicked"));
}
