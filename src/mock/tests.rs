//! In-process tests of the mock vLLM server: response shapes, streaming, failure injection,
//! counters and restart on the same port. Each test starts its own server on an ephemeral port.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{FailMode, MockConfig, MockLoad, MockServer};

fn config(tokens: usize) -> MockConfig {
    MockConfig {
        name: "b1".to_owned(),
        models: vec!["m1".to_owned(), "m1-alias".to_owned()],
        tokens,
        ..MockConfig::default()
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Polls `condition` until it holds or `deadline` passes.
pub(crate) async fn eventually(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    condition()
}

/// The `data:` payloads of an SSE body, in order.
pub(crate) fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

pub(crate) async fn post(server: &MockServer, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.url()))
        .json(body)
        .send()
        .await
        .expect("mock answers")
}

#[tokio::test]
async fn models_list_has_vllm_shape() {
    let server = MockServer::start(config(4)).await.expect("start");
    let response = client()
        .get(format!("{}/v1/models", server.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-mock-backend"], "b1");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], "m1");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "vllm");
    assert_eq!(data[0]["root"], "m1");
    assert_eq!(data[0]["parent"], Value::Null);
    assert_eq!(data[0]["max_model_len"], 4096);
    assert_eq!(data[0]["permission"][0]["object"], "model_permission");
    assert_eq!(data[1]["id"], "m1-alias");
    assert_eq!(server.stats().models_requests(), 1);
    assert_eq!(server.stats().requests(), 0);
}

#[tokio::test]
async fn non_stream_chat_has_openai_shape() {
    let server = MockServer::start(config(5)).await.expect("start");
    let request = serde_json::json!({
        "model": "m1-alias",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 3,
    });
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .header("x-request-id", "req-7")
        .json(&request)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-7");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["id"], "chatcmpl-req-7");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m1-alias");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let prompt = body["usage"]["prompt_tokens"]
        .as_u64()
        .expect("prompt_tokens");
    assert_eq!(body["usage"]["total_tokens"], prompt + 3);

    // Without max_tokens the model stops by itself after `tokens`.
    let request = serde_json::json!({"prompt": "hi"});
    let body: Value = post(&server, "/v1/completions", &request)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "m1", "absent model means the first one");
    assert_eq!(body["choices"][0]["text"], "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["id"].as_str().expect("id").starts_with("cmpl-"));
}

#[tokio::test]
async fn stream_chat_sends_one_chunk_per_token_then_done() {
    let server = MockServer::start(config(4)).await.expect("start");
    let request = serde_json::json!({
        "model": "m1",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = post(&server, "/v1/chat/completions", &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = response.text().await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events = sse_events(&text);
    // role + 4 tokens + finish + usage + [DONE]
    assert_eq!(events.len(), 8, "{text}");
    let chunks: Vec<Value> = events[..7]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk json"))
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    let content: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().expect("delta"))
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 ");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"][0]["delta"], serde_json::json!({}));
    assert_eq!(chunks[6]["choices"], serde_json::json!([]));
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 4);
    let ids: Vec<&Value> = chunks.iter().map(|c| &c["id"]).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one id per stream");
    let stats = server.stats();
    assert!(eventually(Duration::from_secs(5), || stats.in_flight() == 0).await);
    assert_eq!(stats.completed_streams(), 1);
    assert_eq!(stats.aborted(), 0);
}

#[tokio::test]
async fn stream_chunk_reaches_client_before_next_token_is_generated() {
    let mut cfg = config(3);
    // Long enough that the next token cannot be generated while the test looks.
    cfg.itl = Duration::from_millis(500);
    let server = MockServer::start(cfg).await.expect("start");
    let request = serde_json::json!({"messages": [], "stream": true});
    let response = post(&server, "/v1/chat/completions", &request).await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("tok0 ") {
        let frame = body.next().await.expect("more body").expect("frame");
        seen.push_str(std::str::from_utf8(&frame).expect("utf-8"));
    }
    assert_eq!(server.stats().generation_tokens(), 1);
    assert!(!seen.contains("tok1 "));
}

#[tokio::test]
async fn unknown_model_is_404_with_vllm_error_json() {
    let server = MockServer::start(config(4)).await.expect("start");
    let request = serde_json::json!({"model": "nope", "messages": []});
    let response = post(&server, "/v1/chat/completions", &request).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "message": "The model `nope` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }})
    );

    let response = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "BadRequestError");
    assert_eq!(body["error"]["code"], 400);

    let response = client()
        .get(format!("{}/v2/nothing", server.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"detail": "Not Found"}));
}

#[tokio::test]
async fn body_sha256_header_matches_body_sent() {
    let server = MockServer::start(config(2)).await.expect("start");
    // Large enough to arrive in many reads.
    let filler = "x".repeat(3 * 1024 * 1024);
    let body = format!(r#"{{"model":"m1","prompt":"{filler}"}}"#);
    let expected = super::responses::hex(&Sha256::digest(body.as_bytes()));
    let response = client()
        .post(format!("{}/v1/completions", server.url()))
        .header("content-type", "application/json")
        .header("x-custom", "yes")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-mock-body-sha256"], expected.as_str());
    assert_eq!(
        response.headers()["x-mock-body-len"],
        body.len().to_string().as_str()
    );
    let stats = server.stats();
    assert_eq!(stats.last_body_sha256(), Some(expected));
    assert_eq!(stats.last_body_len(), body.len());
    assert_eq!(stats.last_header("x-custom").as_deref(), Some("yes"));
    assert_eq!(stats.last_path().as_deref(), Some("/v1/completions"));
    assert_eq!(stats.requests(), 1);

    // Pass-through endpoints answer after the model check.
    let request = serde_json::json!({"model": "m1-alias", "prompt": "x"});
    let body: Value = post(&server, "/tokenize", &request)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        serde_json::json!({"object": "mock", "path": "/tokenize", "model": "m1-alias"})
    );
}

#[tokio::test]
async fn stop_frees_port_for_restart_on_same_addr() {
    let mut cfg = config(4);
    cfg.fail = FailMode::HangMidStream { after_chunks: 1 };
    let server = MockServer::start(cfg).await.expect("start");
    let addr = server.addr();
    let request = serde_json::json!({"messages": [], "stream": true});
    let response = post(&server, "/v1/chat/completions", &request).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("first chunk").expect("frame");
    assert!(first.starts_with(b"data: "));
    let stats = server.stats();

    server.stop().await;
    // The open stream was killed with the server.
    while let Some(Ok(_)) = body.next().await {}
    assert_eq!(stats.aborted(), 1);
    assert_eq!(stats.in_flight(), 0);

    let again = MockServer::start_on(config(4), addr)
        .await
        .expect("restart on the same address");
    assert_eq!(again.addr(), addr);
    let response = client()
        .get(format!("{}/health", again.url()))
        .send()
        .await
        .expect("health");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "");
}

#[tokio::test]
async fn close_mid_stream_cuts_body_before_done() {
    let mut cfg = config(6);
    cfg.fail = FailMode::CloseMidStream { after_chunks: 3 };
    let server = MockServer::start(cfg).await.expect("start");
    let request = serde_json::json!({"messages": [], "stream": true});
    let response = post(&server, "/v1/chat/completions", &request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.next().await {
        match frame {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let text = String::from_utf8(received).expect("utf-8");
    assert!(failed, "the connection must end with an error");
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(sse_events(&text).len(), 3, "{text}");
    assert_eq!(
        server.stats().aborted(),
        0,
        "an injected close is not an abort"
    );

    // Non-stream: a truncated body under a full content-length.
    let request = serde_json::json!({"messages": []});
    let response = post(&server, "/v1/chat/completions", &request).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn client_disconnect_stops_stream_and_counts_abort() {
    let mut cfg = config(1000);
    cfg.itl = Duration::from_millis(20);
    let server = MockServer::start(cfg).await.expect("start");
    let request = serde_json::json!({"messages": [], "stream": true});
    let response = post(&server, "/v1/chat/completions", &request).await;
    let mut body = response.bytes_stream();
    body.next().await.expect("first chunk").expect("frame");
    let stats = server.stats();
    assert_eq!(stats.in_flight(), 1);
    drop(body);
    assert!(eventually(Duration::from_secs(5), || stats.in_flight() == 0).await);
    assert_eq!(stats.aborted(), 1);
    let generated = stats.generation_tokens();
    assert!(generated < 1000, "generation stopped");
}

#[tokio::test]
async fn fail_modes_apply_to_posts_only_and_change_at_runtime() {
    let server = MockServer::start(config(2)).await.expect("start");
    server.set_fail(FailMode::Status(503));
    let request = serde_json::json!({"messages": []});
    let response = post(&server, "/v1/chat/completions", &request).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("x-mock-body-sha256"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], 503);
    assert_eq!(body["error"]["type"], "ServiceUnavailableError");
    let models = client()
        .get(format!("{}/v1/models", server.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(models.status(), 200);

    server.set_fail(FailMode::Hang);
    let hung = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&request)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung.is_err(), "a hung request times out");
    let stats = server.stats();
    assert!(eventually(Duration::from_secs(5), || stats.in_flight() == 0).await);
    assert_eq!(stats.aborted(), 1);

    server.set_fail(FailMode::None);
    server.set_models(vec!["m2".to_owned()]);
    let response = post(&server, "/v1/chat/completions", &request).await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["model"], "m2");
    assert_eq!(stats.requests(), 3);
}

#[tokio::test]
async fn metrics_use_vllm_names() {
    let server = MockServer::start(config(3)).await.expect("start");
    let request = serde_json::json!({"messages": []});
    post(&server, "/v1/chat/completions", &request).await;
    let text = client()
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:kv_cache_usage_perc",
    ] {
        assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{text}");
    }
    assert!(text.contains("# TYPE vllm:prompt_tokens_total counter\n"));
    assert!(text.contains("vllm:generation_tokens_total{model_name=\"m1\"} 3.0\n"));
    assert!(text.contains("vllm:num_requests_running{model_name=\"m1\"} 0.0\n"));
}

#[tokio::test]
async fn embeddings_have_one_vector_per_input() {
    let server = MockServer::start(config(3)).await.expect("start");
    let request = serde_json::json!({"model": "m1", "input": ["a", "b", "c"]});
    let body: Value = post(&server, "/v1/embeddings", &request)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["embedding"].as_array().map(Vec::len), Some(8));
    assert_eq!(body["usage"]["completion_tokens"], 0);
}

#[tokio::test]
async fn peak_in_flight_counts_concurrent_posts_and_resets_to_current() {
    let mut cfg = config(1000);
    cfg.itl = Duration::from_millis(20);
    let server = MockServer::start(cfg).await.expect("start");
    let stats = server.stats();
    assert_eq!(stats.peak_in_flight(), 0);
    let request = serde_json::json!({"messages": [], "stream": true});
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = post(&server, "/v1/chat/completions", &request).await;
        let mut body = response.bytes_stream();
        body.next().await.expect("first chunk").expect("frame");
        streams.push(body);
    }
    assert_eq!(stats.in_flight(), 3);
    assert_eq!(stats.peak_in_flight(), 3);

    // Two end; the peak remembers three until reset, then restarts from the one still open.
    streams.truncate(1);
    assert!(eventually(Duration::from_secs(5), || stats.in_flight() == 1).await);
    assert_eq!(stats.peak_in_flight(), 3);
    stats.reset_peak();
    assert_eq!(stats.peak_in_flight(), 1);
    streams.clear();
    assert!(eventually(Duration::from_secs(5), || stats.in_flight() == 0).await);
    stats.reset_peak();
    assert_eq!(stats.peak_in_flight(), 0);

    let short = serde_json::json!({"messages": [], "max_tokens": 1});
    post(&server, "/v1/chat/completions", &short).await;
    assert_eq!(stats.peak_in_flight(), 1);
}

pub(crate) async fn scrape(server: &MockServer) -> String {
    client()
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn load_override_replaces_derived_metrics_until_cleared() {
    let mut cfg = config(3);
    cfg.load = Some(MockLoad {
        running: 7,
        waiting: 2,
        kv_cache_usage: 0.5,
    });
    let server = MockServer::start(cfg).await.expect("start");
    let text = scrape(&server).await;
    assert!(
        text.contains("vllm:num_requests_running{model_name=\"m1\"} 7.0\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:num_requests_waiting{model_name=\"m1\"} 2.0\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:kv_cache_usage_perc{model_name=\"m1\"} 0.5\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:gpu_cache_usage_perc{model_name=\"m1\"} 0.5\n"),
        "{text}"
    );

    // At runtime, including values a real vLLM never reports.
    server.set_load(Some(MockLoad {
        running: 40,
        waiting: 100,
        kv_cache_usage: f64::NAN,
    }));
    let text = scrape(&server).await;
    assert!(
        text.contains("vllm:num_requests_running{model_name=\"m1\"} 40.0\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:num_requests_waiting{model_name=\"m1\"} 100.0\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:kv_cache_usage_perc{model_name=\"m1\"} NaN\n"),
        "{text}"
    );
    server.set_load(Some(MockLoad {
        running: 0,
        waiting: 0,
        kv_cache_usage: f64::INFINITY,
    }));
    assert!(scrape(&server)
        .await
        .contains("vllm:kv_cache_usage_perc{model_name=\"m1\"} +Inf\n"));

    // The override only changes /metrics: POSTs are still served and counted.
    let request = serde_json::json!({"messages": []});
    assert_eq!(
        post(&server, "/v1/chat/completions", &request)
            .await
            .status(),
        200
    );
    assert_eq!(server.stats().requests(), 1);

    server.set_load(None);
    assert_eq!(server.config().load, None);
    let text = scrape(&server).await;
    assert!(
        text.contains("vllm:num_requests_running{model_name=\"m1\"} 0.0\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:num_requests_waiting{model_name=\"m1\"} 0.0\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:kv_cache_usage_perc{model_name=\"m1\"} 0.0\n"),
        "{text}"
    );
    assert_eq!(server.stats().metrics_requests(), 4);
}

#[tokio::test]
async fn derived_metrics_follow_requests_in_flight() {
    let mut cfg = config(1000);
    cfg.itl = Duration::from_millis(20);
    let server = MockServer::start(cfg).await.expect("start");
    let request = serde_json::json!({"messages": [], "stream": true});
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut body = post(&server, "/v1/chat/completions", &request)
            .await
            .bytes_stream();
        body.next().await.expect("first chunk").expect("frame");
        streams.push(body);
    }
    let text = scrape(&server).await;
    assert!(
        text.contains("vllm:num_requests_running{model_name=\"m1\"} 2.0\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:kv_cache_usage_perc{model_name=\"m1\"} 0.02\n"),
        "{text}"
    );
    assert!(
        text.contains("vllm:num_requests_waiting{model_name=\"m1\"} 0.0\n"),
        "{text}"
    );
}
