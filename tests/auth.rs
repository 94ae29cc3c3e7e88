//! API keys and tenants over real sockets: 401 without a valid key, models limited by globs
//! (a forbidden model looks like a missing one), requests/minute and in-flight quotas answered
//! with 429 + Retry-After, the client's key stripped upstream and a backend `api_key` sent.

mod support;

use std::time::Duration;

use support::*;

const CHAT: &str = "/v1/chat/completions";

fn key_entry(tenant: &str, key: &str, extra: &str) -> String {
    format!(
        "    - tenant: {tenant}\n      sha256: \"{}\"\n{extra}",
        sha256_hex(key.as_bytes())
    )
}

async fn post(gw: &Gateway, key: Option<&str>, model: &str) -> reqwest::Response {
    let mut r = client().post(gw.url(CHAT)).body(chat_body(model, false));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tenants_models_and_quotas() {
    let a = mock("a0", "mistral-7b").await;
    let b = mock("b0", "llama-3").await;
    let secret = "vllm-backend-secret";
    let models = format!(
        "{}{}",
        model_block(
            "mistral-7b",
            &[format!(
                "      - name: a0\n        url: \"{}\"\n        api_key: \"{secret}\"\n",
                a.url()
            )],
            ""
        ),
        model_block("llama-3", &[backend("b0", &b)], "")
    );
    let auth = format!(
        "auth:\n  keys:\n{}{}",
        key_entry(
            "team-a",
            "sk-team-a-0001",
            "      models: [\"mistral-*\"]\n      requests_per_minute: 5\n"
        ),
        key_entry("team-b", "sk-team-b-0002", "      max_in_flight: 1\n")
    );
    let gw = Gateway::start_ready(&models, &auth).await;

    // No key, a wrong key, a malformed header: 401, OpenAI-shaped.
    let v = expect_error(
        post(&gw, None, "mistral-7b").await,
        401,
        Some("invalid_api_key"),
    )
    .await;
    assert!(!v.to_string().contains("team-"), "{v}");
    expect_error(
        post(&gw, Some("sk-wrong"), "mistral-7b").await,
        401,
        Some("invalid_api_key"),
    )
    .await;
    let r = client()
        .post(gw.url(CHAT))
        .header("authorization", "Basic abc")
        .body(chat_body("mistral-7b", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    expect_error(r, 401, None).await;
    expect_error(
        client().get(gw.url("/v1/models")).send().await.unwrap(),
        401,
        None,
    )
    .await;

    // team-a: mistral-* only; llama-3 looks missing; /v1/models shows only what it may use.
    let r = post(&gw, Some("sk-team-a-0001"), "mistral-7b").await;
    assert_eq!(r.status(), 200);
    // The client's key never reaches the backend; the backend's own key does.
    assert_eq!(
        a.stats().last_header("authorization").as_deref(),
        Some(&*format!("Bearer {secret}"))
    );
    let forbidden = expect_error(
        post(&gw, Some("sk-team-a-0001"), "llama-3").await,
        404,
        Some("model_not_found"),
    )
    .await;
    let missing = expect_error(
        post(&gw, Some("sk-team-a-0001"), "nope").await,
        404,
        Some("model_not_found"),
    )
    .await;
    // Neither 404 names a model the key may not use.
    for v in [&forbidden, &missing] {
        let msg = v["error"]["message"].as_str().unwrap();
        let listed = msg.split("Available models:").nth(1).unwrap();
        assert_eq!(listed.trim(), "mistral-7b", "{msg}");
    }
    assert_eq!(b.stats().requests(), 0);
    let list: serde_json::Value = client()
        .get(gw.url("/v1/models"))
        .bearer_auth("sk-team-a-0001")
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
    assert_eq!(ids, ["mistral-7b"]);

    // requests_per_minute: 5 → a burst of 5 (one used above), then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = post(&gw, Some("sk-team-a-0001"), "mistral-7b").await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let secs: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=61).contains(&secs), "{secs}");
            expect_error(r, 429, Some("rate_limit_exceeded")).await;
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "{statuses:?}");

    // team-b: all models, one request at a time.
    b.set_ttft(Duration::from_millis(500));
    let gw_url = gw.url(CHAT);
    let slow = tokio::spawn(async move {
        client()
            .post(gw_url)
            .bearer_auth("sk-team-b-0002")
            .body(chat_body("llama-3", false))
            .send()
            .await
            .unwrap()
            .status()
    });
    let sb = b.stats();
    eventually(Duration::from_secs(5), "team-b request in flight", || {
        let n = sb.in_flight();
        async move { n == 1 }
    })
    .await;
    expect_error(
        post(&gw, Some("sk-team-b-0002"), "mistral-7b").await,
        429,
        Some("rate_limit_exceeded"),
    )
    .await;
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        post(&gw, Some("sk-team-b-0002"), "mistral-7b")
            .await
            .status(),
        200
    );

    // The access log names the tenant.
    let log = gw.access_log();
    assert!(log
        .iter()
        .any(|l| l["tenant"] == "team-b" && l["status"] == 200));
    assert!(log
        .iter()
        .any(|l| l["status"] == 401 && l["tenant"].is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_file_is_read_next_to_the_config_and_authorization_can_pass() {
    let a = mock("a0", "m").await;
    let gw = Gateway::spawn("", "", &[]);
    std::fs::write(
        gw.dir.path().join("keys.yaml"),
        format!("keys:\n{}", key_entry("file-tenant", "sk-from-file-1", "")),
    )
    .unwrap();
    let mut gw = gw;
    let _ = gw.child.kill();
    let _ = gw.child.wait();
    gw.write_config(
        &model_block("m", &[backend("a0", &a)], ""),
        "auth:\n  keys_file: keys.yaml\n  forward_authorization: pass\n",
    );
    gw.child = gateway_command(&gw.config_path, gw.dir.path(), &[])
        .spawn()
        .unwrap();
    gw.wait_admin().await;
    gw.wait_ready().await;
    assert_eq!(post(&gw, Some("sk-from-file-1"), "m").await.status(), 200);
    assert_eq!(
        a.stats().last_header("authorization").as_deref(),
        Some("Bearer sk-from-file-1")
    );
    assert_eq!(post(&gw, Some("sk-other"), "m").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_refuses_once_usage_overdraws_the_budget() {
    let a = mock_with("a0", "m", |c| c.tokens = 8).await;
    let auth = format!(
        "auth:\n  keys:\n{}",
        key_entry("t", "sk-tokens-1", "      tokens_per_minute: 10\n")
    );
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), &auth).await;
    // The first request is admitted; its usage (prompt + 8 completion tokens) is charged after.
    assert_eq!(post(&gw, Some("sk-tokens-1"), "m").await.status(), 200);
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "the token budget in debt",
        || async move { post(gw_ref, Some("sk-tokens-1"), "m").await.status() == 429 },
    )
    .await;
}
