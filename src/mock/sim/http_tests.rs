//! Simulated servers tested through HTTP on 127.0.0.1: prefix-cache hits in `usage` and
//! `/metrics`, `/reset_prefix_cache`, streams, client aborts, the extra routes and refusals.
//! Each test starts its own server on an ephemeral port and waits on conditions, not time.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::mock::tests::{client, post, scrape, sse_events};
use crate::mock::{MockConfig, MockServer, SimConfig};

async fn start(sim: SimConfig) -> MockServer {
    let cfg = MockConfig {
        name: "sim".to_owned(),
        models: vec!["m1".to_owned()],
        ..MockConfig::default()
    };
    MockServer::start_sim(cfg, sim).await.expect("start")
}

/// A fast clock: 10 simulated seconds per wall-clock second.
fn fast() -> SimConfig {
    SimConfig {
        time_scale: 0.1,
        ..SimConfig::default()
    }
}

/// Sum of the samples of `series` in a Prometheus text: a metric name, optionally followed by
/// its first labels (`name{engine="0"`), in the order they are rendered.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(['{', ' ', ',', '}']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `usage.prompt_tokens_details.cached_tokens` of a non-stream completion of `prompt`.
async fn cached_tokens(server: &MockServer, prompt: &str) -> Value {
    let request = json!({"prompt": prompt, "max_tokens": 2});
    let response = post(server, "/v1/completions", &request).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    body["usage"]["prompt_tokens_details"]["cached_tokens"].clone()
}

#[tokio::test]
async fn repeated_prompt_hits_the_prefix_cache_until_it_is_reset() {
    let server = start(fast()).await;
    // 640 bytes = 160 tokens = 10 full blocks; the hit stops before the last token: 9 blocks.
    let prompt = "x".repeat(640);
    assert_eq!(cached_tokens(&server, &prompt).await, 0);
    assert_eq!(cached_tokens(&server, &prompt).await, 144);
    let text = scrape(&server).await;
    assert_eq!(metric(&text, "vllm:prefix_cache_queries_total"), 320.0);
    assert_eq!(metric(&text, "vllm:prefix_cache_hits_total"), 144.0);
    assert_eq!(metric(&text, "vllm:prompt_tokens_total"), 320.0);

    let reset = client()
        .post(format!("{}/reset_prefix_cache", server.url()))
        .send()
        .await
        .expect("reset");
    assert_eq!(reset.status(), 200);
    assert_eq!(reset.text().await.expect("body"), "");
    assert_eq!(cached_tokens(&server, &prompt).await, 0);
}

#[tokio::test]
async fn stream_chat_sends_a_chunk_per_token_and_cached_tokens_in_usage() {
    let server = start(fast()).await;
    let messages = json!([{"role": "system", "content": "s".repeat(200)},
                          {"role": "user", "content": "hello"}]);
    let warm = json!({"messages": messages, "max_tokens": 1});
    assert_eq!(
        post(&server, "/v1/chat/completions", &warm).await.status(),
        200
    );
    let request = json!({
        "messages": messages,
        "max_completion_tokens": 3,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let text = post(&server, "/v1/chat/completions", &request)
        .await
        .text()
        .await
        .expect("body");
    let events = sse_events(&text);
    // role + 3 tokens + finish + usage + [DONE]
    assert_eq!(events.len(), 7, "{text}");
    assert_eq!(events[6], "[DONE]");
    let usage: Value = serde_json::from_str(&events[5]).expect("usage json");
    // Template: "<|system|>\n" + 200 + "\n<|user|>\nhello\n" = 227 bytes = 57 tokens.
    assert_eq!(usage["usage"]["prompt_tokens"], 57);
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 48);
    let finish: Value = serde_json::from_str(&events[4]).expect("finish json");
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn client_disconnect_aborts_the_request_in_the_engine() {
    let server = start(SimConfig::default()).await;
    // 100,000 decode steps would take ten minutes: only the abort can end it.
    let request = json!({"prompt": "hi", "max_tokens": 100_000, "stream": true});
    let response = post(&server, "/v1/completions", &request).await;
    let mut body = response.bytes_stream();
    body.next().await.expect("first chunk").expect("frame");
    assert_eq!(
        metric(&scrape(&server).await, "vllm:num_requests_running"),
        1.0
    );
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&server).await;
        let aborted = metric(
            &text,
            "vllm:request_success_total{engine=\"0\",finished_reason=\"abort\"",
        );
        if aborted == 1.0 && metric(&text, "vllm:num_requests_running") == 0.0 {
            assert_eq!(metric(&text, "vllm:kv_cache_usage_perc"), 0.0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not aborted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_use_vllm_v1_names_labels_and_simulated_seconds() {
    let server = start(fast()).await;
    // 8,000 tokens: one prefill step of 5,752.7 + 17.25 x 8,000 us = 143.75 ms simulated.
    let request = json!({"prompt": "p".repeat(32_000), "max_tokens": 1});
    assert_eq!(
        post(&server, "/v1/completions", &request).await.status(),
        200
    );
    let text = scrape(&server).await;
    assert!(
        text.contains("vllm:cache_config_info{block_size=\"16\",")
            && text.contains("enable_prefix_caching=\"True\"")
            && text.contains("num_gpu_blocks=\"29205\""),
        "{text}"
    );
    assert!(text.contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"m1\"} 0"));
    assert_eq!(
        metric(
            &text,
            "vllm:request_success_total{engine=\"0\",finished_reason=\"length\""
        ),
        1.0
    );
    assert_eq!(metric(&text, "vllm:generation_tokens_total"), 1.0);
    assert_eq!(metric(&text, "vllm:time_to_first_token_seconds_count"), 1.0);
    // Simulated, not wall-clock, seconds: at least the step's 0.14375 s though only a tenth
    // of that passed on the wall clock.
    let ttft = metric(&text, "vllm:time_to_first_token_seconds_sum");
    assert!(ttft >= 0.14375, "ttft {ttft}");
    assert_eq!(metric(&text, "vllm:e2e_request_latency_seconds_count"), 1.0);
    assert_eq!(metric(&text, "vllm:num_preemptions_total"), 0.0);
}

#[tokio::test]
async fn sglang_info_routes_answer_in_sim_mode() {
    let server = start(fast()).await;
    for path in [
        "/model_info",
        "/get_model_info",
        "/server_info",
        "/get_server_info",
    ] {
        let response = client()
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["model_path"], "m1", "{path}");
    }
}

#[tokio::test]
async fn request_that_can_never_fit_the_kv_cache_is_refused() {
    let server = start(SimConfig {
        kv_blocks: 4,
        ..fast()
    })
    .await;
    // 60 prompt tokens + 5 generated: 64 tokens of KV fit in 4 blocks; 6 do not.
    let fits = json!({"prompt": "a".repeat(240), "max_tokens": 5});
    assert_eq!(post(&server, "/v1/completions", &fits).await.status(), 200);
    let too_long = json!({"prompt": "a".repeat(240), "max_tokens": 6});
    let response = post(&server, "/v1/completions", &too_long).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "BadRequestError");
}

#[tokio::test]
async fn render_routes_give_token_ids_that_share_a_shared_prefix() {
    let server = start(fast()).await;
    let chat = |question: &str| {
        json!({"model": "m1", "max_tokens": 7, "messages": [
            {"role": "system", "content": "s".repeat(64)},
            {"role": "user", "content": question},
        ]})
    };
    let render = |body: Value, path: &'static str| {
        let server = &server;
        async move {
            let response = post(server, path, &body).await;
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.expect("json")
        }
    };
    let a = render(chat("first question"), "/v1/chat/completions/render").await;
    let b = render(chat("another one"), "/v1/chat/completions/render").await;
    assert_eq!(a["model"], "m1");
    assert_eq!(a["sampling_params"]["max_tokens"], 7);
    // "<|system|>\n" + 64 bytes + "\n<|user|>\n": 85 bytes, 21 whole tokens in common.
    let (a, b) = (
        a["token_ids"].as_array().unwrap(),
        b["token_ids"].as_array().unwrap(),
    );
    assert_eq!(a[..21], b[..21]);
    assert_ne!(a[21..], b[21..]);
    // 85 + 14 bytes + "\n": 100 bytes, 25 tokens, as the engine counts them.
    assert_eq!(a.len(), 25);
    let list = render(
        json!({"model": "m1", "prompt": ["abcdefgh", "abcd"]}),
        "/v1/completions/render",
    )
    .await;
    assert_eq!(list[0]["token_ids"].as_array().unwrap().len(), 2);
    assert_eq!(list[1]["token_ids"], json!([list[0]["token_ids"][0]]));
}

#[tokio::test]
async fn a_simulated_server_answers_a_path_it_does_not_serve_with_404() {
    let server = start(fast()).await;
    let response = post(&server, "/v1/not_a_route", &json!({"model": "m1"})).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"detail": "Not Found"}));
    // An unknown model on a render route is refused like a generation's.
    let response = post(
        &server,
        "/v1/completions/render",
        &json!({"model": "nope", "prompt": "x"}),
    )
    .await;
    assert_eq!(response.status(), 404);
}
