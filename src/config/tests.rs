//! Config validation: the seed file, defaults inheritance, and every rejected case by path.

use super::*;

const SEED: &str = include_str!("../../conf/router.yaml");

fn issues(yaml: &str) -> Vec<String> {
    match parse(yaml.as_bytes()) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn seed_config_is_accepted_unchanged() {
    let c = parse(SEED.as_bytes()).expect("seed config must load");
    assert_eq!(c.listen.to_string(), "0.0.0.0:8000");
    assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    let m = &c.models[0];
    assert_eq!(m.name, "mistral-7b");
    assert_eq!(m.backends.len(), 2);
    assert_eq!(m.backends[0].name, "mistral-7b-gpu0");
    assert_eq!(m.backends[0].addr.port(), 8001);
    assert!(
        m.backends[0].addr.is_ipv4(),
        "localhost resolves to IPv4 first"
    );
    assert_eq!(m.policy, Policy::RoundRobin);
    assert_eq!(m.timeouts.request, Duration::from_millis(60000));
    assert_eq!(m.timeouts.connect, Duration::from_millis(2000));
    assert_eq!(
        m.timeouts.idle,
        Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS)
    );
    assert_eq!(m.retries.max_attempts, 2);
    assert!(m.retries.on_connection_failure && m.retries.on_timeout);
    assert!(!m.retries.on_http_5xx && !m.retries.on_http_429);
    assert_eq!(m.health.path, "/v1/models");
    assert_eq!(c.sha256.len(), 64);
}

#[test]
fn every_shipped_config_parses() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            const PLACEHOLDER: &str = "replace-with-the-output-of-openssl-rand-hex-32";
            if text.contains(PLACEHOLDER) {
                // Shipped with a placeholder admin token on purpose: it must not start as is.
                let got = issues(&text);
                assert!(
                    got.len() == 1
                        && got[0].starts_with("admin.token: is still the example placeholder"),
                    "{}: {got:?}",
                    path.display()
                );
                let fixed = text.replace(PLACEHOLDER, "0123456789abcdef0123456789abcdef");
                parse_at(fixed.as_bytes(), path.parent())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                continue;
            }
            load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[test]
fn defaults_are_inherited_key_by_key() {
    let c = parse(
        br#"
defaults:
  timeouts: {first_byte_timeout_ms: 5000, idle_timeout_ms: 700}
  health_check: {interval_ms: 300, unhealthy_threshold: 5}
  retries: {max_attempts: 3, retry_on: [http_5xx]}
  load_balancer: {policy: random}
models:
  a:
    backends: [{name: a0, url: "http://127.0.0.1:1"}]
    timeouts: {idle_timeout_ms: 900}
    health_check: {path: /health}
  b:
    backends: [{name: b0, url: "http://127.0.0.1:2/prefix/"}]
    load_balancer: {policy: round_robin}
    retries: {max_attempts: 1}
"#,
    )
    .unwrap();
    let a = &c.models[0];
    assert_eq!(a.timeouts.first_byte, Duration::from_millis(5000));
    assert_eq!(a.timeouts.idle, Duration::from_millis(900));
    assert_eq!(a.health.path, "/health");
    assert_eq!(a.health.interval, Duration::from_millis(300));
    assert_eq!(a.health.unhealthy_threshold, 5);
    assert_eq!(a.policy, Policy::Random);
    assert_eq!(a.retries.max_attempts, 3);
    assert!(a.retries.on_http_5xx && !a.retries.on_connection_failure);
    let b = &c.models[1];
    assert_eq!(b.policy, Policy::RoundRobin);
    assert_eq!(b.retries.max_attempts, 1);
    assert_eq!(b.backends[0].path_prefix, "/prefix");
    assert_eq!(
        c.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn unknown_policy_names_path_and_choices() {
    let yaml = SEED.replace("\"round_robin\"", "\"rr\"");
    assert_eq!(
        issues(&yaml),
        ["models.mistral-7b.load_balancer.policy: unknown policy \"rr\"; expected one of round_robin, random, least_connections, least_outstanding, power_of_two, load_aware, consistent_hash, cache_aware"]
    );
}

#[test]
fn rejected_configs_name_their_path() {
    let cases: &[(&str, &str)] = &[
        ("models: {m: {backends: []}}", "models.m.backends: empty pool"),
        ("models: {m: {}}", "models.m.backends: missing"),
        ("models: {}", "models: no models configured"),
        ("listen: \"nope\"\nmodels: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}]}}", "listen: invalid address"),
        ("models: {m: {backends: [{name: a, url: \"ftp://x\"}]}}", "models.m.backends[0].url: unsupported scheme"),
        ("models: {m: {backends: [{name: a, url: \"not a url\"}]}}", "models.m.backends[0].url: invalid URL"),
        ("models: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}, {name: a, url: \"http://127.0.0.1:2\"}]}}", "models.m.backends[1].name: duplicate backend name \"a\""),
        ("models: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}, {name: b, url: \"http://127.0.0.1:1\"}]}}", "models.m.backends[1].url:"),
        ("models: {m: {backends: [{url: \"http://127.0.0.1:1\"}]}}", "models.m.backends[0].name: missing"),
        ("models: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}], retries: {max_attempts: 0}}}", "models.m.retries.max_attempts: 0 is out of range"),
        ("models: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}], retries: {retry_on: [sometimes]}}}", "models.m.retries.retry_on[0]: unknown retry condition \"sometimes\""),
        ("models: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}], timeouts: {idle_timeout_ms: 0}}}", "models.m.timeouts.idle_timeout_ms: must be at least 1 ms"),
        ("models: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}], health_check: {path: \"v1/models\"}}}", "models.m.health_check.path:"),
        ("models: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\", weight: 0}]}}", "models.m.backends[0].weight: must be at least 1"),
        ("admin: {listen: \"0.0.0.0:8000\"}\nmodels: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}]}}", "admin.listen: must differ from listen"),
        ("defaults: {load_balancer: {policy: fastest}}\nmodels: {m: {backends: [{name: a, url: \"http://127.0.0.1:1\"}]}}", "defaults.load_balancer.policy: unknown policy"),
    ];
    for (yaml, want) in cases {
        let got = issues(yaml);
        assert!(
            got.iter().any(|i| i.starts_with(want)),
            "{yaml}\n  want an issue starting with {want:?}\n  got {got:?}"
        );
    }
}

#[test]
fn all_issues_are_collected_in_file_order() {
    let got = issues(
        "models:\n  a: {backends: []}\n  b: {backends: [{name: x, url: \"http://127.0.0.1:1\"}], load_balancer: {policy: rr}}\n",
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("models.a.backends"));
    assert!(got[1].starts_with("models.b.load_balancer.policy"));
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let yaml = SEED.replace("policy: \"round_robin\"", "polcy: \"round_robin\"");
    let err = parse(yaml.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("models.mistral-7b.load_balancer"), "{err}");
    assert!(err.contains("unknown field `polcy`"), "{err}");
    let err = parse(b"listen: \"0.0.0.0:8000\"\nlissen: x\nmodels: {}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `lissen`"), "{err}");
}

const ONE_MODEL: &str =
    "models:\n  m:\n    backends: [{name: a, url: \"http://127.0.0.1:8001\"}]\n";

#[test]
fn server_and_drain_blocks_have_documented_defaults() {
    let c = parse(ONE_MODEL.as_bytes()).unwrap();
    assert_eq!(c.server.threads, None);
    assert_eq!(
        c.server.grace_period,
        Duration::from_secs(DEFAULT_GRACE_PERIOD_S)
    );
    assert_eq!(c.server.pid_file, None);
    assert_eq!(c.server.upgrade_sock, None);
    assert_eq!(c.drain.delay, Duration::from_millis(DEFAULT_DRAIN_DELAY_MS));
    assert_eq!(
        c.drain.timeout,
        Duration::from_millis(DEFAULT_DRAIN_TIMEOUT_MS)
    );
    assert!(!c.models[0].backends[0].drain);
}

#[test]
fn server_drain_and_backend_drain_are_read() {
    let yaml = format!(
        "server:\n  threads: 3\n  grace_period_s: 42\n  pid_file: /run/x/m.pid\n  upgrade_sock: /run/x/u.sock\ndrain: {{delay_ms: 0, timeout_ms: 1500}}\n{}",
        ONE_MODEL.replace("}]", ", drain: true}]")
    );
    let c = parse(yaml.as_bytes()).unwrap();
    assert_eq!(c.server.threads, Some(3));
    assert_eq!(c.server.grace_period, Duration::from_secs(42));
    assert_eq!(
        c.server.pid_file.as_deref(),
        Some(std::path::Path::new("/run/x/m.pid"))
    );
    assert_eq!(
        c.server.upgrade_sock.as_deref(),
        Some(std::path::Path::new("/run/x/u.sock"))
    );
    assert_eq!(c.drain.delay, Duration::ZERO);
    assert_eq!(c.drain.timeout, Duration::from_millis(1500));
    assert!(c.models[0].backends[0].drain);
}

#[test]
fn bad_server_values_name_their_path() {
    let long = format!("/{}", "s".repeat(MAX_SOCKET_PATH + 1));
    let yaml = format!(
        "server:\n  threads: 5000\n  grace_period_s: 0\n  pid_file: \"\"\n  upgrade_sock: \"{long}\"\n{ONE_MODEL}"
    );
    let got = issues(&yaml);
    for path in [
        "server.threads:",
        "server.grace_period_s:",
        "server.pid_file:",
        "server.upgrade_sock:",
    ] {
        assert!(got.iter().any(|i| i.starts_with(path)), "{path} in {got:?}");
    }
    let typo = issues(&format!("drain: {{delay: 5}}\n{ONE_MODEL}"));
    assert!(typo.iter().any(|i| i.contains("delay")), "{typo:?}");
}

#[test]
fn traffic_policy_keys_are_read_and_checked() {
    let yaml = r#"
aliases: {gpt-4o-mini: m}
default_model: m
models:
  m:
    served_model_name: m-instruct
    max_queue: 10
    queue_timeout_ms: 250
    load_balancer: {policy: consistent_hash, hash_on: "header:X-User", bounded_load: 1.5}
    canary: {model: m2, percent: 5, sticky_on: body:user}
    shadow: {model: m2, percent: 10}
    backends: [{name: a, url: "http://127.0.0.1:8001", max_in_flight: 8}]
  m2:
    backends: [{name: b, url: "http://127.0.0.1:8002"}]
"#;
    let c = parse(yaml.as_bytes()).unwrap();
    let m = &c.models[0];
    assert_eq!(
        c.aliases,
        vec![("gpt-4o-mini".to_string(), "m".to_string())]
    );
    assert_eq!(c.default_model.as_deref(), Some("m"));
    assert_eq!(m.served_model_name.as_deref(), Some("m-instruct"));
    assert_eq!(
        (m.max_queue, m.queue_timeout),
        (10, Duration::from_millis(250))
    );
    assert_eq!(m.lb.hash_on, Some(KeySource::Header("x-user".into())));
    assert_eq!(m.lb.bounded_load, 1.5);
    assert_eq!(
        m.canary.as_ref().unwrap().sticky_on,
        Some(KeySource::BodyUser)
    );
    assert_eq!(m.shadow.as_ref().unwrap().percent, 10.0);
    assert_eq!(m.backends[0].max_in_flight, Some(8));

    let bad = yaml
        .replace("gpt-4o-mini: m}", "gpt-4o-mini: nope, m2: m}")
        .replace("default_model: m", "default_model: zz")
        .replace("hash_on: \"header:X-User\", ", "")
        .replace(
            "percent: 5, sticky_on: body:user",
            "percent: 500, sticky_on: cookie",
        )
        .replace("max_in_flight: 8", "max_in_flight: 0");
    let got = issues(&bad);
    for path in [
        "aliases.gpt-4o-mini:",
        "aliases.m2:",
        "default_model:",
        "models.m.load_balancer.hash_on:",
        "models.m.canary.percent:",
        "models.m.canary.sticky_on:",
        "models.m.backends[0].max_in_flight:",
    ] {
        assert!(
            got.iter().any(|i| i.starts_with(path)),
            "{path} in {got:#?}"
        );
    }
    let own = issues(&yaml.replace("shadow: {model: m2", "shadow: {model: m"));
    assert!(
        own.iter()
            .any(|i| i.starts_with("models.m.shadow.model: must be another model")),
        "{own:?}"
    );
    let unknown = issues(&yaml.replace("canary: {model: m2", "canary: {model: m3"));
    assert!(
        unknown
            .iter()
            .any(|i| i.starts_with("models.m.canary.model:")),
        "{unknown:?}"
    );
}

#[test]
fn admin_off_loopback_needs_allow_remote_and_a_token() {
    let base = "models:\n  m:\n    backends: [{name: a, url: \"http://127.0.0.1:8001\"}]\n";
    let remote = format!("admin: {{listen: \"10.0.0.5:9000\"}}\n{base}");
    assert!(issues(&remote)
        .iter()
        .any(|i| i.starts_with("admin.listen:") && i.contains("allow_remote")));
    let no_token = format!("admin: {{listen: \"10.0.0.5:9000\", allow_remote: true}}\n{base}");
    assert!(issues(&no_token)
        .iter()
        .any(|i| i.starts_with("admin.token:")));
    let short =
        format!("admin: {{listen: \"10.0.0.5:9000\", allow_remote: true, token: short}}\n{base}");
    assert!(issues(&short).iter().any(|i| i.starts_with("admin.token:")));
    let ok = format!("admin: {{listen: \"10.0.0.5:9000\", allow_remote: true, token: 0123456789abcdef0123}}\n{base}");
    let c = parse(ok.as_bytes()).unwrap();
    assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef0123"));
    assert_eq!(c.server_header.as_deref(), Some("modelgate"));
    let none = parse(format!("server_header: \"\"\n{base}").as_bytes()).unwrap();
    assert_eq!(none.server_header, None);
}

#[test]
fn limits_have_defaults_and_reject_zero() {
    let base = "models:\n  m:\n    backends: [{name: a, url: \"http://127.0.0.1:8001\"}]\n";
    let c = parse(base.as_bytes()).unwrap();
    assert_eq!(
        c.limits.body_timeout,
        Duration::from_millis(DEFAULT_BODY_TIMEOUT_MS)
    );
    assert_eq!(
        c.limits.client_write_timeout,
        Duration::from_millis(DEFAULT_CLIENT_WRITE_TIMEOUT_MS)
    );
    let zero = format!("limits: {{client_write_timeout_ms: 0}}\n{base}");
    assert!(issues(&zero)
        .iter()
        .any(|i| i.starts_with("limits.client_write_timeout_ms:")));
    assert_eq!(c.limits.max_header_bytes as u64, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(c.limits.max_headers as u64, DEFAULT_MAX_HEADERS);
    assert_eq!(
        c.limits.header_timeout,
        Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS)
    );
    assert_eq!(
        c.limits.idle_timeout,
        Duration::from_millis(DEFAULT_CLIENT_IDLE_TIMEOUT_MS)
    );
    assert_eq!(c.limits.max_connections_per_ip, None);
    let set = parse(
        format!("limits: {{max_header_bytes: 16384, max_headers: 50, header_timeout_ms: 5000, idle_timeout_ms: 30000, max_connections_per_ip: 64}}\n{base}")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(set.limits.max_header_bytes, 16384);
    assert_eq!(set.limits.max_headers, 50);
    assert_eq!(set.limits.header_timeout, Duration::from_secs(5));
    assert_eq!(set.limits.idle_timeout, Duration::from_secs(30));
    assert_eq!(set.limits.max_connections_per_ip, Some(64));
    // Beyond what Pingora itself parses, or too small to be useful: rejected with the path.
    for (bad, path) in [
        ("max_header_bytes: 2000000", "limits.max_header_bytes:"),
        ("max_header_bytes: 100", "limits.max_header_bytes:"),
        ("max_headers: 300", "limits.max_headers:"),
        (
            "max_connections_per_ip: 0",
            "limits.max_connections_per_ip:",
        ),
        ("header_timeout_ms: 0", "limits.header_timeout_ms:"),
    ] {
        let yaml = format!("limits: {{{bad}}}\n{base}");
        assert!(
            issues(&yaml).iter().any(|i| i.starts_with(path)),
            "{bad}: {:?}",
            issues(&yaml)
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes: a config or an error, never a panic. (Inputs naming URLs are skipped: a
        /// backend host name would be resolved, which a unit test must not do.)
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assume!(!bytes.windows(4).any(|w| w.eq_ignore_ascii_case(b"http")));
            let _ = parse(&bytes);
        }

        /// Mutations of the seed config (one byte replaced outside the backend URLs, whose host
        /// names would be resolved) never panic.
        #[test]
        fn mutated_seed_never_panics(at in 0usize..SEED.len(), byte in any::<u8>()) {
            let in_url = SEED.match_indices("http://").any(|(start, _)| {
                let end = SEED[start..].find('"').map_or(SEED.len(), |e| start + e);
                (start..end).contains(&at)
            });
            prop_assume!(!in_url && byte != b'h');
            let mut b = SEED.as_bytes().to_vec();
            b[at] = byte;
            let _ = parse(&b);
        }
    }
}

#[test]
fn cache_aware_options_have_defaults_and_ranges() {
    let m = |lb: &str| {
        format!("models:\n  m:\n    load_balancer: {{policy: cache_aware{lb}}}\n    backends: [{{name: a, url: \"http://127.0.0.1:8001\"}}]\n")
    };
    let c = parse(m("").as_bytes()).unwrap();
    assert_eq!(c.models[0].policy, Policy::CacheAware);
    assert_eq!(c.models[0].lb.cache, CacheAwareOptions::default());
    let c = parse(
        m(", prefix_block_bytes: 64, prefix_max_bytes: 4096, cache_miss_cost: 1.5, kv_cache_tokens: 100000, learn_kv_cache: false").as_bytes(),
    )
    .unwrap();
    assert_eq!(
        c.models[0].lb.cache,
        CacheAwareOptions {
            block_bytes: 64,
            max_bytes: 4096,
            miss_cost: 1.5,
            kv_cache_tokens: Some(100_000),
            learn_kv_cache: false,
        }
    );
    assert_eq!(
        issues(&m(", prefix_block_bytes: 8, prefix_max_bytes: 4, cache_miss_cost: -1, kv_cache_tokens: 0")),
        [
            "models.m.load_balancer.prefix_block_bytes: must be between 16 and 4096",
            "models.m.load_balancer.prefix_max_bytes: must be between 16 and 1048576",
            "models.m.load_balancer.cache_miss_cost: -1 is out of range (0 to 100; 8 = a prefill token counts eight times a queued one)",
            "models.m.load_balancer.kv_cache_tokens: must be at least 1 (omit it to read vLLM's cache_config_info)",
        ]
    );
}

#[test]
fn disaggregated_models_have_two_sides_with_their_own_policies() {
    let lists = "models:\n  m:\n    prefill:\n      - {name: p0, url: \"http://127.0.0.1:8100\"}\n    decode:\n      - {name: d0, url: \"http://127.0.0.1:8200\", weight: 2}\n";
    let c = parse(lists.as_bytes()).unwrap();
    let m = &c.models[0];
    assert_eq!(
        (m.policy, m.backends[0].name.as_str(), m.backends[0].weight),
        (Policy::LoadAware, "d0", 2)
    );
    let side = m.prefill.as_ref().unwrap();
    assert_eq!(
        (side.policy, side.backends[0].name.as_str()),
        (Policy::CacheAware, "p0")
    );
    let blocks = "models:\n  m:\n    load_balancer: {policy: least_connections}\n    prefill:\n      load_balancer: {policy: round_robin}\n      backends:\n        - {name: p0, url: \"http://127.0.0.1:8100\"}\n    decode:\n      backends:\n        - {name: d0, url: \"http://127.0.0.1:8200\"}\n";
    let c = parse(blocks.as_bytes()).unwrap();
    let m = &c.models[0];
    // The side's own load_balancer wins; the model's applies to a side without one.
    assert_eq!(m.prefill.as_ref().unwrap().policy, Policy::RoundRobin);
    assert_eq!(m.policy, Policy::LeastConnections);
    let pool = m.pool_config();
    let side_pool = pool.prefill.as_deref().unwrap();
    assert_eq!(side_pool.backends[0].name, "p0");
    assert_eq!(side_pool.policy, Policy::RoundRobin);
    assert!(side_pool.prefill.is_none() && side_pool.canary.is_none());
    assert_eq!(pool.backends[0].name, "d0");
}

#[test]
fn disaggregated_models_are_checked() {
    let p = "      - {name: p0, url: \"http://127.0.0.1:8100\"}\n";
    let d = "      - {name: d0, url: \"http://127.0.0.1:8200\"}\n";
    let cases = [
        (
            format!("models:\n  m:\n    backends:\n{d}    prefill:\n{p}    decode:\n{d}"),
            "models.m.backends: a model has either backends, or prefill and decode (disaggregated serving), not both",
        ),
        (
            format!("models:\n  m:\n    prefill:\n{p}"),
            "models.m.decode: missing; list at least one backend (name + url)",
        ),
        (
            format!("models:\n  m:\n    decode:\n{d}"),
            "models.m.prefill: missing; a disaggregated model lists prefill backends and decode backends",
        ),
        (
            format!("models:\n  m:\n    prefill:\n{p}    decode:\n{}", p.replace("8100", "8300")),
            "models.m.prefill[0].name: duplicate backend name \"p0\"; names identify backends in logs and headers and must be unique within a model",
        ),
        (
            format!("models:\n  m:\n    prefill:\n{p}    decode:\n{d}    canary: {{model: n, percent: 5}}\n  n:\n    backends:\n{}", d.replace("8200", "8400")),
            "models.m: canary and shadow are not supported on a disaggregated (prefill/decode) model",
        ),
        (
            format!("models:\n  m:\n    prefill:\n      load_balancer: {{policy: fastest}}\n      backends:\n{p}    decode:\n{d}"),
            "models.m.prefill.load_balancer.policy: unknown policy \"fastest\"; expected one of round_robin, random, least_connections, least_outstanding, power_of_two, load_aware, consistent_hash, cache_aware",
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(issues(&yaml), [want], "{yaml}");
    }
}
