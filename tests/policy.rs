//! Traffic policy over real sockets: the policy receipt header, least-connections under long
//! streams, sticky hashing that two gateway processes agree on, aliases and served names
//! (body spliced byte-exact), canary share, shadow copies, backpressure with a flood, the
//! default model, and `cache_aware` placing new prefixes round the fleet, keeping them home and
//! learning its backends' cache size.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;

const CHAT: &str = "/v1/chat/completions";

/// Mocks b0, b1, b2 serving `m`, and their `backends:` entries.
async fn three_backends() -> (Vec<MockServer>, Vec<String>) {
    let mut mocks = Vec::new();
    for name in ["b0", "b1", "b2"] {
        mocks.push(mock(name, "m").await);
    }
    let all = ["b0", "b1", "b2"]
        .iter()
        .zip(&mocks)
        .map(|(n, m)| backend(n, m))
        .collect();
    (mocks, all)
}

fn lb(policy: &str, more: &str) -> String {
    format!("    load_balancer: {{policy: {policy}{more}}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_names_itself_in_the_receipt() {
    let a = mock("a0", "m").await;
    let b = mock("b0", "m").await;
    for (policy, more) in [
        ("round_robin", ""),
        ("random", ""),
        ("least_connections", ""),
        ("least_outstanding", ""),
        ("power_of_two", ""),
        ("load_aware", ""),
        ("consistent_hash", ", hash_on: \"header:x-user\""),
        ("cache_aware", ""),
    ] {
        let gw = Gateway::start_ready(
            &model_block(
                "m",
                &[backend("a0", &a), backend("b0", &b)],
                &lb(policy, more),
            ),
            "",
        )
        .await;
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200, "{policy}");
        let want = if policy == "least_outstanding" {
            "least_connections"
        } else {
            policy
        };
        assert_eq!(r.headers()["x-modelgate-policy"], want);
        assert_eq!(r.headers()["x-modelgate-model"], "m");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_backend_busy_with_streams() {
    let slow = |c: &mut MockConfig| {
        c.tokens = 60;
        c.itl = Duration::from_millis(20);
    };
    let a = mock_with("a0", "m", slow).await;
    let b = mock("b0", "m").await;
    let drained_b0 = format!(
        "      - name: \"b0\"\n        url: \"{}\"\n        drain: true\n",
        b.url()
    );
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("a0", &a), drained_b0],
            &lb("least_connections", ""),
        ),
        "",
    )
    .await;
    // Pin 3 long streams on a0 while b0 is drained, then bring b0 back.
    let c = client();
    let url = gw.url(CHAT);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let (c, u) = (c.clone(), url.clone());
        streams.push(tokio::spawn(async move { full_stream(&c, &u, "m").await }));
    }
    let sa = a.stats();
    eventually(Duration::from_secs(10), "3 streams on a0", || {
        let n = sa.in_flight();
        async move { n == 3 }
    })
    .await;
    gw.write_config(
        &model_block(
            "m",
            &[backend("a0", &a), backend("b0", &b)],
            &lb("least_connections", ""),
        ),
        "",
    );
    gw.wait_generation(2).await;
    let before = sa.requests();
    for _ in 0..20 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.headers()["x-modelgate-backend"], "b0");
    }
    assert_eq!(sa.requests(), before);
    for s in streams {
        s.await.unwrap().unwrap();
    }
}

async fn sticky_choices(gw: &Gateway, users: &[String]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for u in users {
        let r = client()
            .post(gw.url(CHAT))
            .header("x-user", u)
            .body(chat_body("m", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        out.insert(
            u.clone(),
            r.headers()["x-modelgate-backend"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_choices_agree_across_replicas_and_survive_a_removal() {
    let (_mocks, all) = three_backends().await;
    let models = model_block(
        "m",
        &all,
        &lb("consistent_hash", ", hash_on: \"header:x-user\""),
    );
    let one = Gateway::start_ready(&models, "").await;
    let two = Gateway::start_ready(&models, "").await;
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let first = sticky_choices(&one, &users).await;
    assert_eq!(
        first,
        sticky_choices(&two, &users).await,
        "replicas disagree"
    );
    assert_eq!(first, sticky_choices(&one, &users).await, "not stable");
    let used: std::collections::HashSet<&String> = first.values().collect();
    assert_eq!(
        used.len(),
        3,
        "60 keys should reach all 3 backends: {first:?}"
    );
    // Remove b1 by reload: only b1's users move.
    one.write_config(
        &model_block(
            "m",
            &[all[0].clone(), all[2].clone()],
            &lb("consistent_hash", ", hash_on: \"header:x-user\""),
        ),
        "",
    );
    one.wait_generation(2).await;
    let after = sticky_choices(&one, &users).await;
    for u in &users {
        if first[u] != "b1" {
            assert_eq!(after[u], first[u], "{u} moved although its backend stayed");
        } else {
            assert_ne!(after[u], "b1");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_and_served_names_splice_only_the_model_value() {
    // The backend serves the model under another id; clients use the configured name or an alias.
    let a = mock("a0", "mistral-7b-instruct-v0.3").await;
    let gw = Gateway::start_ready(
        &model_block(
            "mistral-7b",
            &[backend("a0", &a)],
            "    served_model_name: \"mistral-7b-instruct-v0.3\"\n",
        ),
        "aliases:\n  gpt-4o-mini: mistral-7b\n",
    )
    .await;
    for name in ["mistral-7b", "gpt-4o-mini"] {
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"keep \"model\": this"}}], "model" : "{name}","max_tokens":3}}"#
        );
        let r = client()
            .post(gw.url(CHAT))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let sent = body.replace(&format!("\"{name}\""), "\"mistral-7b-instruct-v0.3\"");
        assert_eq!(
            a.stats().last_body_sha256().unwrap(),
            sha256_hex(sent.as_bytes()),
            "{name}: body changed beyond the model value"
        );
        assert_eq!(a.stats().last_body_len(), sent.len());
    }
    // Chunked upload too (no Content-Length to fix).
    let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(body.as_bytes()[..10].to_vec()),
        Ok(body.as_bytes()[10..].to_vec()),
    ]);
    let r = client()
        .post(gw.url(CHAT))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        a.stats().last_body_sha256().unwrap(),
        sha256_hex(
            body.replace("gpt-4o-mini", "mistral-7b-instruct-v0.3")
                .as_bytes()
        )
    );
    // /v1/models lists the alias.
    let list: serde_json::Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mistral-7b", "gpt-4o-mini"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_takes_its_share_and_sticky_users_stay_on_one_side() {
    let stable = mock("s0", "m").await;
    let canary = mock("c0", "m-v2").await;
    let models = format!(
        "{}{}",
        model_block(
            "m",
            &[backend("s0", &stable)],
            "    canary: {model: m-v2, percent: 20}\n"
        ),
        model_block("m-v2", &[backend("c0", &canary)], "")
    );
    let gw = Gateway::start_ready(&models, "").await;
    let n = 1000;
    let mut to_canary = 0;
    for _ in 0..n {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        if r.headers()["x-modelgate-model"] == "m-v2" {
            to_canary += 1;
        }
    }
    let share = to_canary as f64 * 100.0 / n as f64;
    assert!((15.0..=25.0).contains(&share), "canary got {share}%");
    // The canary's backend saw its own model name.
    assert_eq!(canary.stats().requests(), to_canary);

    // Sticky: with sticky_on, one user always lands on the same side.
    let models = format!(
        "{}{}",
        model_block(
            "m",
            &[backend("s0", &stable)],
            "    canary: {model: m-v2, percent: 50, sticky_on: \"header:x-user-id\"}\n"
        ),
        model_block("m-v2", &[backend("c0", &canary)], "")
    );
    gw.write_config(&models, "");
    gw.wait_generation(2).await;
    let mut sides = std::collections::HashSet::new();
    for u in 0..20 {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let r = client()
                .post(gw.url(CHAT))
                .header("x-user-id", format!("u{u}"))
                .body(chat_body("m", false))
                .send()
                .await
                .unwrap();
            seen.insert(
                r.headers()["x-modelgate-model"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(seen.len(), 1, "user u{u} flipped sides");
        sides.extend(seen);
    }
    assert_eq!(sides.len(), 2, "20 users at 50 % should use both sides");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_copies_never_delay_the_client_and_are_capped() {
    let primary = mock("p0", "m").await;
    // The shadow backend hangs: copies must not slow the client down or pile up.
    let shadow = mock_with("h0", "m-shadow", |c| c.fail = FailMode::Hang).await;
    let models = format!(
        "{}{}",
        model_block(
            "m",
            &[backend("p0", &primary)],
            "    shadow: {model: m-shadow, percent: 100, max_concurrency: 3}\n"
        ),
        model_block(
            "m-shadow",
            &[backend("h0", &shadow)],
            "    timeouts: {request_timeout_ms: 60000}\n"
        )
    );
    let gw = Gateway::start_ready(&models, "").await;
    let started = Instant::now();
    for _ in 0..10 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "p0");
    }
    let elapsed = started.elapsed();
    let hs = shadow.stats();
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "3 shadow copies at the shadow backend",
        || {
            let n = hs.in_flight();
            async move { n == 3 }
        },
    )
    .await;
    assert!(
        shadow.stats().requests() <= 3,
        "cap exceeded: {}",
        shadow.stats().requests()
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "client requests took {elapsed:?}"
    );
    let m = gw_ref.metrics().await;
    assert_eq!(
        sum(
            &m,
            "modelgate_shadow_requests_total",
            &[("model", "m-shadow"), ("result", "skipped")]
        ),
        7.0
    );
    // The copy carried the shadow's model name and the same body otherwise.
    let body = chat_body("m", false).replace("\"m\"", "\"m-shadow\"");
    assert_eq!(
        shadow.stats().last_body_sha256().unwrap(),
        sha256_hex(body.as_bytes())
    );
    assert_eq!(
        shadow.stats().last_header("x-modelgate-shadow").as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_queues_or_sheds_and_never_exceeds_max_in_flight() {
    let slow = |c: &mut MockConfig| c.ttft = Duration::from_millis(40);
    let a = mock_with("a0", "m", slow).await;
    let b = mock_with("b0", "m", slow).await;
    let limited = |n: &str, m: &MockServer| {
        format!(
            "      - name: \"{n}\"\n        url: \"{}\"\n        max_in_flight: 8\n",
            m.url()
        )
    };
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[limited("a0", &a), limited("b0", &b)],
            "    max_queue: 50\n    queue_timeout_ms: 200\n",
        ),
        "",
    )
    .await;
    a.stats().reset_peak();
    b.stats().reset_peak();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let c = c.clone();
        let u = gw.url(CHAT);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c.post(&u).body(chat_body("m", false)).send().await.unwrap();
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, retry_after, body, t.elapsed())
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        let (status, retry_after, body, _took) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                shed += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + shed, 500);
    assert!(ok >= 16, "only {ok} served");
    assert!(
        shed > 0,
        "500 at once against 16 slots + 50 queued must shed some"
    );
    assert!(
        a.stats().peak_in_flight() <= 8,
        "a0 peak {}",
        a.stats().peak_in_flight()
    );
    assert!(
        b.stats().peak_in_flight() <= 8,
        "b0 peak {}",
        b.stats().peak_in_flight()
    );
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "queue and in-flight back to 0",
        || async move {
            gw_ref
                .metric("modelgate_queued_requests", &[("model", "m")])
                .await
                == 0.0
                && gw_ref
                    .metric("modelgate_in_flight_requests", &[("model", "m")])
                    .await
                    == 0.0
        },
    )
    .await;
    assert!(
        gw.metric(
            "modelgate_gateway_errors_total",
            &[("model", "m"), ("status", "429")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_model_goes_to_the_default_model() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a)], ""),
        "default_model: m\n",
    )
    .await;
    let r = client()
        .post(gw.url(CHAT))
        .body(r#"{"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-modelgate-model"], "m");
}

/// A gateway serving model `m` from these named mocks under `load_aware`, reading their
/// `/metrics` every 100 ms.
async fn load_aware_over(mocks: &[(&str, &MockServer)]) -> Gateway {
    let backends: Vec<String> = mocks.iter().map(|(name, m)| backend(name, m)).collect();
    let lb = lb("load_aware", ", load_poll_ms: 100");
    Gateway::start_ready(&model_block("m", &backends, &lb), "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_aware_follows_what_vllm_reports() {
    let a = mock("a0", "m").await;
    let b = mock("b0", "m").await;
    let busy = MockLoad {
        running: 40,
        waiting: 12,
        kv_cache_usage: 0.97,
    };
    let idle = MockLoad {
        running: 1,
        waiting: 0,
        kv_cache_usage: 0.1,
    };
    a.set_load(Some(busy));
    b.set_load(Some(idle));
    let gw = load_aware_over(&[("a0", &a), ("b0", &b)]).await;
    let (sa, sb) = (a.stats(), b.stats());
    let polled = |n: u64| {
        let (sa, sb) = (sa.clone(), sb.clone());
        move || {
            let ok = sa.metrics_requests() >= n && sb.metrics_requests() >= n;
            async move { ok }
        }
    };
    eventually(Duration::from_secs(5), "both backends scraped", polled(2)).await;
    for _ in 0..20 {
        assert_eq!(
            gw.chat("m", false).await.headers()["x-modelgate-backend"],
            "b0"
        );
    }
    // The load flips: after the next scrapes, traffic follows.
    a.set_load(Some(idle));
    b.set_load(Some(busy));
    let n = sa.metrics_requests() + 2;
    eventually(Duration::from_secs(5), "scraped again", polled(n)).await;
    for _ in 0..20 {
        assert_eq!(
            gw.chat("m", false).await.headers()["x-modelgate-backend"],
            "a0"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_aware_prefers_the_backend_that_answers_faster_at_the_same_load() {
    let slow = mock_with("slow", "m", |c| c.ttft = Duration::from_millis(300)).await;
    let fast = mock_with("fast", "m", |c| c.ttft = Duration::from_millis(10)).await;
    // Both report their real load: what this gateway has in flight there, nothing else.
    let gw = load_aware_over(&[("slow", &slow), ("fast", &fast)]).await;
    let (ss, sf) = (slow.stats(), fast.stats());
    let scraped = move || {
        let ok = ss.metrics_requests() >= 2 && sf.metrics_requests() >= 2;
        async move { ok }
    };
    eventually(Duration::from_secs(5), "both backends scraped", scraped).await;
    // Until both have answered a stream, a backend without a time to first token counts as
    // fast as the fastest: the picks tie and go either way.
    let mut served = std::collections::HashSet::new();
    for _ in 0..40 {
        let r = gw.chat("m", true).await;
        let name = r.headers()["x-modelgate-backend"]
            .to_str()
            .unwrap()
            .to_string();
        read_body(r).await.unwrap();
        served.insert(name);
        if served.len() == 2 {
            break;
        }
    }
    assert_eq!(served.len(), 2, "{served:?}");
    for _ in 0..20 {
        let r = gw.chat("m", true).await;
        assert_eq!(r.headers()["x-modelgate-backend"], "fast");
        read_body(r).await.unwrap();
    }
    let status = gw.status().await;
    let backends = status["models"]["m"]["backends"]
        .as_array()
        .unwrap()
        .clone();
    let ttfb = |name: &str| {
        let b = backends.iter().find(|b| b["name"] == name).unwrap();
        b["ttfb_ms"].as_f64().unwrap()
    };
    assert!(ttfb("slow") >= 300.0, "{backends:?}");
    assert!(ttfb("fast") < 300.0, "{backends:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_keys_stick_user_and_prompt_prefix_to_one_backend() {
    let (_mocks, all) = three_backends().await;
    for hash_on in ["body:user", "prompt_prefix"] {
        let gw = Gateway::start_ready(
            &model_block(
                "m",
                &all,
                &lb(
                    "consistent_hash",
                    &format!(", hash_on: \"{hash_on}\", prompt_prefix_bytes: 32"),
                ),
            ),
            "",
        )
        .await;
        let mut backends = std::collections::HashSet::new();
        for i in 0..30 {
            // Same user / same first 32 bytes of the first message; the rest varies.
            let body = format!(
                r#"{{"messages":[{{"role":"system","content":"You are a helpful assistant for team {}. Turn {i}."}},{{"role":"user","content":"q{i}"}}],"user":"team-{}","model":"m"}}"#,
                i % 3,
                i % 3
            );
            let r = client().post(gw.url(CHAT)).body(body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            backends.insert((
                i % 3,
                r.headers()["x-modelgate-backend"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            ));
        }
        // Each of the 3 keys maps to exactly one backend.
        assert_eq!(backends.len(), 3, "{hash_on}: {backends:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_audio_routes_by_its_model_field_byte_exact() {
    let a = mock("a0", "whisper").await;
    let b = mock("b0", "m").await;
    let gw = Gateway::start_ready(
        &format!(
            "{}{}",
            model_block("whisper", &[backend("a0", &a)], ""),
            model_block("m", &[backend("b0", &b)], "")
        ),
        "",
    )
    .await;
    let audio: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let boundary = "----modelgateTestBoundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes());
    body.extend_from_slice(&audio);
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--{boundary}--\r\n").as_bytes());
    let r = client()
        .post(gw.url("/v1/audio/transcriptions"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-modelgate-model"], "whisper");
    assert_eq!(a.stats().last_body_sha256().unwrap(), sha256_hex(&body));
    assert_eq!(
        a.stats().last_path().as_deref(),
        Some("/v1/audio/transcriptions")
    );
    assert_eq!(b.stats().requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_in_the_path_routes_a_body_without_model() {
    let a = mock("a0", "m").await;
    let b = mock("b0", "other").await;
    let gw = Gateway::start_ready(
        &format!(
            "{}{}",
            model_block("m", &[backend("a0", &a)], ""),
            model_block("other", &[backend("b0", &b)], "")
        ),
        "default_model: m\n",
    )
    .await;
    let r = client()
        .post(gw.url("/v1/engines/other/completions"))
        .body(r#"{"prompt":"hi","max_tokens":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-modelgate-model"], "other");
    assert_eq!(
        b.stats().last_path().as_deref(),
        Some("/v1/engines/other/completions")
    );
    // The body's model wins over the path.
    let r = client()
        .post(gw.url("/v1/engines/other/completions"))
        .body(r#"{"model":"m","prompt":"hi","max_tokens":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-modelgate-model"], "m");
    // No model anywhere: the default.
    let r = client()
        .post(gw.url("/v1/completions"))
        .body(r#"{"prompt":"hi","max_tokens":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-modelgate-model"], "m");
}

/// A chat body whose first message is `group`'s 4 KiB system prompt, then a question.
fn shared_prefix_body(group: usize, question: usize, stream: bool) -> String {
    let system = format!("You are the assistant of team {group}. ").repeat(128);
    format!(
        r#"{{"model":"m","stream":{stream},"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"question {question}"}}],"max_tokens":2}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_aware_keeps_a_shared_prefix_on_one_backend_and_says_why() {
    let (_mocks, all) = three_backends().await;
    let gw = Gateway::start_ready(&model_block("m", &all, &lb("cache_aware", "")), "").await;
    let mut homes: HashMap<usize, std::collections::HashSet<String>> = HashMap::new();
    for i in 0..36 {
        let group = i % 6;
        let r = client()
            .post(gw.url(CHAT))
            .body(shared_prefix_body(group, i, i % 2 == 0))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let backend = r.headers()["x-modelgate-backend"]
            .to_str()
            .unwrap()
            .to_string();
        read_body(r).await.unwrap();
        homes.entry(group).or_default().insert(backend);
    }
    // Sequential requests never queue: each group stays on the backend of its first request.
    assert!(homes.values().all(|b| b.len() == 1), "{homes:?}");
    // New prefixes went round the three backends: two groups each.
    let mut groups: HashMap<&String, usize> = HashMap::new();
    for b in homes.values().flatten() {
        *groups.entry(b).or_default() += 1;
    }
    assert_eq!(
        groups.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{homes:?}"
    );
    let status = gw.status().await;
    for b in status["models"]["m"]["backends"].as_array().unwrap() {
        assert_eq!(b["cold_picks"], 2, "{b}");
    }
    let picks = &status["models"]["m"]["cache_aware"]["picks"];
    assert_eq!(picks["cold"], 6, "{status}");
    assert_eq!(picks["hit"], 30, "{status}");
    assert_eq!(picks["spill"], 0, "{status}");
    let hits = gw
        .metric(
            "modelgate_cache_aware_picks_total",
            &[("model", "m"), ("reason", "hit")],
        )
        .await;
    assert_eq!(hits, 30.0);
    // Every request after a group's first was expected to find its system prompt cached.
    let prompt = gw
        .metric(
            "modelgate_cache_aware_prompt_tokens_total",
            &[("model", "m")],
        )
        .await;
    let matched = gw
        .metric(
            "modelgate_cache_aware_matched_tokens_total",
            &[("model", "m")],
        )
        .await;
    assert!(matched / prompt > 0.75, "{matched} of {prompt}");
    eventually(Duration::from_secs(5), "access log lines", || async {
        gw.access_log()
            .iter()
            .filter(|l| l["pick"] == "hit")
            .count()
            == 30
    })
    .await;
    let line = gw
        .access_log()
        .into_iter()
        .find(|l| l["pick"] == "hit")
        .unwrap();
    assert!(
        line["pick_cached_tokens"].as_u64().unwrap() >= 1024,
        "{line}"
    );
}

/// The `kv_cache_tokens` `/status` shows for the model's only backend (learnt, told), after
/// requests of groups 0-3 then group 0 again (one at a time) through a `cache_aware` gateway told the
/// backend caches 1,024 tokens, in front of a simulated vLLM server that caches 32,768.
async fn learnt_kv_cache_tokens(more: &str) -> (u64, u64) {
    let cfg = MockConfig {
        name: "s0".to_string(),
        models: vec!["m".to_string()],
        ..MockConfig::default()
    };
    let sim = modelgate::mock::SimConfig {
        kv_blocks: 2048,
        ..modelgate::mock::SimConfig::default()
    };
    let server = MockServer::start_sim(cfg, sim).await.unwrap();
    let lb = lb("cache_aware", &format!(", kv_cache_tokens: 1024{more}"));
    let gw = Gateway::start_ready(&model_block("m", &[backend("s0", &server)], &lb), "").await;
    for (i, group) in [0, 1, 2, 3, 0].into_iter().enumerate() {
        let r = client()
            .post(gw.url(CHAT))
            .body(shared_prefix_body(group, i, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        let cached = &body["usage"]["prompt_tokens_details"]["cached_tokens"];
        // The last request finds group 0's system prompt still cached on the server.
        assert_eq!(
            cached.as_u64().unwrap() > 1000,
            i == 4,
            "request {i}: {body}"
        );
    }
    // The lesson is taken as the request is recorded, just after its last byte.
    eventually(
        Duration::from_secs(5),
        "the last access-log line",
        || async { gw.access_log().len() == 5 },
    )
    .await;
    let status = gw.status().await;
    let backend = &status["models"]["m"]["backends"][0];
    let tokens = |key: &str| backend[key].as_u64().unwrap_or_else(|| panic!("{status}"));
    (
        tokens("kv_cache_tokens"),
        tokens("kv_cache_tokens_reported"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_aware_learns_a_kv_cache_bigger_than_it_was_told() {
    // Group 0 comes back after three other system prompts, four times what the index was told
    // the cache holds: the index takes it as evicted, the response says it was cached.
    let (learnt, told) = learnt_kv_cache_tokens("").await;
    assert_eq!(told, 1024);
    assert!(learnt > told, "learnt {learnt}");
    let (kept, _) = learnt_kv_cache_tokens(", learn_kv_cache: false").await;
    assert_eq!(kept, 1024);
}
