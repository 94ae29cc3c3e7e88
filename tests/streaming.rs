//! Streaming, timeouts, retries and disconnects: the retry contract (never after the first byte
//! reached the client), 504 on hangs, cut streams without `[DONE]`, and upstream abort when the
//! client leaves.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn read_all_text(r: reqwest::Response) -> (String, bool) {
    let mut s = r.bytes_stream();
    let mut out = Vec::new();
    let mut failed = false;
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => out.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_passes_through_complete_and_ends_with_done() {
    let a = mock_with("a0", "m", |c| c.tokens = 12).await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(chat_body("m", true).replace("\"max_tokens\":8", "\"max_tokens\":12"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r.headers()["x-modelgate-backend"], "a0");
    let (text, failed) = read_all_text(r).await;
    assert!(!failed);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(
        text.matches("\"chat.completion.chunk\"").count(),
        14,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_chunk_reaches_the_client_before_the_backend_sends_the_next() {
    // The backend sends 3 chunks and then never sends another byte. If the gateway buffered
    // anything, the client would never see those chunks.
    let a = mock_with("a0", "m", |c| {
        c.fail = FailMode::HangMidStream { after_chunks: 3 }
    })
    .await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let r = gw.chat("m", true).await;
    let mut s = r.bytes_stream();
    let mut seen = String::new();
    while seen.matches("data: ").count() < 3 {
        let b = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("chunk must arrive while the backend holds the next one")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&b));
    }
    assert!(!seen.contains("[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_backend_gives_504_within_first_byte_timeout() {
    let a = mock_with("a0", "m", |c| c.fail = FailMode::Hang).await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("a0", &a)],
            "    timeouts: {first_byte_timeout_ms: 300}\n    retries: {max_attempts: 1}\n",
        ),
        "",
    )
    .await;
    let started = Instant::now();
    let r = gw.chat("m", false).await;
    let v = expect_error(r, 504, Some("upstream_timeout")).await;
    assert_eq!(v["error"]["type"], "server_error");
    // Generous bound: proves the timeout fired rather than the client's 30 s one.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_bounds_the_whole_exchange() {
    let a = mock_with("a0", "m", |c| c.fail = FailMode::Hang).await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("a0", &a)],
            "    timeouts: {request_timeout_ms: 300}\n    retries: {max_attempts: 1}\n",
        ),
        "",
    )
    .await;
    let r = gw.chat("m", false).await;
    expect_error(r, 504, Some("upstream_timeout")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_retry_goes_to_another_backend() {
    let slow = mock_with("slow", "m", |c| c.fail = FailMode::Hang).await;
    let fast = mock("fast", "m").await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("slow", &slow), backend("fast", &fast)],
            "    timeouts: {first_byte_timeout_ms: 200}\n    retries: {max_attempts: 2, retry_on: [timeout]}\n",
        ),
        "",
    )
    .await;
    for _ in 0..4 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "fast");
    }
    assert!(
        slow.stats().requests() >= 1,
        "round robin must have tried the slow one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_5xx_is_retried_only_when_configured_and_passed_through_otherwise() {
    let bad = mock_with("bad", "m", |c| c.fail = FailMode::Status(503)).await;
    let good = mock("good", "m").await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("bad", &bad), backend("good", &good)],
            "    retries: {max_attempts: 2, retry_on: [http_5xx]}\n",
        ),
        "",
    )
    .await;
    for _ in 0..4 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        let attempts: u32 = r.headers()["x-modelgate-attempts"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(attempts <= 2);
    }
    assert!(
        bad.stats().requests() >= 1,
        "round robin must have tried the failing one"
    );
    assert_eq!(good.stats().requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_pass_through_unchanged_without_retry_policy() {
    let bad = mock_with("bad", "m", |c| c.fail = FailMode::Status(500)).await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("bad", &bad)], ""), "").await;
    let r = gw.chat("m", false).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-modelgate-backend"], "bad");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].is_object(), "backend's own error JSON: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_stream_is_cut_and_never_retried() {
    let dying = mock_with("dying", "m", |c| {
        c.fail = FailMode::CloseMidStream { after_chunks: 3 }
    })
    .await;
    let other = mock("other", "m").await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("dying", &dying), backend("other", &other)],
            "    retries: {max_attempts: 3, retry_on: [connection_failure, timeout, http_5xx]}\n",
        ),
        "",
    )
    .await;
    // Round robin starts somewhere; send until the dying backend has served one stream.
    let mut cut_seen = false;
    for _ in 0..4 {
        let r = gw.chat("m", true).await;
        let name = r.headers()["x-modelgate-backend"]
            .to_str()
            .unwrap()
            .to_string();
        let (text, failed) = read_all_text(r).await;
        if name == "dying" {
            assert!(failed, "a cut stream must be an error for the client");
            assert!(!text.contains("[DONE]"), "{text}");
            cut_seen = true;
            break;
        }
    }
    assert!(cut_seen);
    let other_before = other.stats().requests();
    // The cut request was not replayed on the other backend.
    assert!(other_before <= 1, "other backend got {other_before}");
    let log = gw.log();
    assert!(!log.contains("retrying"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gap_cuts_the_stream_without_done() {
    let a = mock_with("a0", "m", |c| {
        c.fail = FailMode::HangMidStream { after_chunks: 2 }
    })
    .await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("a0", &a)],
            "    timeouts: {idle_timeout_ms: 300}\n",
        ),
        "",
    )
    .await;
    let r = gw.chat("m", true).await;
    assert_eq!(r.status(), 200);
    let (text, failed) = read_all_text(r).await;
    assert!(failed, "client must see an error");
    assert!(
        text.contains("data: ") && !text.contains("[DONE]"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_closes_the_upstream() {
    let a = mock_with("a0", "m", |c| {
        c.tokens = 1000;
        c.itl = Duration::from_millis(20);
    })
    .await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let body = chat_body("m", true).replace("\"max_tokens\":8", "\"max_tokens\":1000");
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    eventually(
        Duration::from_secs(5),
        "backend saw the stream aborted",
        || async { a.stats().aborted() == 1 },
    )
    .await;
    assert_eq!(a.stats().completed_streams(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_while_waiting_for_first_token_closes_the_upstream() {
    let a = mock_with("a0", "m", |c| c.ttft = Duration::from_secs(30)).await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let body = chat_body("m", true);
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "request reached backend",
        || async { a.stats().in_flight() == 1 },
    )
    .await;
    drop(s);
    eventually(Duration::from_secs(5), "backend request ended", || async {
        a.stats().in_flight() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_pass_both_ways_with_request_id_and_authorization() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-test")
        .header("x-request-id", "req-123")
        .header("x-custom-thing", "yes")
        .body(chat_body("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    assert!(
        r.headers().contains_key("x-mock-backend"),
        "unknown response headers pass"
    );
    let st = a.stats();
    assert_eq!(
        st.last_header("authorization").as_deref(),
        Some("Bearer sk-test")
    );
    assert_eq!(st.last_header("x-request-id").as_deref(), Some("req-123"));
    assert_eq!(st.last_header("x-custom-thing").as_deref(), Some("yes"));
    // A generated id when the client sends none (or an insane one), same up and down.
    let r = gw.chat("m", false).await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(
        a.stats().last_header("x-request-id").as_deref(),
        Some(id.as_str())
    );
    // Errors carry it too.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "e-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "e-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failure_on_every_attempt_is_502_without_backend_details() {
    let a = mock("a0", "m").await;
    let b = mock("b0", "m").await;
    // Probes far apart: both stay "healthy" after they die, so the requests really try them.
    let gw = Gateway::start_ready(
        &format!(
            "  m:\n    backends:\n{}{}    health_check: {{interval_ms: 60000}}\n    retries: {{max_attempts: 2, retry_on: [connection_failure]}}\n",
            backend("a0", &a),
            backend("b0", &b)
        ),
        "",
    )
    .await;
    let (a_url, b_url) = (a.url(), b.url());
    a.stop().await;
    b.stop().await;
    let r = gw.chat("m", false).await;
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v = expect_error(r, 502, Some("upstream_error")).await;
    let text = v.to_string();
    for leak in [
        a_url.as_str(),
        b_url.as_str(),
        "127.0.0.1",
        "Connection refused",
    ] {
        assert!(!text.contains(leak), "{text}");
    }
}
