//! Routing, load balancing, health gating and the gateway's own endpoints, end to end over real
//! sockets: the real binary against in-process mock vLLM backends.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_splits_100_requests_50_50_with_receipt() {
    let a = mock("gpu0", "m").await;
    let b = mock("gpu1", "m").await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("gpu0", &a), backend("gpu1", &b)], ""),
        "",
    )
    .await;
    let c = client();
    let mut by_header = std::collections::HashMap::new();
    for _ in 0..100 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body("m", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-attempts"], "1");
        let name = r.headers()["x-modelgate-backend"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(r.headers()["x-mock-backend"].to_str().unwrap(), name);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
        *by_header.entry(name).or_insert(0) += 1;
    }
    assert_eq!(a.stats().requests(), 50);
    assert_eq!(b.stats().requests(), 50);
    assert_eq!(by_header["gpu0"], 50);
    assert_eq!(by_header["gpu1"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_routed_to_their_own_pools_and_any_v1_endpoint_passes_through() {
    let a = mock("a0", "alpha").await;
    let b = mock("b0", "beta").await;
    let models = format!(
        "{}{}",
        model_block(
            "alpha",
            &[backend("a0", &a)],
            "    load_balancer: {policy: random}\n"
        ),
        model_block("beta", &[backend("b0", &b)], "")
    );
    let gw = Gateway::start_ready(&models, "").await;
    let c = client();
    for path in [
        "/v1/completions",
        "/v1/embeddings",
        "/v1/score",
        "/v1/rerank",
        "/tokenize",
    ] {
        let r = c
            .post(gw.url(path))
            .body(r#"{"input":"x","prompt":"x","model":"beta"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-modelgate-backend"], "b0");
        assert_eq!(b.stats().last_path().as_deref(), Some(path));
    }
    let r = gw.chat("alpha", false).await;
    assert_eq!(r.headers()["x-modelgate-backend"], "a0");
    assert_eq!(a.stats().requests(), 1);
    assert_eq!(b.stats().requests(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_model_backend_is_unhealthy_and_never_gets_traffic() {
    let good = mock("good", "m").await;
    let wrong = mock("wrong", "other-model").await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("good", &good), backend("wrong", &wrong)], ""),
        "",
    )
    .await;
    eventually(Duration::from_secs(10), "wrong backend probed", || async {
        wrong.stats().models_requests() > 0
    })
    .await;
    for _ in 0..20 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "good");
    }
    assert_eq!(wrong.stats().requests(), 0);
    assert!(!gw.backend_healthy("m", "wrong").await);
    let log = gw.log();
    assert!(
        log.contains("other-model"),
        "log names the served model:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_costs_no_failed_request_and_returns() {
    let a = mock("gpu0", "m").await;
    let b = mock("gpu1", "m").await;
    let b_addr = b.addr();
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("gpu0", &a), backend("gpu1", &b)],
            "    retries: {max_attempts: 2, retry_on: [connection_failure]}\n",
        ),
        "",
    )
    .await;
    let c = client();
    let send = |c: reqwest::Client| {
        let url = gw.url("/v1/chat/completions");
        async move {
            let r = c
                .post(url)
                .body(chat_body("m", false))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "no request may fail");
            r.headers()["x-modelgate-backend"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    for _ in 0..10 {
        send(c.clone()).await;
    }
    b.stop().await;
    // Before and after health checks notice, every request still succeeds.
    for _ in 0..40 {
        send(c.clone()).await;
    }
    eventually(Duration::from_secs(10), "gpu1 marked down", || async {
        !gw.backend_healthy("m", "gpu1").await
    })
    .await;
    for _ in 0..10 {
        assert_eq!(send(c.clone()).await, "gpu0");
    }
    let b2 = MockServer::start_on(
        MockConfig {
            name: "gpu1".into(),
            models: vec!["m".into()],
            ..MockConfig::default()
        },
        b_addr,
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "gpu1 gets traffic again", || {
        let c = c.clone();
        let b2 = &b2;
        let send = &send;
        async move {
            send(c).await;
            b2.stats().requests() > 0
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_without_healthy_backend_answers_503_with_retry_after_at_once() {
    let wrong = mock("wrong", "x").await;
    let dead_port = free_port();
    let models = format!(
        "{}  down:\n    backends:\n      - {{name: d0, url: \"http://127.0.0.1:{dead_port}\"}}\n    health_check: {{interval_ms: 100, timeout_ms: 200}}\n",
        model_block("up", &[backend("w", &wrong)], "")
    );
    let gw = Gateway::start(&models, "").await;
    // Not ready: no model has a healthy backend.
    eventually(Duration::from_secs(10), "probes ran", || async {
        wrong.stats().models_requests() > 1
    })
    .await;
    let r = client().get(gw.admin_url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = gw.chat("down", false).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 503, Some("no_healthy_backend")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_endpoint_lists_healthy_models_with_backend_fields() {
    let a = mock_with("a0", "alpha", |c| c.max_model_len = 32768).await;
    let dead_port = free_port();
    let models = format!(
        "{}  beta:\n    backends:\n      - {{name: d0, url: \"http://127.0.0.1:{dead_port}\"}}\n",
        model_block("alpha", &[backend("a0", &a)], "")
    );
    let gw = Gateway::start_ready(&models, "").await;
    let v: serde_json::Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    assert_eq!(data[0]["id"], "alpha");
    assert_eq!(data[0]["max_model_len"], 32768);
    let r = client()
        .get(gw.url("/v1/models/alpha"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(gw.url("/v1/models/beta"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, Some("model_not_found")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_are_not_served_on_the_public_port() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let c = client();
    for path in ["/health", "/ready", "/status"] {
        let r = c.get(gw.url(path)).send().await.unwrap();
        expect_error(r, 404, Some("not_found")).await;
        assert_eq!(
            c.get(gw.admin_url(path)).send().await.unwrap().status(),
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_path_and_thresholds_are_honoured() {
    let a = mock("a0", "m").await;
    let _gw = Gateway::start_ready(
        &format!(
            "  m:\n    backends:\n{}    health_check: {{path: /health, interval_ms: 50, timeout_ms: 500, healthy_threshold: 3, unhealthy_threshold: 3}}\n",
            backend("a0", &a)
        ),
        "",
    )
    .await;
    eventually(Duration::from_secs(10), "custom path probed", || async {
        a.stats().health_requests() >= 3
    })
    .await;
    assert_eq!(
        a.stats().models_requests(),
        0,
        "probe uses the configured path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_pool_is_reported_with_the_backends_named() {
    let a = mock_with("small", "m", |c| c.max_model_len = 4096).await;
    let b = mock_with("large", "m", |c| c.max_model_len = 32768).await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("small", &a), backend("large", &b)], ""),
        "",
    )
    .await;
    eventually(Duration::from_secs(10), "mixed-pool warning", || async {
        let log = gw.log();
        log.contains("different values")
            && log.contains("small=4096")
            && log.contains("large=32768")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_url_in_two_pools_has_health_per_model() {
    let shared = mock("shared", "a").await;
    let only_b = mock("only-b", "b").await;
    let models = format!(
        "{}{}",
        model_block("a", &[backend("s", &shared)], ""),
        model_block("b", &[backend("s", &shared), backend("ob", &only_b)], "")
    );
    let gw = Gateway::start_ready(&models, "").await;
    eventually(Duration::from_secs(10), "both pools probed", || async {
        gw.status().await["models"]["b"]["backends"][1]["checked"] == true
            && gw.status().await["models"]["b"]["backends"][0]["checked"] == true
    })
    .await;
    assert!(gw.backend_healthy("a", "s").await);
    assert!(
        !gw.backend_healthy("b", "s").await,
        "shared serves a, not b"
    );
    for _ in 0..6 {
        assert_eq!(
            gw.chat("a", false).await.headers()["x-modelgate-backend"],
            "s"
        );
        assert_eq!(
            gw.chat("b", false).await.headers()["x-modelgate-backend"],
            "ob"
        );
    }
}
