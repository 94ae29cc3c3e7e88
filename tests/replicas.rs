//! Replica agreement: two gateway processes with the same config, compared request by request.
//! Sticky choices (consistent hash, a sticky canary) and `/v1/models` agree, for fixed and for
//! DNS-discovered pools; limits are per replica.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use support::dns::DnsServer;
use support::*;

const CHAT: &str = "/v1/chat/completions";
const KEY: &str = "sk-replica-test-0001";
const LIMITED: &str = "sk-replica-test-0002";

/// Send a chat request for `model` with `x-session-id: session`; returns the backend that
/// served it (header), after checking the access log says the same.
async fn pick(gw: &Gateway, model: &str, session: &str) -> String {
    let r = client()
        .post(gw.url(CHAT))
        .bearer_auth(KEY)
        .header("x-session-id", session)
        .header("x-request-id", format!("{session}-{}", gw.port))
        .body(chat_body(model, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{model} {session}");
    r.headers()["x-modelgate-backend"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_make_the_same_choices_and_keep_their_own_limits() {
    let mut mocks = Vec::new();
    for i in 0..4 {
        mocks.push(mock(&format!("h{i}"), "hashed").await);
    }
    let stable = mock("s0", "stable").await;
    let canary = mock("c0", "canary").await;
    let found_a = mock("d0", "found").await;
    let found_b = mock("d1", "found").await;
    let dns = DnsServer::start(30).await;
    dns.set_addrs("d0.test.", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    dns.set_addrs("d1.test.", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    dns.set_srv(
        "found.test.",
        &[
            (found_a.addr().port(), "d0.test."),
            (found_b.addr().port(), "d1.test."),
        ],
    );

    let hashed: Vec<String> = mocks
        .iter()
        .enumerate()
        .map(|(i, m)| backend(&format!("h{i}"), m))
        .collect();
    let sticky = "    load_balancer: {policy: consistent_hash, hash_on: \"header:x-session-id\"}\n";
    let models = [
        model_block("hashed", &hashed, sticky),
        model_block(
            "stable",
            &[backend("s0", &stable)],
            "    canary: {model: canary, percent: 50, sticky_on: \"header:x-session-id\"}\n",
        ),
        model_block("canary", &[backend("c0", &canary)], ""),
        model_block(
            "found",
            &[format!(
                "      - name: d\n        discover: {{dns: found.test., refresh_ms: 500, nameserver: \"{}\"}}\n",
                dns.addr
            )],
            sticky,
        ),
    ]
    .concat();
    let auth = format!(
        "auth:\n  keys:\n    - tenant: t\n      sha256: \"{}\"\n    - tenant: limited\n      sha256: \"{}\"\n      requests_per_minute: 3\n",
        sha256_hex(KEY.as_bytes()),
        sha256_hex(LIMITED.as_bytes())
    );
    let (a, b) = tokio::join!(
        Gateway::start_ready(&models, &auth),
        Gateway::start_ready(&models, &auth)
    );
    for gw in [&a, &b] {
        eventually(
            std::time::Duration::from_secs(10),
            "all backends healthy",
            || async {
                let s = gw.status().await;
                let all = s["models"]
                    .as_object()
                    .unwrap()
                    .values()
                    .flat_map(|m| m["backends"].as_array().unwrap().clone())
                    .collect::<Vec<_>>();
                all.len() == 8 && all.iter().all(|b| b["healthy"] == true)
            },
        )
        .await;
    }

    // Same key → same backend (and same canary side) on both replicas, for 12 keys per model.
    let mut chosen = std::collections::HashMap::new();
    for model in ["hashed", "stable", "found"] {
        let mut seen = BTreeSet::new();
        for k in 0..12 {
            let session = format!("session-{model}-{k}");
            let (on_a, on_b) = (
                pick(&a, model, &session).await,
                pick(&b, model, &session).await,
            );
            assert_eq!(on_a, on_b, "{model} {session}");
            // The same key again lands where it did.
            assert_eq!(pick(&a, model, &session).await, on_a);
            seen.insert(on_a.clone());
            chosen.insert(session, on_a);
        }
        assert!(seen.len() >= 2, "{model}: keys did not spread: {seen:?}");
    }
    // Each replica's access log names the backend the header named, for every request.
    for gw in [&a, &b] {
        let suffix = format!("-{}", gw.port);
        let mut checked = 0;
        for line in gw.access_log() {
            let id = line["request_id"].as_str().unwrap_or_default();
            if let Some(session) = id.strip_suffix(&suffix) {
                assert_eq!(line["backend"], chosen[session].as_str(), "{line}");
                checked += 1;
            }
        }
        assert!(checked >= 36, "{checked} access-log lines matched");
    }

    // Same /v1/models.
    let models_of = |gw: &Gateway| {
        let url = gw.url("/v1/models");
        async move {
            let v: serde_json::Value = client()
                .get(url)
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let (ma, mb) = (models_of(&a).await, models_of(&b).await);
    // vLLM (and the mock) mint a fresh `modelperm-<random>` id and stamp `created` with the
    // time of every /v1/models answer; the gateway passes on the card its last probe saw, so
    // only those may differ (the two replicas' probes can fall in different seconds).
    let normal = |mut v: serde_json::Value| {
        for m in v["data"].as_array_mut().unwrap() {
            assert!(m["created"].as_u64().is_some());
            m["created"] = 0.into();
            for p in m["permission"].as_array_mut().into_iter().flatten() {
                assert!(p["id"].as_str().unwrap().starts_with("modelperm-"));
                assert!(p["created"].as_u64().is_some());
                p["id"] = "modelperm-*".into();
                p["created"] = 0.into();
            }
        }
        v
    };
    let (ma, mb) = (normal(ma), normal(mb));
    assert_eq!(ma, mb);
    assert_eq!(ma["data"].as_array().unwrap().len(), 4, "{ma}");

    // Limits are per replica: a tenant allowed 3 requests a minute gets 3 on each replica.
    let limited = |gw: &Gateway| {
        let url = gw.url(CHAT);
        async move {
            client()
                .post(url)
                .bearer_auth(LIMITED)
                .body(chat_body("hashed", false))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(limited(&a).await.status(), 200);
    }
    expect_error(limited(&a).await, 429, None).await;
    // A is exhausted; B counted nothing of it.
    for _ in 0..3 {
        assert_eq!(limited(&b).await.status(), 200);
    }
    expect_error(limited(&b).await, 429, None).await;
}
