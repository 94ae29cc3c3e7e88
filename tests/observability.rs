//! Observability over real sockets: `/metrics` scraped and parsed after known traffic, the
//! access log read line by line, `/status` by model, W3C `traceparent` propagation, and span
//! export to an in-test OTLP/HTTP receiver.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = "/v1/chat/completions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_move_with_the_requests_sent() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    for _ in 0..3 {
        assert_eq!(gw.chat("m", false).await.status(), 200);
    }
    // Unknown models: one bounded series, whatever the names.
    for name in ["x1", "x2", "../../etc/passwd"] {
        assert_eq!(gw.chat(name, false).await.status(), 404);
    }
    // No model at all.
    let r = client()
        .post(gw.url(CHAT))
        .body("{\"messages\":[]}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        client()
            .get(gw.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Metrics are recorded when a request ends, just after its last byte went out.
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "all 8 requests recorded",
        || async move { sum(&gw_ref.metrics().await, "modelgate_requests_total", &[]) == 8.0 },
    )
    .await;
    let m = gw.metrics().await;
    let ok = [
        ("model", "m"),
        ("backend", "a0"),
        ("endpoint", CHAT),
        ("status", "2xx"),
    ];
    assert_eq!(sum(&m, "modelgate_requests_total", &ok), 3.0);
    let mb = [("model", "m"), ("backend", "a0")];
    assert_eq!(
        sum(&m, "modelgate_request_duration_seconds_count", &mb),
        3.0
    );
    assert_eq!(
        sum(&m, "modelgate_time_to_first_byte_seconds_count", &mb),
        3.0
    );
    assert_eq!(sum(&m, "modelgate_upstream_attempts_total", &mb), 3.0);
    let unknown = [
        ("model", "__unknown__"),
        ("backend", "none"),
        ("status", "4xx"),
    ];
    assert_eq!(sum(&m, "modelgate_requests_total", &unknown), 3.0);
    let models: std::collections::HashSet<&str> = m
        .iter()
        .filter(|s| s.name == "modelgate_requests_total")
        .map(|s| s.labels["model"].as_str())
        .collect();
    assert!(
        models
            .iter()
            .all(|n| ["m", "__unknown__", "__none__"].contains(n)),
        "{models:?}"
    );
    assert_eq!(
        sum(
            &m,
            "modelgate_gateway_errors_total",
            &[
                ("model", "__unknown__"),
                ("status", "404"),
                ("cause", "model_not_found")
            ]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &m,
            "modelgate_gateway_errors_total",
            &[("model", "__none__"), ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "modelgate_requests_total",
            &[
                ("model", "__none__"),
                ("endpoint", "/v1/models"),
                ("status", "2xx")
            ]
        ),
        1.0
    );
    assert_eq!(sum(&m, "modelgate_config_generation", &[]), 1.0);
    assert_eq!(sum(&m, "modelgate_backend_healthy", &mb), 1.0);
    assert_eq!(sum(&m, "modelgate_in_flight_requests", &mb), 0.0);
    assert!(
        sum(
            &m,
            "modelgate_health_checks_total",
            &[("model", "m"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(m
        .iter()
        .any(|s| s.name == "modelgate_build_info" && s.value == 1.0));
    // Buckets are cumulative and end in +Inf = count.
    let inf = m
        .iter()
        .find(|s| s.name == "modelgate_request_duration_seconds_bucket" && s.labels["le"] == "+Inf")
        .unwrap();
    assert_eq!(inf.value, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_record_ttft_gaps_and_token_usage() {
    let a = mock_with("a0", "m", |c| {
        c.ttft = Duration::from_millis(150);
        c.itl = Duration::from_millis(10);
        c.tokens = 5;
    })
    .await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    for _ in 0..2 {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#;
        let r = client().post(gw.url(CHAT)).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(read_body(r).await.unwrap().ends_with("data: [DONE]\n\n"));
    }
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "both streams recorded",
        || async move {
            sum(
                &gw_ref.metrics().await,
                "modelgate_time_to_first_byte_seconds_count",
                &[],
            ) == 2.0
        },
    )
    .await;
    let m = gw.metrics().await;
    let mb = [("model", "m"), ("backend", "a0")];
    assert_eq!(
        sum(&m, "modelgate_time_to_first_byte_seconds_count", &mb),
        2.0
    );
    let ttft = sum(&m, "modelgate_time_to_first_byte_seconds_sum", &mb);
    assert!(ttft >= 0.3, "TTFT sum {ttft} < 2 × 150 ms");
    // Nothing under 100 ms: the first byte waits for the first token.
    assert_eq!(
        sum(
            &m,
            "modelgate_time_to_first_byte_seconds_bucket",
            &[("model", "m"), ("le", "0.1")]
        ),
        0.0
    );
    assert!(sum(&m, "modelgate_stream_chunk_gap_seconds_count", &mb) >= 8.0);
    assert_eq!(
        sum(&m, "modelgate_completion_tokens_total", &[("model", "m")]),
        10.0
    );
    assert!(sum(&m, "modelgate_prompt_tokens_total", &[("model", "m")]) > 0.0);
    // And the access log carries them.
    let log = gw.access_log();
    let line = log
        .iter()
        .find(|l| l["stream"] == true)
        .expect("stream line");
    assert_eq!(line["completion_tokens"], 5);
    assert!(line["ttfb_ms"].as_f64().unwrap() >= 150.0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gauge_flips_when_a_backend_dies() {
    let a = mock("a0", "m").await;
    let b = mock("b0", "m").await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a), backend("b0", &b)], ""),
        "",
    )
    .await;
    let b0 = [("model", "m"), ("backend", "b0")];
    eventually(Duration::from_secs(5), "b0 healthy gauge 1", || async {
        gw.metric("modelgate_backend_healthy", &b0).await == 1.0
    })
    .await;
    b.stop().await;
    eventually(Duration::from_secs(5), "b0 healthy gauge 0", || async {
        gw.metric("modelgate_backend_healthy", &b0).await == 0.0
    })
    .await;
    assert!(
        gw.metric(
            "modelgate_health_checks_total",
            &[("backend", "b0"), ("result", "fail")]
        )
        .await
            >= 1.0
    );
    assert_eq!(
        gw.metric("modelgate_backend_healthy", &[("backend", "a0")])
            .await,
        1.0
    );
    // /status says why.
    let s = gw.status().await;
    let b0s = s["models"]["m"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "b0")
        .unwrap()
        .clone();
    assert_eq!(b0s["healthy"], false);
    assert_eq!(b0s["last_probe"]["ok"], false, "{b0s}");
    assert!(
        b0s["last_probe"]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{b0s}"
    );
    assert!(b0s["last_probe"]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s["models"]["m"]["policy"], "round_robin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_for_routed_not_found_and_cut_requests() {
    let a = mock("a0", "m").await;
    let cut = mock_with("c0", "cut", |c| {
        c.fail = FailMode::CloseMidStream { after_chunks: 2 }
    })
    .await;
    let gw = Gateway::start_ready(
        &format!(
            "{}{}",
            model_block("m", &[backend("a0", &a)], ""),
            model_block("cut", &[backend("c0", &cut)], "")
        ),
        "",
    )
    .await;
    let r = client()
        .post(gw.url(CHAT))
        .header("x-request-id", "routed-1")
        .body(chat_body("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let r = client()
        .post(gw.url(CHAT))
        .header("x-request-id", "missing-1")
        .body(chat_body("nope", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .post(gw.url(CHAT))
        .header("x-request-id", "cut-1")
        .body(chat_body("cut", true))
        .send()
        .await
        .unwrap();
    assert!(
        read_body(r).await.is_err(),
        "cut stream must end in an error"
    );

    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "three access lines",
        || async move { gw_ref.access_log().len() >= 3 },
    )
    .await;
    let log = gw.access_log();
    let by_id = |id: &str| log.iter().find(|l| l["request_id"] == id).unwrap().clone();
    let routed = by_id("routed-1");
    for key in [
        "ts",
        "request_id",
        "client",
        "method",
        "route",
        "model",
        "backend",
        "policy",
        "attempts",
        "status",
        "bytes_in",
        "bytes_out",
        "ttfb_ms",
        "duration_ms",
        "stream",
        "cut",
        "prompt_tokens",
        "completion_tokens",
    ] {
        assert!(routed.get(key).is_some(), "missing {key}: {routed}");
    }
    assert_eq!(routed["method"], "POST");
    assert_eq!(routed["route"], CHAT);
    assert_eq!(routed["model"], "m");
    assert_eq!(routed["backend"], "a0");
    assert_eq!(routed["policy"], "round_robin");
    assert_eq!(routed["attempts"], 1);
    assert_eq!(routed["status"], 200);
    assert_eq!(routed["stream"], false);
    assert!(routed["cut"].is_null());
    assert!(routed["bytes_in"].as_u64().unwrap() > 0 && routed["bytes_out"].as_u64().unwrap() > 0);
    assert!(routed["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(routed["prompt_tokens"].as_u64().unwrap() > 0, "{routed}");
    assert!(routed["ts"].as_str().unwrap().ends_with('Z'));

    let missing = by_id("missing-1");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["model"], "nope");
    assert!(missing["backend"].is_null());
    assert_eq!(missing["error"], "model_not_found");

    let cut_line = by_id("cut-1");
    assert_eq!(cut_line["status"], 200);
    assert_eq!(cut_line["cut"], "backend_error");
    assert_eq!(cut_line["stream"], true);
    assert_eq!(cut_line["backend"], "c0");
    let m = gw.metrics().await;
    assert_eq!(
        sum(
            &m,
            "modelgate_streams_cut_total",
            &[
                ("model", "cut"),
                ("backend", "c0"),
                ("cause", "backend_error")
            ]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_can_be_turned_off_and_text_format_works() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a)], ""),
        "log:\n  format: text\n  access_log: false\n",
    )
    .await;
    assert_eq!(gw.chat("m", false).await.status(), 200);
    let gw_ref = &gw;
    eventually(Duration::from_secs(5), "text event log", || async move {
        gw_ref.log().contains(" INFO ") && gw_ref.log().contains("backend healthy")
    })
    .await;
    // Turn it on by reload: the next request is logged, as text.
    gw.write_config(
        &model_block("m", &[backend("a0", &a)], ""),
        "log:\n  format: text\n",
    );
    gw.wait_generation(2).await;
    let r = client()
        .post(gw.url(CHAT))
        .header("x-request-id", "text-1")
        .body(chat_body("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(5), "text access line", || async move {
        gw_ref.log().lines().any(|l| {
            l.starts_with("access ") && l.contains("request_id=text-1") && l.contains("status=200")
        })
    })
    .await;
    assert_eq!(
        gw.log()
            .lines()
            .filter(|l| l.starts_with("access "))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_is_propagated_with_a_new_span_id() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client()
        .post(gw.url(CHAT))
        .header("traceparent", incoming)
        .header("tracestate", "vendor=abc")
        .body(chat_body("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = a
        .stats()
        .last_header("traceparent")
        .expect("traceparent upstream");
    let parts: Vec<&str> = up.split('-').collect();
    assert_eq!(parts.len(), 4, "{up}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's own span");
    assert_eq!(parts[2].len(), 16);
    assert_eq!(parts[3], "01");
    assert_eq!(
        a.stats().last_header("tracestate").as_deref(),
        Some("vendor=abc")
    );

    // No (or a broken) traceparent: a fresh valid one goes upstream.
    for bad in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("garbage"),
    ] {
        let mut req = client().post(gw.url(CHAT)).body(chat_body("m", false));
        if let Some(b) = bad {
            req = req.header("traceparent", b).header("tracestate", "x=1");
        }
        assert_eq!(req.send().await.unwrap().status(), 200);
        let up = a.stats().last_header("traceparent").unwrap();
        let p: Vec<&str> = up.split('-').collect();
        assert_eq!((p.len(), p[1].len(), p[2].len()), (4, 32, 16), "{up}");
        assert_ne!(p[1], "00000000000000000000000000000000");
        assert_ne!(p[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            a.stats().last_header("tracestate").is_none(),
            "tracestate without a valid parent"
        );
    }
    let log = gw.access_log();
    assert!(log
        .iter()
        .any(|l| l["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"));
}

/// A tiny OTLP/HTTP receiver: answers 200 to every POST and hands over the bodies.
async fn otlp_receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    // One request at a time: header, then Content-Length bytes.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        let body =
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                        buf.drain(..end + 4 + len);
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let _ = tx.send((path, body));
                        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}").await;
                    }
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_an_otlp_collector() {
    let (port, mut bodies) = otlp_receiver().await;
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a)], ""),
        &format!(
            "tracing:\n  otlp_endpoint: \"http://127.0.0.1:{port}\"\n  service_name: \"gw-test\"\n"
        ),
    )
    .await;
    let r = client()
        .post(gw.url(CHAT))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(chat_body("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let upstream_span = a
        .stats()
        .last_header("traceparent")
        .unwrap()
        .split('-')
        .nth(2)
        .unwrap()
        .to_string();
    let (path, body) = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
        .await
        .expect("a span batch within 10 s")
        .unwrap();
    assert_eq!(path, "/v1/traces");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rs = &v["resourceSpans"][0];
    assert!(
        rs["resource"]["attributes"].to_string().contains("gw-test"),
        "{rs}"
    );
    let span = &rs["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(span["parentSpanId"], "b7ad6b7169203331");
    assert_eq!(
        span["spanId"],
        upstream_span.as_str(),
        "the span the backend saw as parent"
    );
    assert_eq!(span["name"], "POST /v1/chat/completions");
    let attrs = span["attributes"].to_string();
    assert!(
        attrs.contains("modelgate.backend") && attrs.contains("a0"),
        "{attrs}"
    );
}
