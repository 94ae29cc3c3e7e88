//! The request pipeline's contracts that ADR 0001 weighed when it kept the gateway's own
//! exchange over Pingora's proxy loop (whose prototype failed the first three): a retry before the
//! first byte replays the whole body at and around Pingora's 64 KiB retry buffer and at 4 MiB,
//! Content-Length and chunked, `model` first and last; the first-byte timeout is not the idle
//! timeout; the total deadline cuts a stalled stream at the deadline.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;

/// A chat body of exactly `size` bytes with `model` first or last.
fn body_of(size: usize, model_first: bool) -> Vec<u8> {
    let head_first = r#"{"model":"m","messages":[{"role":"user","content":""#;
    let tail_first = r#""}],"max_tokens":4}"#;
    let head_last = r#"{"messages":[{"role":"user","content":""#;
    let tail_last = r#""}],"max_tokens":4,"model":"m"}"#;
    let (head, tail) = if model_first {
        (head_first, tail_first)
    } else {
        (head_last, tail_last)
    };
    let fill = size - head.len() - tail.len();
    let filler: String = (0..fill).map(|i| (b'a' + (i % 23) as u8) as char).collect();
    let body = format!("{head}{filler}{tail}").into_bytes();
    assert_eq!(body.len(), size);
    body
}

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
async fn a_retry_replays_the_whole_body_around_64_kib_and_at_4_mib() {
    let bad = mock_with("bad", "m", |c| c.fail = FailMode::Status(503)).await;
    let good = mock("good", "m").await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("bad", &bad), backend("good", &good)],
            "    load_balancer: {policy: round_robin}\n    retries: {max_attempts: 2, retry_on: [http_5xx]}\n",
        ),
        "",
    )
    .await;
    let c = client();
    let mut failures = Vec::new();
    for size in [65535, 65536, 65537, 4 * 1024 * 1024] {
        for model_first in [true, false] {
            for chunked in [false, true] {
                let body = body_of(size, model_first);
                let want = sha256_hex(&body);
                // Round robin over two backends: one of two requests starts on the failing one.
                let mut retried = 0;
                for _ in 0..2 {
                    let req = c
                        .post(gw.url("/v1/chat/completions"))
                        .header("content-type", "application/json");
                    let req = if chunked {
                        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                            body.chunks(7 * 1024).map(|c| Ok(c.to_vec())).collect();
                        req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                            pieces,
                        )))
                    } else {
                        req.body(body.clone())
                    };
                    let what = format!("size {size} model_first {model_first} chunked {chunked}");
                    let r = match req.send().await {
                        Ok(r) => r,
                        Err(e) => {
                            failures.push(format!("{what}: {e}"));
                            continue;
                        }
                    };
                    let status = r.status().as_u16();
                    let sha = r
                        .headers()
                        .get("x-mock-body-sha256")
                        .map(|v| v.to_str().unwrap().to_string());
                    let attempts = r
                        .headers()
                        .get("x-modelgate-attempts")
                        .map(|v| v.to_str().unwrap().to_string());
                    let _ = r.bytes().await;
                    if status != 200 || sha.as_deref() != Some(want.as_str()) {
                        failures.push(format!(
                            "{what}: status {status}, body sha ok: {}",
                            sha.as_deref() == Some(want.as_str())
                        ));
                        continue;
                    }
                    if attempts.as_deref() == Some("2") {
                        retried += 1;
                    }
                }
                if retried != 1 {
                    failures.push(format!(
                        "size {size} model_first {model_first} chunked {chunked}: {retried} of 2 retried"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_token_slower_than_the_idle_timeout_is_not_a_timeout() {
    let a = mock_with("a0", "m", |c| c.ttft = Duration::from_millis(1500)).await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("a0", &a)],
            "    timeouts: {first_byte_timeout_ms: 10000, idle_timeout_ms: 500}\n    retries: {max_attempts: 1}\n",
        ),
        "",
    )
    .await;
    // Non-stream: the response header itself waits for the whole generation.
    let r = gw.chat("m", false).await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gap_is_cut_at_the_idle_timeout_not_the_first_byte_timeout() {
    let a = mock_with("a0", "m", |c| {
        c.fail = FailMode::HangMidStream { after_chunks: 2 }
    })
    .await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("a0", &a)],
            "    timeouts: {first_byte_timeout_ms: 20000, idle_timeout_ms: 300}\n",
        ),
        "",
    )
    .await;
    let started = Instant::now();
    let r = gw.chat("m", true).await;
    assert_eq!(r.status(), 200);
    let (text, failed) = read_all_text(r).await;
    assert!(failed && !text.contains("[DONE]"), "{text}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "cut after {took:?}: the first-byte timeout fired, not the idle one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_deadline_cuts_a_stalled_stream_at_the_deadline() {
    let a = mock_with("a0", "m", |c| {
        c.itl = Duration::from_millis(1000);
        c.fail = FailMode::HangMidStream { after_chunks: 3 }
    })
    .await;
    let gw = Gateway::start_ready(
        &model_block(
            "m",
            &[backend("a0", &a)],
            "    timeouts: {request_timeout_ms: 1500}\n",
        ),
        "",
    )
    .await;
    let started = Instant::now();
    let r = gw.chat("m", true).await;
    assert_eq!(r.status(), 200);
    let (text, failed) = read_all_text(r).await;
    let took = started.elapsed();
    eprintln!("deadline cut after {took:?}: {text:?}");
    assert!(failed && !text.contains("[DONE]"), "{text}");
    // Own pipeline: cut at 1.5 s. A per-read timeout armed at the pick (1.5 s) would cut only
    // 1.5 s after the last chunk (~2.5 s).
    assert!(
        took < Duration::from_millis(2200),
        "cut after {took:?}, deadline 1.5 s"
    );
}
